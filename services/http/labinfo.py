"""What the portal, the autoconfig and the API say about the lab: read from the running
config and the registry, so a service added to the tree appears here by itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import registry
from ..listeners import Listener, Reach, default_clients, failures, is_served

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..lab import Lab


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    summary: str
    enabled: bool
    running: bool  # some process serves it from this data directory now, on some port
    host: str  # fully qualified, "" when the service has no host name
    aliases: list[str]
    address: str
    address6: str  # its IPv6 address in the lab zone (AAAA), "" when it has none
    listeners: list[Listener]  # with the port offset applied
    # what the serving process could not start: listener name ("*": all) -> one line
    failed: dict[str, str] = field(default_factory=dict)

    def listener(self, name: str) -> Listener | None:
        return next((item for item in self.listeners if item.name == name), None)

    def failure(self, listener: Listener) -> str:
        return self.failed.get("*") or self.failed.get(listener.name, "")

    def clients(self, listener: Listener, user: str, domain: str) -> list[str]:
        """Command lines that reach `listener`, as its package suggests them."""
        reach = Reach(listener, self.host or "localhost", self.address, user, domain)
        suggest = getattr(registry.module(self.name), "clients", default_clients)
        return list(suggest(reach))


def services(lab: Lab) -> list[ServiceInfo]:
    config = lab.config
    hosts, hosts6 = config.host_names(), config.host_names6()
    out = []
    for name in registry.names():
        settings = config.service(name)
        module = registry.module(name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        host = settings.host
        listeners = lab.listeners(name)
        failed = failures(lab.data, name)
        # A served service runs only where it listens: DHCP without an interface, or a
        # service whose every port was taken, holds its lock and serves nothing.
        running = is_served(lab.data, name) and "*" not in failed and any(
            item.active and item.name not in failed for item in listeners)
        out.append(ServiceInfo(
            name=name, summary=summary, enabled=settings.enabled,
            running=running, failed=failed,
            host=config.fqdn(host) if host else "",
            aliases=[config.fqdn(a) for a in settings.aliases],
            address=hosts.get(host, config.lab.address),
            address6=_address6(config, hosts6, host),
            listeners=listeners,
        ))
    return out


def _address6(config: LabConfig, hosts6: dict[str, str], host: str) -> str:
    """A host's AAAA ("" when none, or when its only address is IPv6: `address` has it)."""
    address6 = hosts6.get(host, "" if host in config.hosts else config.address6())
    return "" if address6 == config.hosts.get(host) else address6


def service(lab: Lab, name: str) -> ServiceInfo | None:
    return next((s for s in services(lab) if s.name == name), None)
