"""An interface's IPv4 address and netmask (Linux ioctls: no extra package, no subprocess)."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B


def ipv4(interface: str) -> tuple[str, str]:
    """(address, netmask) of `interface`; OSError when it is missing or has no IPv4 address."""
    name = struct.pack("256s", interface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        address = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, name)[20:24]
        netmask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, name)[20:24]
    return socket.inet_ntoa(address), socket.inet_ntoa(netmask)
