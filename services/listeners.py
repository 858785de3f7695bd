"""What a service listens on, and the port offset rule shared by serve and check."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

# GreenMail's convention: unprivileged, every standard port + 3000 (SMTP 3025, IMAP 3143...).
UNPRIVILEGED_OFFSET = 3000


@dataclass(frozen=True)
class Listener:
    service: str  # the protocol package, e.g. "smtp"
    name: str  # what the table shows, e.g. "submission"
    port: int
    transport: str = "tcp"  # or "udp"
    tls: str = ""  # "", "starttls" or "implicit"
    note: str = ""
    active: bool = True  # False: configured but not opened (the note says why)

    def shifted(self, offset: int) -> Listener:
        return replace(self, port=self.port + offset)


def can_bind_low_ports() -> bool:
    """Whether this process may bind ports below 1024 (root, CAP_NET_BIND_SERVICE, or a
    kernel/container that lowered net.ipv4.ip_unprivileged_port_start)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 10):
                    return True
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as start:
            return int(start.read()) <= 20
    except (OSError, ValueError):
        return False
    return False


def auto_offset(requested: int | None) -> tuple[int, str]:
    """The port offset to use and the reason the table gives for it."""
    if requested is not None and requested >= 0:
        return requested, "as asked"
    if can_bind_low_ports():
        return 0, "this process may bind ports below 1024"
    return UNPRIVILEGED_OFFSET, "this process may not bind ports below 1024"
