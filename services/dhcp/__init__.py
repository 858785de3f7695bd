"""DHCP: addresses for the lab's hosts, on one named interface only, with names in the lab DNS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, setting
from ..listeners import Listener, Reach

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab


# What can break (services/faults.py): `protolab fault add dhcp.NAME [--target MAC|HOSTNAME]`.
FAULTS = {
    "nak-everything": "every REQUEST gets a NAK: dhclient and udhcpc start over, again and again",
    "pool-exhausted": "no address for a client without a lease: DISCOVER gets no offer",
    "wrong-router": "the router option names an address where nobody routes: no way out",
    "wrong-dns": "the DNS option names an address where no server answers: names fail",
    "short-lease": "leases of 30 s: the client renews every 15 s (watch it in Wireshark)",
}

@dataclass
class Settings(ServiceSettings):
    host: str = setting("dhcp", "the DHCP server's host name in the lab zone")
    interface: str = setting(
        "", "the only network interface DHCP answers on (e.g. a lab bridge); empty = off, "
        "so a lab never hands out addresses on a host's LAN by default, unless "
        "`protolab net up` made its bridge: then that bridge")
    network: str = setting(
        "10.203.0.0/24", "the network `protolab net up` makes: its bridge takes the first "
        "address, its hosts lease from the range")
    range: str = setting(
        "", "addresses to lease, FIRST-LAST; empty = .100 to .199 of the interface's network")
    lease_time: int = setting(600, "lease time in seconds (short: a lab's clients come and go)")
    router: str = setting(
        "", "default gateway given to clients; empty = this server's address (none on a "
        "`protolab net up` bridge); \"none\" = no gateway: clients reach their network only")
    dns_servers: list[str] = setting(
        [], "DNS servers given to clients; empty = the lab's DNS (this server's address)")
    domain: str = setting("", "domain name given to clients; empty = the lab's domain")
    reservations: dict[str, str] = setting(
        {}, "fixed addresses by MAC: { \"52:54:00:12:34:56\" = \"10.0.0.50\" }")
    ipv6_prefix: str = setting(
        "", "IPv6 on the interface: a /64 such as \"fd00:203::/64\" (the interface needs an "
        "address in it, which is the hosts' DNS server): router advertisements for SLAAC "
        "and DHCPv6 leases from PREFIX::1000-PREFIX::1fff; empty = no IPv6, unless "
        "`protolab net up` made the bridge: then its prefix")
    ra_managed: bool = setting(
        True, "the RA's M flag: hosts also ask DHCPv6 for an address (dhclient -6)")
    ra_other: bool = setting(
        True, "the RA's O flag: hosts ask DHCPv6 for the rest (DNS, domain: dhclient -6 -S)")

    def validate(self) -> None:
        super().validate()
        if self.range:
            parse_range(self.range)
        if not 60 <= self.lease_time <= 2**31 - 1:
            raise Invalid("lease_time", "must be at least 60 seconds")
        net_network(self.network)
        if self.ipv6_prefix:
            ipv6_prefix(self.ipv6_prefix)
        for key, values in (("router", [self.router] if self.router not in ("", NO_ROUTER) else []),
                            ("dns_servers", self.dns_servers), ("reservations", self.reservations.values())):
            for value in values:
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise Invalid(key, f"{value!r} is not an IPv4 address") from None
        for mac in self.reservations:
            if len(mac.split(":")) != 6 or not all(len(p) == 2 for p in mac.split(":")):
                raise Invalid("reservations", f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
            try:
                bytes.fromhex(mac.replace(":", ""))
            except ValueError:
                raise Invalid("reservations", f"{mac!r} is not a MAC address") from None


NO_ROUTER = "none"


def net_network(text: str) -> ipaddress.IPv4Network:
    """[dhcp] network: an IPv4 network with room for the bridge and the default range."""
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError:
        raise Invalid("network", f"{text!r} is not an IPv4 network such as 10.203.0.0/24") from None
    if not 16 <= network.prefixlen <= 24:
        raise Invalid("network", f"{text}: the prefix must be /16 to /24")
    return network


def ipv6_prefix(text: str) -> ipaddress.IPv6Network:
    """[dhcp] ipv6_prefix: a /64 (SLAAC makes addresses of 64-bit interface identifiers)."""
    try:
        network = ipaddress.IPv6Network(text)
    except ValueError:
        raise Invalid("ipv6_prefix", f"{text!r} is not an IPv6 prefix such as fd00:203::/64") from None
    if network.prefixlen != 64:
        raise Invalid("ipv6_prefix", f"{text}: must be a /64 (SLAAC needs one)")
    return network


def parse_range(text: str) -> tuple[str, str]:
    first, sep, last = text.partition("-")
    try:
        a, b = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
    except ValueError:
        raise Invalid("range", f"{text!r} is not FIRST-LAST (two IPv4 addresses)") from None
    if not sep or a > b:
        raise Invalid("range", f"{text!r}: FIRST must not be above LAST")
    return str(a), str(b)


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("dhcp")
    if not s.interface:
        return [Listener("dhcp", "dhcp", 67, "udp", active=False, note="set [dhcp] interface")]
    found = [Listener("dhcp", "dhcp", 67, "udp", address="0.0.0.0", note=f"on {s.interface} only")]
    if s.ipv6_prefix:
        found.append(Listener("dhcp", "dhcpv6", 547, "udp", address="[::]",
                              note=f"on {s.interface} only, router advertisements of {s.ipv6_prefix}"))
    return found


def service(lab: Lab) -> IService:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    """A DHCPINFORM, unicast to the server from an ephemeral port: the server answers an
    INFORM to the port it came from, so this needs no broadcast domain and leases nothing."""
    from .client import inform

    return inform(target)


def clients(reach: Reach) -> list[str]:
    return ["udhcpc -i IFACE -f -q   # on a network the [dhcp] section names"]
