"""Hosts-file lines for every name of the lab, for machines whose resolver is not the lab DNS.

The README's examples use the lab's names (www.lab.test, mail.lab.test, ...). On the host
that runs the lab, or on a student's laptop, those resolve only when the lab DNS is the
resolver (or a split-DNS rule sends the lab's domain to it); the hosts file is the way that
works on every system, Windows included. One name per line, the form that every system's
resolver reads alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import LabConfig

HOSTS_FILES = {
    "Linux, macOS": "/etc/hosts",
    "Windows": r"C:\Windows\System32\drivers\etc\hosts (as administrator)",
}


def entries(config: LabConfig, dynamic: Iterable[tuple[str, str]] = (),
            address: str | None = None) -> list[tuple[str, str]]:
    """(address, fully qualified name) for every host of the zone, then the names given
    by DHCP leases and `protolab dns add` (`dynamic`: (name, address) of A/AAAA records).
    `address` replaces the lab's own address ([lab] address), as students' machines reach
    the lab at the teacher's LAN address; hosts with an address of their own keep it."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, int]] = set()  # (name, family): a name may have one of each
    for host, host_address in config.host_names().items():
        if address and host_address == config.lab.address and host not in config.hosts:
            host_address = address
        out.append((host_address, config.fqdn(host)))
        seen.add((config.fqdn(host), _family(host_address)))
    # The zone's AAAA addresses, where the lab is reached at its own addresses (another
    # machine given `address` reaches it there, not at the lab's ::1 or fd00:...)
    for host, host_address in ({} if address else config.host_names6()).items():
        out.append((host_address, config.fqdn(host)))
        seen.add((config.fqdn(host), 6))
    for name, record_address in dynamic:
        if (name, _family(record_address)) not in seen:
            out.append((record_address, name))
            seen.add((name, _family(record_address)))
    return out


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def render(config: LabConfig, items: list[tuple[str, str]]) -> str:
    """The lines to append to a hosts file, with a comment saying where and how to undo it."""
    width = max((len(a) for a, _ in items), default=0)
    where = "; ".join(f"{system}: {path}" for system, path in HOSTS_FILES.items())
    head = [f"# protolab: the names of the lab {config.lab.domain}",
            f"# add to the hosts file ({where});",
            "# remove these lines again when the lab is gone"]
    return "\n".join([*head, *(f"{a.ljust(width)}  {n}" for a, n in items),
                      f"# end of protolab {config.lab.domain}"]) + "\n"
