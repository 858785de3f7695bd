"""Content codings (RFC 9110 8.4, 12.5.3): which compression a request accepts, and the
compressors. Sans-IO: header bytes in, a coding name out; bytes in, bytes out.

gzip is the standard library's; br is Google's brotli and zstd the zstandard binding
(both kept libraries, wheels on PyPI): Chromium and curl --compressed ask for all three.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import brotli
import zstandard

# Levels for pages compressed once and then served from memory: quick enough that a
# 256 KB file costs the reactor a few milliseconds the first time it is asked for.
COMPRESSORS: dict[bytes, Callable[[bytes], bytes]] = {
    b"br": lambda data: brotli.compress(data, quality=5),
    b"zstd": lambda data: zstandard.ZstdCompressor(level=3).compress(data),
    b"gzip": lambda data: gzip.compress(data, compresslevel=6, mtime=0),  # mtime=0: same bytes every time
}
PREFERENCE = (b"br", b"zstd", b"gzip")  # smallest first, when the client likes them alike
ALIASES = {b"x-gzip": b"gzip"}  # RFC 9110 8.4.1.3
COMPRESSIBLE = (b"text/", b"application/json", b"application/javascript", b"application/xml",
                b"image/svg+xml")


def compressible(ctype: bytes) -> bool:
    """Text-like media types; images, archives and the like are compressed already."""
    return ctype.startswith(COMPRESSIBLE)


def _weights(header: bytes) -> dict[bytes, float]:
    weights: dict[bytes, float] = {}
    for item in header.split(b","):
        name, *params = (part.strip(b" \t") for part in item.split(b";"))
        if not name:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition(b"=")
            if key.strip().lower() == b"q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = -1.0  # a broken weight: the item is ignored
        if 0.0 <= weight <= 1.0:
            name = name.lower()
            weights[ALIASES.get(name, name)] = weight
    return weights


def choose(header: bytes | None) -> bytes | None:
    """The coding to send for Accept-Encoding `header`, or None (identity). No header
    means no preference: identity then, which every client reads."""
    if not header:
        return None
    weights = _weights(header)
    default = weights.get(b"*", 0.0)
    best, best_weight = None, 0.0
    for coding in PREFERENCE:
        weight = weights.get(coding, default)
        if weight > best_weight:
            best, best_weight = coding, weight
    # Identity, when the client names it, wins over codings it likes less.
    identity = weights.get(b"identity")
    if identity is not None and identity > best_weight:
        return None
    return best
