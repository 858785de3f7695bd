"""The one place a protocol is registered.

A protocol is a package services/NAME whose __init__ defines (and imports nothing heavy at
module level, so that start-up stays fast):

    Settings                      dataclass of its [NAME] section (a config.ServiceSettings)
    listeners(config) -> list[Listener]   the sockets it opens, ports before the offset
    service(lab) -> IService      listening once startService() returns
    probe(target) -> str          speaks the protocol once for `protolab check`

Adding NAME below, in the order the tables list services, is all the rest of the tree needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PROTOCOLS: tuple[str, ...] = (
    "http",
    "smtp",
    "pop3",
    "imap",
    "dns",
    "dhcp",
    "ftp",
    "smb",
)


def names() -> tuple[str, ...]:
    return PROTOCOLS


def module(name: str) -> ModuleType:
    if name not in PROTOCOLS:
        raise KeyError(name)
    return importlib.import_module(f"{__package__}.{name}")
