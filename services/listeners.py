"""What a service listens on (and what the rest of the lab may know of it: its SRV name,
its role, how clients reach it), the one port offset rule shared by serve and check, and
what a running serve records about listeners that failed (for check and the portal)."""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import json
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

# GreenMail's convention: unprivileged, every standard port + 3000 (SMTP 3025, IMAP 3143...).
UNPRIVILEGED_OFFSET = 3000

# What a listener is for, when other parts of the lab must find it without naming its
# protocol: DHCP hands out the nameserver's address, DNS points MX at the mail relay,
# the autoconfig offers mail-access (incoming) and mail-submission (outgoing) servers.
ROLES = ("nameserver", "mail-relay", "mail-submission", "mail-access")


@dataclass(frozen=True)
class Listener:
    service: str  # the protocol package, e.g. "smtp"
    name: str  # what the table shows, e.g. "submission"
    port: int
    transport: str = "tcp"  # or "udp"
    tls: str = ""  # "", "starttls" or "implicit"
    note: str = ""
    active: bool = True  # False: configured but not opened (the note says why)
    # When the wildcard address is taken on this port (systemd-resolved on 127.0.0.53:53),
    # bind each local address that is free instead.
    around: bool = False
    address: str = ""  # its own address, when not the lab's bind address (DNS's fake root)
    srv: str = ""  # its SRV owner label in the lab zone, e.g. "_imaps._tcp" (RFC 6186)
    role: str = ""  # one of ROLES, or "" (nobody else needs to find it)
    # Lower first where clients choose among listeners of one role: the SRV priority
    # (RFC 6186 3.4: IMAP before POP3) and the autoconfig's order.
    preference: int = 0

    def shifted(self, offset: int) -> Listener:
        return replace(self, port=self.port + offset)


@dataclass(frozen=True)
class Reach:
    """How a client reaches one listener, for the command lines a protocol package
    suggests (its optional `clients(reach) -> list[str]`, shown on the portal)."""

    listener: Listener  # the port offset applied
    host: str  # the service's fully qualified name, or "localhost" when it has none
    address: str  # its address in the lab zone
    user: str  # a lab user of the default lab (whose password is the name)
    domain: str  # the lab's domain


def curl(reach: Reach, scheme: str, login: bool = True) -> str:
    """curl's command line for a listener of a URL scheme whose implicit-TLS twin is
    SCHEME + "s" (http, ftp, pop3, imap), trusting the lab CA (the portal offers ca.crt)."""
    listener = reach.listener
    options = " --cacert ca.crt" if listener.tls else ""
    options += " --ssl-reqd" if listener.tls == "starttls" else ""
    options += f" -u {reach.user}:{reach.user}" if login else ""
    secure = "s" if listener.tls == "implicit" else ""
    return f"curl -v{options} {scheme}{secure}://{reach.host}:{listener.port}/"


def default_clients(reach: Reach) -> list[str]:
    """What any TCP listener can be tried with, for packages that suggest nothing."""
    if reach.listener.tls == "implicit":
        return [f"openssl s_client -connect {reach.host}:{reach.listener.port} -CAfile ca.crt"]
    return [f"nc {reach.host} {reach.listener.port}"]


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


def port_offset(requested: int | None, configured: int = -1,
                running: int | None = None) -> tuple[int, str]:
    """The one port offset rule, and the reason the table gives: the command line's (or
    environment's) offset, else [lab] port_offset (-1: unset), else the offset of the lab
    that runs (for commands that talk to it), else 0 or 3000 by what this process may bind."""
    if requested is not None and requested >= 0:
        return requested, "as asked"
    if configured >= 0:
        return configured, "[lab] port_offset"
    if running is not None:
        return running, "the running lab's"
    if can_bind_low_ports():
        return 0, "this process may bind ports below 1024"
    return UNPRIVILEGED_OFFSET, "this process may not bind ports below 1024"


WILDCARDS = ("0.0.0.0", "::")
HIGHEST_PORT = 65535


def client_address(host: str) -> str:
    """The one text form of a client's address in the lab (journal, faults, captures,
    per-address limits): an IPv4 client of a dual-stack socket arrives as a v4-mapped
    address (::ffff:192.0.2.7) and is written as the IPv4 address it is."""
    if not host.startswith("::ffff:"):  # the form getnameinfo() gives (lower case)
        return host
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return str(mapped) if mapped is not None else host


def family(address: str) -> int:
    """4 or 6: the IP version of a listening address (IPv6 when it has a colon)."""
    return 6 if ":" in address else 4


def endpoint(address: str, port: int) -> str:
    """ADDRESS:PORT as URLs and tables write it: an IPv6 address in brackets (RFC 3986)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Stack:
    """What this host's IP stack allows: IPv6 sockets at all (`ipv6`, else `why`), and one
    IPv6 socket that also takes IPv4 clients (IPV6_V6ONLY off: `dual`)."""

    ipv6: bool
    dual: bool
    why: str = ""  # why IPv6 is unavailable


@functools.cache
def stack() -> Stack:
    """Probed once per process: an IPv6 socket bound to the wildcard with IPV6_V6ONLY
    off (a kernel booted with ipv6.disable=1 has no AF_INET6 at all)."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as error:
        return Stack(False, False, error.strerror or str(error))
    with probe:
        try:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            dual = True
        except OSError:
            dual = False
        try:
            probe.bind(("::", 0))
        except OSError as error:
            return Stack(False, False, error.strerror or str(error))
    return Stack(True, dual)


def effective_bind(bind: str) -> tuple[str, str]:
    """The address the lab listens on for `bind`, and a line when that is not it: the
    dual-stack wildcard :: on a host without IPv6 is 0.0.0.0 (IPv4 only)."""
    if bind == "::" and not stack().ipv6:
        return "0.0.0.0", f"IPv6 is unavailable here ({stack().why}): listening on IPv4 only"
    return bind, ""


def addresses(bind: str, one_socket: bool = True) -> list[str]:
    """The sockets one listener opens for the lab's bind address. The wildcard :: is
    both families: one socket with IPV6_V6ONLY off where the stack allows it and the
    listener can (`one_socket`: TCP under Twisted, whose ports turn mapped addresses into
    IPv4), else an IPv6-only socket and an IPv4 one (UDP, whose replies must leave by the
    family they came in; pyftpdlib, which compares its clients' addresses as text)."""
    if bind != "::":
        return [bind]
    if one_socket and stack().dual:
        return ["::"]
    return ["::", "0.0.0.0"]


def families(bound: list[str]) -> str:
    """What the table says of a listener bound to these addresses: v4, v6 or v4+v6."""
    found: set[int] = set()
    for address in bound:
        if address == "::" and (len(bound) == 1 and stack().dual):
            found.update((4, 6))
        else:
            found.add(family(address))
    return "+".join(f"v{n}" for n in sorted(found))


def local_addresses(version: int = 4) -> list[str]:
    """This host's addresses of one IP version (loopback and every interface's): what a
    wildcard bind would have covered, one by one. IPv4 from the kernel's local routing
    table; IPv6 from /proc/net/if_inet6, without link-local addresses (which need a
    scope to bind, and no lab client reaches a service by one)."""
    if version == 6:
        return _local_addresses6()
    found: list[str] = []
    try:
        with open("/proc/net/fib_trie") as trie:
            last = ""
            for line in trie:
                text = line.strip()
                if text.startswith("|-- "):
                    last = text[4:]
                elif text == "/32 host LOCAL" and last not in found:
                    found.append(last)
    except OSError:
        return ["127.0.0.1"]
    return sorted(found, key=lambda a: tuple(int(x) for x in a.split("."))) or ["127.0.0.1"]


def _local_addresses6() -> list[str]:
    found: list[ipaddress.IPv6Address] = []
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                digits = line.split()[0]
                address = ipaddress.IPv6Address(int(digits, 16))
                if not address.is_link_local and address not in found:
                    found.append(address)
    except (OSError, ValueError, IndexError):
        return []
    return [str(a) for a in sorted(found)]


def ephemeral_range() -> tuple[int, int] | None:
    """The kernel's range for clients' source ports (a listener there can find its port
    held by a client socket at restart)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as text:
            low, high = (int(x) for x in text.read().split())
    except (OSError, ValueError):
        return None
    return low, high


# --- what serve records about failed listeners --------------------------------------

def _failed_path(data: Path, service: str) -> Path:
    return data / "run" / f"{service}.failed"


def record_failures(data: Path, service: str, failed: dict[str, str]) -> None:
    """Written by serve after start (and removed at stop): why some listeners of a service
    (listener name -> one line; "*" for the whole service) do not listen. Written by the
    process holding the service's run lock."""
    path = _failed_path(data, service)
    if failed:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(failed))
    else:
        path.unlink(missing_ok=True)


def is_served(data: Path, service: str) -> bool:
    """Whether a `protolab serve` holds the service's lock (any process, this one too:
    flock locks belong to open files, so a second open here conflicts with our own)."""
    try:
        fd = os.open(data / "run" / f"{service}.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def failures(data: Path, service: str) -> dict[str, str]:
    """What the serve that runs `service` from `data` could not start, as recorded
    (nothing when no serve runs it: a file left by a killed one says nothing about now)."""
    try:
        failed = json.loads(_failed_path(data, service).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(failed, dict) or not is_served(data, service):
        return {}
    return {str(k): str(v) for k, v in failed.items()}
