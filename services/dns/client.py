"""A blocking DNS client for `protolab check` (one query over UDP, dnslib as the codec)."""

from __future__ import annotations

import random
import socket

from dnslib import QTYPE, DNSRecord


def query(host: str, port: int, name: str, qtype: str, timeout: float) -> DNSRecord:
    request = DNSRecord.question(name, qtype)
    request.header.id = random.randrange(65536)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))  # connected: replies from anyone else are not ours
        sock.send(request.pack())
        while True:
            reply = DNSRecord.parse(sock.recv(65535))
            if reply.header.id == request.header.id and reply.q.qtype == getattr(QTYPE, qtype):
                return reply
