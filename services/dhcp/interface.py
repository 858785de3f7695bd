"""An interface's addresses: IPv4 and netmask (Linux ioctls), IPv6 and MAC (/proc, /sys): no
extra package, no subprocess."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B


def ipv4(interface: str) -> tuple[str, str]:
    """(address, netmask) of `interface`; OSError when it is missing or has no IPv4 address."""
    name = struct.pack("256s", interface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        address = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, name)[20:24]
        netmask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, name)[20:24]
    return socket.inet_ntoa(address), socket.inet_ntoa(netmask)


def ipv6(interface: str) -> list[tuple[str, int]]:
    """(address, prefix length) of each IPv6 address of `interface`, link-local ones too,
    from /proc/net/if_inet6 (empty when IPv6 is off or the interface has none)."""
    found = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == interface:
            found.append((str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))), int(fields[2], 16)))
    return found


def mac(interface: str) -> bytes:
    """The interface's link-layer address (empty for one without, such as lo)."""
    try:
        text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    except OSError:
        return b""
    return bytes.fromhex(text.replace(":", ""))
