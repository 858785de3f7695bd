"""The classroom: a roster in, a class out (`protolab class import|export|sheet`).

Not a protocol: the students it makes are lab users like any other, through the store,
so every service sees them at once. roster.py parses and diffs (no I/O), sheet.py renders
the credentials slips, commands.py is the CLI and applies a plan to the store.
"""
