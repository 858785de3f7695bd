"""`protolab check` for DHCP: one DHCPINFORM to the server, unicast, from an ephemeral port."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from . import codec


def inform(target: Any) -> str:
    from .interface import ipv4

    settings = target.config.service("dhcp")
    host = target.host
    if ipaddress.ip_address(host).is_loopback:
        host = ipv4(settings.interface)[0]  # the server listens on its interface's address
    port = target.port("dhcp", "dhcp")
    xid = int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(target.timeout)
        sock.connect((host, port))
        ciaddr = sock.getsockname()[0]
        request = codec.Packet(op=1, xid=xid, ciaddr=ciaddr, chaddr=os.urandom(6))
        request.options = {codec.MESSAGE_TYPE: bytes([codec.INFORM]),
                           codec.PARAMETER_LIST: bytes([1, 3, 6, 15])}
        sock.send(codec.pack(request))
        while True:
            reply = codec.parse(sock.recv(2048))
            if reply.xid == xid and reply.type == codec.ACK:
                dns = reply.options.get(codec.DNS_SERVERS, b"")
                servers = [str(ipaddress.IPv4Address(dns[i:i + 4])) for i in range(0, len(dns), 4)]
                return (f"DHCPACK to INFORM from server {reply.address(codec.SERVER_ID)}, "
                        f"DNS {' '.join(servers) or '-'}")
