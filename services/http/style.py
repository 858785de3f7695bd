"""The look every page of the site shares (portal, exercises, listings, errors, dashboard):
one small stylesheet inline, so a page is one response (a Wireshark exercise counts them)."""

from __future__ import annotations

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;"
    "color:#222}h1{margin-bottom:.2em}table{border-collapse:collapse;width:100%;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}"
    "th{background:#eef}code{background:#f4f4f4;padding:0 .2em}.off{color:#999}"
    ".up{color:#070;font-weight:bold}.down{color:#a00}pre{background:#f4f4f4;padding:.6em}"
)


def html_page(title: str, body: str, head: str = "") -> str:
    """A whole page: `title` (already HTML-escaped), `body`, and extra `head` elements."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}'
            f'</title>\n<meta name="viewport" content="width=device-width">'
            f"<style>{STYLE}</style>{head}</head>\n<body>\n{body}\n</body></html>\n")
