"""protolab: a multi-protocol lab server suite on one Twisted reactor over one shared store."""

__version__ = "0.1.0"
