"""The lab's zones as data: built from the config, the store's records and the leases.

Sans-IO: `build(...)` returns a Zone, a plain lookup structure keyed by name (a tuple of
lower-case label bytes), which answers.py turns into wire-format replies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A, DNSLabel

from .. import registry

Name = tuple[bytes, ...]

TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SRV", "TXT")


def name(text: str) -> Name:
    return tuple(label.lower() for label in DNSLabel(text.rstrip(".") + ".").label)


def text(labels: Name) -> str:
    return ".".join(label.decode("latin-1") for label in labels)


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def reverse_zone(address: str) -> str:
    """The reverse zone an address's PTR lives in: its /24 (IPv4) or /64 (IPv6)."""
    labels = reverse_name(address).split(".")
    return ".".join(labels[1:] if ipaddress.ip_address(address).version == 4 else labels[16:])


def rdata(rtype: str, value: str, domain: str) -> Any:
    """The dnslib rdata for a record given as text; relative host names get the domain.
    Raises ValueError naming what is wrong."""
    rtype = rtype.upper()

    def host(v: str) -> str:  # zone-file rules: relative names are in the lab's domain
        v = v.strip()
        if not v:
            raise ValueError("a host name is missing")
        if v.endswith("."):
            return v
        if v == domain or v.endswith(("." + domain, ".arpa")):
            return v + "."
        return f"{v}.{domain}."

    try:
        if rtype == "A":
            return A(str(ipaddress.IPv4Address(value.strip())))
        if rtype == "AAAA":
            return AAAA(str(ipaddress.IPv6Address(value.strip())))
        if rtype in ("CNAME", "NS", "PTR"):
            return {"CNAME": CNAME, "NS": NS, "PTR": PTR}[rtype](host(value))
        if rtype == "MX":
            parts = value.split()
            if len(parts) == 1:
                parts = ["10", parts[0]]
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 65535:
                raise ValueError(f"MX wants 'PREFERENCE HOST', got {value!r}")
            return MX(host(parts[1]), int(parts[0]))
        if rtype == "SRV":
            parts = value.split()
            if len(parts) != 4 or not all(p.isdigit() and int(p) < 65536 for p in parts[:3]):
                raise ValueError(f"SRV wants 'PRIORITY WEIGHT PORT TARGET', got {value!r}")
            return SRV(int(parts[0]), int(parts[1]), int(parts[2]), host(parts[3]))
        if rtype == "TXT":
            data = value.encode()
            return TXT([data[i:i + 255] for i in range(0, len(data), 255)] or [b""])
    except ipaddress.AddressValueError as error:
        raise ValueError(
            f"{rtype} wants an IPv{6 if rtype == 'AAAA' else 4} address: {error}") from None
    raise ValueError(f"unsupported record type {rtype!r} (supported: {', '.join(TYPES)})")


@dataclass
class Zone:
    """Every record the server is authoritative for, by owner name."""

    apexes: dict[Name, RR] = field(default_factory=dict)  # zone apex -> its SOA
    records: dict[Name, dict[int, list[RR]]] = field(default_factory=dict)
    nonterminals: set[Name] = field(default_factory=set)  # names that exist only as parents
    delegations: dict[Name, list[RR]] = field(default_factory=dict)  # fake root/TLD: NS sets
    serial: int = 0

    def add(self, rr: RR) -> None:
        owner = tuple(label.lower() for label in rr.rname.label)
        rrs = self.records.setdefault(owner, {}).setdefault(rr.rtype, [])
        if all(existing.rdata != rr.rdata for existing in rrs):
            rrs.append(rr)

    def apex_of(self, owner: Name) -> Name | None:
        for i in range(len(owner) + 1):
            if owner[i:] in self.apexes:
                return owner[i:]
        return None

    def finish(self) -> None:
        """Note the empty non-terminals (they exist: NODATA rather than NXDOMAIN)."""
        for owner in list(self.records):
            apex = self.apex_of(owner)
            for i in range(1, len(owner) - len(apex or ()) + 1):
                if owner[i:] not in self.records:
                    self.nonterminals.add(owner[i:])

    def rrs(self, apex: Name) -> Iterable[RR]:
        """Every record of the zone at `apex` (for AXFR), its SOA excluded."""
        for owner, by_type in self.records.items():
            if self.apex_of(owner) == apex:
                for rtype, rrs in by_type.items():
                    if rtype != QTYPE.SOA:
                        yield from rrs


@dataclass(frozen=True)
class DynamicRecord:
    name: str  # fully qualified, no trailing dot
    type: str
    value: str
    ttl: int


def soa(apex: str, ns_host: str, domain: str, serial: int, ttl: int) -> RR:
    return RR(apex + ".", QTYPE.SOA, ttl=ttl, rdata=SOA(
        ns_host + ".", f"hostmaster.{domain}.", (serial, 3600, 600, 86400, ttl)))


def build(config: Any, offset: int, dynamic: Iterable[DynamicRecord], serial: int,
          teams: Iterable[str] = ()) -> Zone:
    """The lab's forward zone and the reverse zones of its addresses. Each class team
    (`teams`, from the store's roster) gets its own mail domain inside it."""
    s = config.service("dns")
    domain = config.lab.domain.lower()
    ttl = config.lab.ttl
    ns_host = config.fqdn(s.host)
    zone = Zone(serial=serial)
    zone.apexes[name(domain)] = soa(domain, ns_host, domain, serial, ttl)
    zone.add(zone.apexes[name(domain)])
    zone.add(RR(domain + ".", QTYPE.NS, ttl=ttl, rdata=NS(ns_host + ".")))
    for item in s.txt:
        zone.add(RR(domain + ".", QTYPE.TXT, ttl=ttl, rdata=rdata("TXT", item, domain)))

    hosts, hosts6 = config.host_names(), config.host_names6()
    aliases = {alias: settings.host for settings in config.services.values() if settings.host
               for alias in settings.aliases if alias not in config.hosts}
    addresses: list[tuple[str, str]] = []  # (fqdn, address), in order: first one gets the PTR
    for host, address in hosts.items():
        fqdn = config.fqdn(host)
        if host in aliases:
            zone.add(RR(fqdn + ".", QTYPE.CNAME, ttl=ttl, rdata=CNAME(config.fqdn(aliases[host]) + ".")))
            continue
        # A at its address; AAAA at the lab's IPv6 address too, when it has one
        for item in dict.fromkeys((address, hosts6.get(host, address))):
            rtype = "A" if ipaddress.ip_address(item).version == 4 else "AAAA"
            zone.add(RR(fqdn + ".", getattr(QTYPE, rtype), ttl=ttl, rdata=rdata(rtype, item, domain)))
            addresses.append((fqdn, item))

    if s.fake_root:
        zone.add(RR(config.fqdn("root") + ".", QTYPE.A, ttl=ttl, rdata=A(s.root_address)))
        zone.add(RR(config.fqdn("tld") + ".", QTYPE.A, ttl=ttl, rdata=A(s.tld_address)))
    relays = config.hosts_with_role("mail-relay")
    mail = s.mx or (relays[0] if relays else "")
    if mail:
        zone.add(RR(domain + ".", QTYPE.MX, ttl=ttl, rdata=MX(config.fqdn(mail) + ".", 10)))
    # SRV records (RFC 6186, 8314) for the listeners that name one, at the ports the lab
    # really listens on, preferred as their packages say
    for listener in registry.every_listener(config, offset):
        target = config.host_of(listener.service)
        if listener.srv and target:
            zone.add(RR(f"{listener.srv}.{domain}.", QTYPE.SRV, ttl=ttl, rdata=SRV(
                listener.preference, 1, listener.port, config.fqdn(target) + ".")))
    for team in teams:
        _team_domain(zone, f"{team}.{domain}", domain, ttl)

    for record in dynamic:
        owner = name(record.name)
        if zone.apex_of(owner) is None and not record.name.endswith(".arpa"):
            continue  # outside the lab's zones (the CLI refuses these; config may have moved)
        try:
            data = rdata(record.type, record.value, domain)
        except ValueError:
            continue
        zone.add(RR(record.name + ".", getattr(QTYPE, record.type), ttl=record.ttl, rdata=data))
        if record.type in ("A", "AAAA"):
            addresses.append((record.name, record.value))

    for fqdn, address in addresses:  # PTR records follow A and AAAA
        apex = reverse_zone(address)
        if name(apex) not in zone.apexes:
            zone.apexes[name(apex)] = soa(apex, ns_host, domain, serial, ttl)
            zone.add(zone.apexes[name(apex)])
            zone.add(RR(apex + ".", QTYPE.NS, ttl=ttl, rdata=NS(ns_host + ".")))
        ptr = name(reverse_name(address))
        if QTYPE.PTR not in zone.records.get(ptr, {}):
            zone.add(RR(reverse_name(address) + ".", QTYPE.PTR, ttl=ttl, rdata=PTR(fqdn + ".")))
    # PTR records added by hand in a reverse zone we do not have yet
    for owner in list(zone.records):
        if owner[-2:] == (b"in-addr", b"arpa") and zone.apex_of(owner) is None and len(owner) == 6:
            apex = text(owner[1:])
            zone.apexes[owner[1:]] = soa(apex, ns_host, domain, serial, ttl)
            zone.add(zone.apexes[owner[1:]])
    zone.finish()
    return zone


def _team_domain(zone: Zone, team_domain: str, domain: str, ttl: int) -> None:
    """A team's mail domain: the lab domain's MX and SRV records (same servers, same
    ports) at TEAM.DOMAIN, and autoconfig.TEAM.DOMAIN naming the lab's autoconfig host, so
    Thunderbird's wizard sets up stu1@team07.lab.test as it does stu1@lab.test."""
    apex = name(domain)
    for owner, by_type in list(zone.records.items()):
        if owner[1:] == apex and owner[:1] == (b"autoconfig",):
            for rr in by_type.get(QTYPE.A, []) + by_type.get(QTYPE.CNAME, []):
                target = text(owner) + "." if rr.rtype == QTYPE.A else str(rr.rdata)
                zone.add(RR(f"autoconfig.{team_domain}.", QTYPE.CNAME, ttl=ttl,
                            rdata=CNAME(target)))
        if owner == apex:
            for rr in by_type.get(QTYPE.MX, []):
                zone.add(RR(team_domain + ".", QTYPE.MX, ttl=ttl, rdata=rr.rdata))
        if len(owner) == len(apex) + 2 and owner[2:] == apex and owner[0].startswith(b"_"):
            for rr in by_type.get(QTYPE.SRV, []):
                zone.add(RR(f"{text(owner[:2])}.{team_domain}.", QTYPE.SRV, ttl=ttl,
                            rdata=rr.rdata))


def fake_root(config: Any, lab_address: str) -> tuple[Zone, Zone]:
    """A root zone delegating the TLD, and a TLD zone delegating the lab's domain, for
    `dig +trace`. Glue points at the fake servers themselves and at the lab's server."""
    s = config.service("dns")
    domain = config.lab.domain.lower()
    tld = domain.rsplit(".", 1)[-1]
    ttl = config.lab.ttl
    root, top = Zone(serial=1), Zone(serial=1)
    # Named inside the lab's domain: dig +trace looks the root servers' names up through
    # the system resolver, which in the lab is this server.
    root_ns, tld_ns = config.fqdn("root"), config.fqdn("tld")
    root.apexes[()] = RR(".", QTYPE.SOA, ttl=ttl, rdata=SOA(
        root_ns + ".", f"hostmaster.{domain}.", (1, 3600, 600, 86400, ttl)))
    root.add(root.apexes[()])
    root.add(RR(".", QTYPE.NS, ttl=ttl, rdata=NS(root_ns + ".")))
    root.add(RR(root_ns + ".", QTYPE.A, ttl=ttl, rdata=A(s.root_address)))
    root.delegations[(tld.encode(),)] = [
        RR(tld + ".", QTYPE.NS, ttl=ttl, rdata=NS(tld_ns + ".")),
        RR(tld_ns + ".", QTYPE.A, ttl=ttl, rdata=A(s.tld_address))]
    top.apexes[name(tld)] = RR(tld + ".", QTYPE.SOA, ttl=ttl, rdata=SOA(
        tld_ns + ".", f"hostmaster.{tld}.", (1, 3600, 600, 86400, ttl)))
    top.add(top.apexes[name(tld)])
    top.add(RR(tld + ".", QTYPE.NS, ttl=ttl, rdata=NS(tld_ns + ".")))
    top.add(RR(tld_ns + ".", QTYPE.A, ttl=ttl, rdata=A(s.tld_address)))
    lab_ns = config.fqdn(s.host)
    top.delegations[name(domain)] = [
        RR(domain + ".", QTYPE.NS, ttl=ttl, rdata=NS(lab_ns + ".")),
        RR(lab_ns + ".", QTYPE.A, ttl=ttl, rdata=A(lab_address))]
    for zone in (root, top):
        zone.finish()
    return root, top
