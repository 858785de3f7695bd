"""Lab = config + store + TLS + journal; builds the one MultiService that serves the lab.

Protocol packages get a Lab in service(lab) and use it for everything they share:

    lab.settings("smtp")            their [smtp] section (their own Settings class)
    lab.listeners("smtp")           their listeners with the port offset applied
    lab.tcp(listener, factory, busy=b"...")
                                    a service listening on it (implicit TLS if the
                                    listener says so), under the [lab] connection limits
                                    (a refused connection gets `busy`, then a close); a
                                    port it cannot have is one line (lab.fail)
    lab.udp(listener, make)         the same for UDP: make() is the protocol of one socket
                                    (the wildcard :: has one per family)
    lab.store / lab.journal / lab.tls / lab.config / lab.bind / lab.port(base)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry
from .config import LabConfig
from .credentials import Credentials
from .journal import Journal
from .listeners import Listener, effective_bind, port_offset
from .store import Store
from .tls import LabTLS

if TYPE_CHECKING:
    from twisted.application.service import IService, MultiService

    from .faults import Board


SYSTEM_DATA_DIR = Path("/var/lib/protolab")  # root's: a system service's place, not ~root


def default_data_dir() -> Path:
    if os.environ.get("PROTOLAB_DATA"):
        return Path(os.environ["PROTOLAB_DATA"])
    if os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "protolab"


class Lab:
    def __init__(self, config: LabConfig, data: Path, *, offset: int | None = None,
                 bind: str | None = None) -> None:
        from .labnet import adopt

        adopt(config)  # a `protolab net up` network: DHCP on its bridge, its address the lab's
        self.config = config
        self.data = data
        self.offset, self.offset_reason = port_offset(offset, config.lab.port_offset)
        # The dual-stack wildcard :: on a host without IPv6 is 0.0.0.0, said in bind_note
        self.bind, self.bind_note = effective_bind(bind or config.lab.bind)
        self.store = Store(data, keep_plaintext=config.auth.keep_plaintext)
        self.journal = Journal(data / "journal", self.store, config.journal.show_secrets,
                               config.journal.recent, config.journal.keep_days,
                               config.journal.max_mb * 1024 * 1024)
        self.strict = False  # serve --strict: one listener that cannot start stops the lab
        # What start-up made of each listener, for the table: (service, name) -> the
        # failure, or how it listens when that is not simply lab.bind.
        self.failed: dict[tuple[str, str], str] = {}
        self.failed_services: dict[str, str] = {}
        self.notes: dict[tuple[str, str], str] = {}
        self.sockets: dict[tuple[str, str], list[str]] = {}  # the addresses each listens on
        self._limits: dict[str, Any] = {}

    @cached_property
    def credentials(self) -> Credentials:
        """The one identity rule (services.credentials): every protocol's logins."""
        return Credentials(self.store.users, self.config.mail_domains(),
                           lambda: self.store.roster.domains(self.config.lab.domain))

    @cached_property
    def faults(self) -> Board:
        """The faults switched on (services.faults): `lab.faults.find(KIND, *targets)`."""
        from .faults import Board

        return Board(self.store)

    @cached_property
    def tls(self) -> LabTLS:
        # tls.* faults act in tls.py, and are journaled as the service whose port it is.
        services = {listener.port: name for name in registry.names()
                    for listener in self.listeners(name) if listener.tls}
        return LabTLS(self.data / "tls", self.certificate_names(), self.config.tls.keylog,
                      faults=self.faults, journal=self.journal, services=services)

    def certificate_names(self) -> list[str]:
        domain = self.config.lab.domain
        names = {domain, f"*.{domain}", "localhost", "127.0.0.1", "::1", self.config.lab.address}
        names.update(self.config.fqdn(host) for host in self.config.host_names())
        names.update(self.config.host_names().values())
        names.update(self.config.tls.extra_names)
        if self.bind not in ("0.0.0.0", "::"):
            names.add(self.bind)
        return sorted(names)

    def settings(self, name: str) -> Any:
        return self.config.service(name)

    def port(self, base: int) -> int:
        return base + self.offset

    def listeners(self, name: str) -> list[Listener]:
        return registry.listeners(self.config, name, self.offset)

    def listener(self, name: str, listener_name: str) -> Listener:
        return registry.listener(self.config, name, listener_name, self.offset)

    def tcp(self, listener: Listener, factory: Any, busy: bytes = b"") -> IService:
        """`busy` is what a connection refused by the lab's connection limits is sent
        before it is closed, in the protocol's own words (SMTP 421, IMAP * BYE, HTTP 503).
        The limits count per service, across its listeners; TLS wraps the limits, so a
        refused client of an implicit TLS port reads its busy line over TLS."""
        from .serving import LabContextFactory, LimitedFactory, Limits, ListenerService, listen_tcp

        settings = self.config.lab
        if settings.max_connections or settings.max_connections_per_peer:
            limits = self._limits.setdefault(listener.service, Limits(
                settings.max_connections, settings.max_connections_per_peer))
            factory = LimitedFactory(factory, limits, busy)
        context = LabContextFactory(self.tls) if listener.tls == "implicit" else None
        return ListenerService(self, listener, lambda address: listen_tcp(
            listener.port, factory, address, context))

    def udp(self, listener: Listener, make: Callable[[], Any],
            interface: str | None = None) -> IService:
        from twisted.internet import reactor

        from .serving import ListenerService, UDPPort

        def start(address: str) -> UDPPort:
            port = UDPPort(listener.port, make(), address, 8192, reactor)
            port.startListening()
            return port

        return ListenerService(self, listener, start, interface)

    # --- what start-up made of the listeners (ListenerService and LabService call these)

    def say(self, text: str) -> None:
        """One line about the lab's own machinery: on stderr now, and in the journal
        (which writes it once it can, if the journal itself is what fails)."""
        import sys

        print(f"protolab: {text}", file=sys.stderr, flush=True)
        self.journal.add("lab", "-", "-", "", "event", text)

    def fail(self, listener: Listener, line: str) -> None:
        """A listener that cannot listen: one line; the others go on."""
        self.failed[(listener.service, listener.name)] = line
        self.say(line)

    def fail_service(self, name: str, line: str) -> None:
        """A service that cannot start at all: one line; the others go on."""
        self.failed_services[name] = line
        self.say(line)

    def bound(self, listener: Listener, addresses: list[str]) -> None:
        """The addresses a listener's sockets listen on (for the table: v4, v6, v4+v6)."""
        self.sockets[(listener.service, listener.name)] = addresses

    def note(self, listener: Listener, text: str) -> None:
        """How a listener listens, when that is not simply on lab.bind (for the table)."""
        self.notes[(listener.service, listener.name)] = text

    def serving(self, names: list[str]) -> bool:
        """Whether any listener of these services listens (after start)."""
        return any(name not in self.failed_services and any(
            item.active and (name, item.name) not in self.failed for item in self.listeners(name))
            for name in names)

    def failures(self, name: str) -> dict[str, str]:
        """Why `name` ("*"), or some of its listeners (by name), does not listen."""
        if name in self.failed_services:
            return {"*": self.failed_services[name]}
        return {listener: line for (service, listener), line in self.failed.items()
                if service == name}

    def check_ports(self, names: list[str]) -> None:
        """Raise ValueError naming the first port the offset pushes past 65535."""
        from .listeners import HIGHEST_PORT

        for name in names:
            for listener in self.listeners(name):
                if listener.port > HIGHEST_PORT:
                    raise ValueError(
                        f"port offset {self.offset}: {name} {listener.name} would listen on "
                        f"port {listener.port}, above {HIGHEST_PORT}")

    def build(self, names: list[str]) -> MultiService:
        """One MultiService with a child per protocol in `names`, plus the lab's own chores."""
        from .serving import LabService

        root = LabService(self)
        for name in names:
            service = registry.module(name).service(self)
            service.setName(name)
            service.setServiceParent(root)
        return root

    def close(self) -> None:
        self.journal.flush_quietly()
        self.store.close()
