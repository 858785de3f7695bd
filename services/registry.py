"""The one place a protocol is registered, and the one lookup of its listeners.

A protocol is a package services/NAME whose __init__ defines (and imports nothing heavy at
module level, so that start-up stays fast):

    Settings                      dataclass of its [NAME] section (a config.ServiceSettings)
    listeners(config) -> list[Listener]   the sockets it opens, ports before the offset,
                                  each with its SRV label and role if others must find it
    service(lab) -> IService      listening once startService() returns
    probe(target) -> str          speaks the protocol once for `protolab check`
    clients(reach) -> list[str]   optional: command lines that reach one listener (portal)
    add_commands(commands)        optional: `protolab NAME ...` (a cli.Commands)

Adding NAME below, in the order the tables list services, is all the rest of the tree needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import LabConfig
    from .listeners import Listener

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


def listeners(config: LabConfig, name: str, offset: int = 0) -> list[Listener]:
    """A protocol's listeners as `config` makes them, `offset` added to every port."""
    return [listener.shifted(offset) for listener in module(name).listeners(config)]


def listener(config: LabConfig, name: str, listener_name: str, offset: int = 0) -> Listener:
    for item in listeners(config, name, offset):
        if item.name == listener_name:
            return item
    raise KeyError(f"{name} has no listener {listener_name!r}")


def every_listener(config: LabConfig, offset: int = 0) -> list[Listener]:
    """Every registered protocol's listeners, in table order (SRV records, roles)."""
    return [item for name in PROTOCOLS if name in config.services
            for item in listeners(config, name, offset)]
