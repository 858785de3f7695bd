"""DNS: the lab's authoritative name server (forward and reverse zones, SRV for mail, AXFR)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, setting
from ..listeners import Listener, Reach

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..cli import Commands
    from ..config import LabConfig
    from ..lab import Lab

# What can break (services/faults.py): `protolab fault add dns.NAME [--target ADDRESS|NAME]`,
# NAME the name asked for (www.lab.test). They act on the lab's own names, not on forwarded ones.
FAULTS = {
    "servfail": "the server answers SERVFAIL: the name does not resolve, \"server failure\"",
    "nxdomain": "the server answers NXDOMAIN (with the zone's SOA): the name does not exist",
    "wrong-address": "A and AAAA answers hold 192.0.2.1 and 2001:db8::1 (TEST-NET): the "
                     "name resolves, and connections to it go nowhere",
    "slow": "answers come 4 s late: every lookup stalls (dig's Query time: 4000 msec)",
    "ttl-zero": "answers carry a TTL of 0: nothing is cached, every lookup reaches the server",
    "truncate-no-tcp": "UDP answers are truncated (TC, no records) and TCP closes without an "
                       "answer: the client retries over TCP and fails",
}


@dataclass
class Settings(ServiceSettings):
    host: str = setting("ns", "the name server's host name in the lab zone (the NS record)")
    mx: str = setting("", "host of the domain's MX record; empty = the smtp service's host")
    txt: list[str] = setting(["protolab teaching lab"], "TXT strings of the domain itself")
    axfr: bool = setting(True, "answer zone transfers (AXFR over TCP)")
    axfr_clients: list[str] = setting(
        [], "when not empty, only these addresses or networks (CIDR) may transfer zones")
    forwarders: list[str] = setting(
        [], "upstream servers (ADDR or ADDR#PORT) for names outside the lab; empty = REFUSED")
    fake_root: bool = setting(
        False, "also serve a fake root and TLD zone on root_address and tld_address, so "
        "`dig +trace @ROOT_ADDRESS host.DOMAIN` walks the delegations offline")
    root_address: str = setting("127.0.0.2", "where the fake root zone answers (fake_root)")
    tld_address: str = setting("127.0.0.3", "where the fake TLD zone answers (fake_root)")
    dnssec: str = setting(
        "off", "sign the zones (DNSKEY, RRSIG, NSEC, DS; ECDSA P-256): on, off, or a lesson's "
        "broken form: expired (signatures that ended yesterday), broken (a wrong DS above the "
        "lab's zone)")
    dot_port: int = setting(853, "DNS over TLS port (RFC 7858); 0 = none")
    doh_port: int = setting(
        8443, "DNS over HTTPS port (RFC 8484, https://HOST:PORT/dns-query); 0 = none")
    log_queries: int = setting(
        100, "journal at most this many queries per second (then a count of those skipped)")

    def validate(self) -> None:
        super().validate()
        for network in self.axfr_clients:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise Invalid("axfr_clients", f"{network!r} is not an address or network") from None
        for server in self.forwarders:
            try:
                parse_server(server)
            except ValueError as error:
                raise Invalid("forwarders", str(error)) from None
        if self.dnssec not in ("off", "on", "expired", "broken"):
            raise Invalid("dnssec", "must be on, off, expired or broken")
        for key in ("root_address", "tld_address"):
            try:
                ipaddress.IPv4Address(getattr(self, key))
            except ValueError:
                raise Invalid(key, f"{getattr(self, key)!r} is not an IPv4 address") from None


def parse_server(text: str) -> tuple[str, int]:
    """'ADDR' or 'ADDR#PORT' (dnsmasq's spelling) -> (address, port)."""
    address, _, port = text.partition("#")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{text!r}: {address!r} is not an IP address") from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: {port!r} is not a port number")
    return address, int(port or 53)


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("dns")
    note = f"zone {config.lab.domain}"
    if s.forwarders:
        note += ", forwarding to " + " ".join(s.forwarders)
    # around: a resolver on one address of port 53 (systemd-resolved) must not cost the
    # lab its DNS; the others are bound one by one.
    out = [Listener("dns", "dns", 53, "udp", note=note, around=True, role="nameserver"),
           Listener("dns", "dns-tcp", 53, "tcp", around=True)]
    if s.dot_port:
        out.append(Listener("dns", "dot", s.dot_port, tls="implicit", note="DNS over TLS"))
    if s.doh_port:
        out.append(Listener("dns", "doh", s.doh_port, tls="implicit",
                            note="DNS over HTTPS: /dns-query"))
    if s.fake_root:
        out += [Listener("dns", "root", 53, "udp", note="fake root", address=s.root_address),
                Listener("dns", "tld", 53, "udp", note="fake TLD", address=s.tld_address)]
    return out


def service(lab: Lab) -> IService:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    """Ask the server for the SOA of the lab's domain over UDP."""
    from .client import query

    domain = target.config.lab.domain
    reply = query(target.host, target.port("dns", "dns"), domain, "SOA", target.timeout)
    if reply.header.rcode != 0 or not reply.rr:
        from dnslib import RCODE

        raise RuntimeError(f"SOA {domain}: {RCODE.get(reply.header.rcode)}, no answer")
    return f"SOA {domain} serial {reply.rr[0].rdata.times[0]}"


def add_commands(commands: Commands) -> None:
    from .commands import add_commands as add

    add(commands)


def clients(reach: Reach) -> list[str]:
    listener = reach.listener
    tcp = " +tcp" if listener.transport == "tcp" else ""
    return [f"dig @{reach.address} -p {listener.port}{tcp} www.{reach.domain}"]
