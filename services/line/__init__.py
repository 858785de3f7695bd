"""The floor of the line protocols (SMTP, POP3): what they share, apart from either.

- conversation.py: the sans-IO Conversation base (lines in; replies, STARTTLS and close
  requests out), which each protocol's core.py subclasses;
- adapter.py: its Twisted side (LineFactory, LineProtocol): bytes to lines, TLS, the idle
  timeout, backpressure through services/flow.py;
- sasl.py: SMTP AUTH and POP3 AUTH exchanges (PLAIN, LOGIN, CRAM-MD5), sans-IO.

Not a protocol: nothing here is registered, and nothing here knows SMTP or POP3.
"""
