"""Lab = config + store + TLS + journal; builds the one MultiService that serves the lab.

Protocol packages get a Lab in service(lab) and use it for everything they share:

    lab.settings("smtp")            their [smtp] section (their own Settings class)
    lab.listeners("smtp")           their listeners with the port offset applied
    lab.tcp(listener, factory)      a service listening on it (implicit TLS if the
                                    listener says so); errors become one-line StartErrors
    lab.udp(listener, protocol)     the same for UDP
    lab.store / lab.journal / lab.tls / lab.config / lab.bind / lab.port(base)
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry
from .config import LabConfig
from .journal import Journal
from .listeners import Listener, auto_offset
from .store import Store
from .tls import LabTLS

if TYPE_CHECKING:
    from twisted.application.service import IService, MultiService


def default_data_dir() -> Path:
    if os.environ.get("PROTOLAB_DATA"):
        return Path(os.environ["PROTOLAB_DATA"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "protolab"


class Lab:
    def __init__(self, config: LabConfig, data: Path, *, offset: int | None = None,
                 bind: str | None = None) -> None:
        from .labnet import adopt

        adopt(config)  # a `protolab net up` network: DHCP on its bridge, its address the lab's
        self.config = config
        self.data = data
        if offset is None and config.lab.port_offset >= 0:
            offset = config.lab.port_offset
        self.offset, self.offset_reason = auto_offset(offset)
        self.bind = bind or config.lab.bind
        self.store = Store(data, keep_plaintext=config.auth.keep_plaintext)
        self.journal = Journal(data / "journal", self.store, config.journal.show_secrets,
                               config.journal.recent)

    @cached_property
    def tls(self) -> LabTLS:
        return LabTLS(self.data / "tls", self.certificate_names(), self.config.tls.keylog)

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
        module = registry.module(name)
        return [listener.shifted(self.offset) for listener in module.listeners(self.config)]

    def listener(self, name: str, listener_name: str) -> Listener:
        return next(l for l in self.listeners(name) if l.name == listener_name)

    def tcp(self, listener: Listener, factory: Any, busy: bytes = b"") -> IService:
        """`busy` is what a connection refused by the lab's connection limits is sent
        before it is closed, in the protocol's own words (SMTP 421, IMAP * BYE, HTTP 503)."""
        from twisted.internet import reactor

        from .serving import ListenerService

        if listener.tls == "implicit":
            context = self.tls.twisted()
            return ListenerService(self, listener, lambda: reactor.listenSSL(
                listener.port, factory, context, interface=self.bind))
        return ListenerService(self, listener, lambda: reactor.listenTCP(
            listener.port, factory, interface=self.bind))

    def udp(self, listener: Listener, protocol: Any, interface: str | None = None) -> IService:
        from twisted.internet import reactor

        from .serving import ListenerService

        return ListenerService(self, listener, lambda: reactor.listenUDP(
            listener.port, protocol, interface=self.bind if interface is None else interface))

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
        self.journal.flush()
        self.store.close()
