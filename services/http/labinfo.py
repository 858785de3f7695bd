"""What the portal, the autoconfig and the API say about the lab: read from the running
config and the registry, so a service added to the tree appears here by itself."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import registry
from ..listeners import Listener

if TYPE_CHECKING:
    from ..lab import Lab


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    summary: str
    enabled: bool
    running: bool  # some process serves it from this data directory now
    host: str  # fully qualified, "" when the service has no host name
    aliases: list[str]
    address: str
    listeners: list[Listener]  # with the port offset applied
    base_ports: dict[str, int]  # listener name -> standard port (before the offset)

    def listener(self, name: str) -> Listener | None:
        return next((l for l in self.listeners if l.name == name), None)


def is_served(lab: Lab, name: str) -> bool:
    """Whether a `protolab serve` holds the service's lock (any process, this one too:
    flock locks belong to open files, so a second open here conflicts with our own)."""
    path = lab.data / "run" / f"{name}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def services(lab: Lab) -> list[ServiceInfo]:
    config = lab.config
    hosts = config.host_names()
    out = []
    for name in registry.names():
        settings = config.service(name)
        module = registry.module(name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        host = settings.host
        out.append(ServiceInfo(
            name=name, summary=summary, enabled=settings.enabled,
            running=is_served(lab, name),
            host=config.fqdn(host) if host else "",
            aliases=[config.fqdn(a) for a in settings.aliases],
            address=hosts.get(host, config.lab.address),
            listeners=lab.listeners(name),
            base_ports={l.name: l.port for l in module.listeners(config)},
        ))
    return out


def service(lab: Lab, name: str) -> ServiceInfo | None:
    return next((s for s in services(lab) if s.name == name), None)
