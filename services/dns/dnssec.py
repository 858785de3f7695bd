"""DNSSEC for the lab's zones (RFC 4033-4035): keys, signatures, the NSEC chain, DS records.

dnspython signs (ECDSA P-256, algorithm 13, with `cryptography`); this module decides what
is signed and which proofs a DO answer carries. One combined signing key (flags 257) per
zone, kept in DATA/dns/keys so the trust anchor survives a restart. Zones are re-signed
whenever they are rebuilt (a DHCP name, `dns add`), with the new serial. A lesson's
switches: `expired` signs with a validity that ended yesterday, `broken` gives the parent a
DS that matches no key (resolution fails at the lab's zone).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dnslib import QTYPE, RD, RR, DNSLabel

from .packed import Sections, lower, parts, wire_name
from .zone import Name, Zone

ALGORITHM = 13  # ECDSAP256SHA256
RRSIG, NSEC, DNSKEY, DS = 46, 47, 48, 43
VALIDITY = 30 * 86400
MODES = ("on", "expired", "broken")


def canonical(name: Name) -> tuple[bytes, ...]:
    """The sort key of RFC 4034 6.1: labels from the right, lower case, as octets."""
    return tuple(reversed(lower(name)))


def rdata_wire(rr: RR) -> bytes:
    """The rdata without compression (what signatures are made over)."""
    return b"".join(wire_name(part) if isinstance(part, tuple) else part for part in parts(rr))


def to_dnspython(name: Name, rrs: list[RR]) -> dns.rrset.RRset:
    owner = dns.name.Name([*name, b""])
    rtype = dns.rdatatype.RdataType(rrs[0].rtype)
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, rtype)
    for rr in rrs:
        wire = rdata_wire(rr)
        rrset.add(dns.rdata.from_wire(dns.rdataclass.IN, rtype, wire, 0, len(wire)), rr.ttl)
    return rrset


def raw(owner: Name, rtype: int, ttl: int, rdata: dns.rdata.Rdata) -> RR:
    return RR(DNSLabel(list(owner)), rtype, ttl=ttl, rdata=RD(rdata.to_wire()))


class Keys:
    """One signing key per zone, made once and kept as PEM under `folder`."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._keys: dict[Name, ec.EllipticCurvePrivateKey] = {}
        self._dnskeys: dict[Name, dns.rdtypes.ANY.DNSKEY.DNSKEY] = {}
        # The last signing's RRSIGs by what they sign: a rebuild re-signs only what changed
        # (a lease's A and PTR, the SOA, the NSEC around them), not the whole zone.
        self.signatures: dict[tuple[object, ...], tuple[float, RR]] = {}

    def key(self, apex: Name) -> ec.EllipticCurvePrivateKey:
        key = self._keys.get(apex)
        if key is not None:
            return key
        path = None
        if self.folder is not None:
            stem = b".".join(apex).decode("ascii", "replace") or "root"
            path = self.folder / f"{stem}.pem"
            if path.exists():
                loaded = serialization.load_pem_private_key(path.read_bytes(), None)
                if isinstance(loaded, ec.EllipticCurvePrivateKey):
                    self._keys[apex] = loaded
                    return loaded
        key = ec.generate_private_key(ec.SECP256R1())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
        self._keys[apex] = key
        return key

    def dnskey(self, apex: Name) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        dnskey = self._dnskeys.get(apex)
        if dnskey is None:
            dnskey = dns.dnssec.make_dnskey(self.key(apex).public_key(), ALGORITHM, flags=257)
            self._dnskeys[apex] = dnskey
        return dnskey

    def ds(self, apex: Name, broken: bool = False) -> dns.rdata.Rdata:
        ds = dns.dnssec.make_ds(dns.name.Name([*apex, b""]), self.dnskey(apex), "SHA256")
        if broken:  # a digest no key has: the chain of trust breaks here
            return ds.replace(digest=bytes(b ^ 0xFF for b in ds.digest))
        return ds

    def anchor(self, apex: Name) -> str:
        """The trust anchor in BIND's (delv's) syntax."""
        key = self.dnskey(apex)
        owner = (b".".join(apex).decode() + ".") if apex else "."
        text = key.to_text().split(" ", 3)
        return (f'trust-anchors {{\n    {owner} static-key {text[0]} {text[1]} {text[2]} '
                f'"{text[3].replace(" ", "")}";\n}};\n')


@dataclass
class Signed:
    """A zone's signatures and NSEC chain, and what DO answers add from them."""

    zone: Zone
    rrsigs: dict[tuple[Name, int], list[RR]] = field(default_factory=dict)
    chains: dict[Name, tuple[list[tuple[bytes, ...]], list[RR]]] = field(default_factory=dict)

    def signatures(self, rrs: list[RR], wildcard: Name | None = None) -> list[RR]:
        """The RRSIGs of the RRsets in `rrs`; those of a synthesised wildcard answer are the
        wildcard's own, under the asked name (their label count says so, RFC 4035 5.3.4)."""
        out: list[RR] = []
        seen = set()
        for rr in rrs:
            key = (lower(rr.rname.label), rr.rtype)
            if key in seen:
                continue
            seen.add(key)
            sigs = self.rrsigs.get(key)
            if sigs is None and wildcard is not None:
                sigs = [RR(rr.rname, RRSIG, ttl=s.ttl, rdata=s.rdata)
                        for s in self.rrsigs.get((wildcard, rr.rtype), [])]
            out += sigs or []
        return out

    def covering(self, apex: Name, name: Name) -> RR | None:
        """The NSEC whose owner is `name`, or the one whose span covers it."""
        chain = self.chains.get(apex)
        if chain is None:
            return None
        keys, records = chain
        index = bisect.bisect_right(keys, canonical(name)) - 1
        return records[index]

    def add_proofs(self, sections: Sections, labels: Name, qtype: int) -> Sections:
        """The DO form of an answer: signatures of every RRset, and for a negative or
        wildcard answer the NSEC records that prove it (RFC 4035 3.1.3)."""
        zone = self.zone
        apex = zone.apex_of(labels)
        out = Sections(sections.rcode, sections.aa, list(sections.answer),
                       list(sections.authority), list(sections.additional))
        if apex is None:
            return out
        from .answers import closest_encloser

        synthesised = bool(sections.answer) and labels not in zone.records and \
            lower(sections.answer[0].rname.label) == labels
        wildcard = (b"*", *closest_encloser(zone, labels, apex)) if synthesised else None
        out.answer += self.signatures(sections.answer, wildcard)
        if not sections.aa:  # a referral: the DS (signed) or the NSEC saying there is none
            cut = lower(sections.authority[0].rname.label) if sections.authority else None
            if cut is not None:
                ds = self.rrsigs.get((cut, DS))
                if ds is not None:
                    out.authority += [rr for rr in zone.delegations.get(cut, []) if rr.rtype == DS]
                    out.authority += ds
                else:
                    nsec = self.covering(apex, cut)
                    if nsec is not None:
                        out.authority += [nsec, *self.signatures([nsec])]
            return out
        proofs: list[RR] = []
        if not sections.answer:
            out.authority += self.signatures(sections.authority)
            proofs.append(self.covering(apex, labels))
            if sections.rcode == 3:  # NXDOMAIN: and no wildcard could have answered
                encloser = closest_encloser(zone, labels, apex)
                proofs.append(self.covering(apex, (b"*", *encloser)))
        elif synthesised:
            proofs.append(self.covering(apex, labels))  # a wildcard answered: no such name
        for nsec in proofs:
            if nsec is not None and nsec not in out.authority:
                out.authority += [nsec, *self.signatures([nsec])]
        return out


def sign(zone: Zone, keys: Keys, mode: str = "on", children: list[Name] | None = None,
         now: float | None = None, lab: Name | None = None) -> Signed:
    """Adds DNSKEY and NSEC records to `zone`, DS records for `children` (zones below
    delegations whose keys are in `keys`) and signs every authoritative RRset. In mode
    `broken` the DS of `lab` (of every child when None) matches no key."""
    now = time.time() if now is None else now
    inception, expiration = now - 3600, now + VALIDITY
    if mode == "expired":
        inception, expiration = now - VALIDITY, now - 86400
    for child in children or []:
        if child in zone.delegations:
            ds = keys.ds(child, broken=mode == "broken" and lab in (None, child))
            zone.delegations[child] = [rr for rr in zone.delegations[child] if rr.rtype != DS]
            ttl = zone.delegations[child][0].ttl
            zone.delegations[child].append(raw(child, DS, ttl, ds))
    signed = Signed(zone)
    previous, keys.signatures = keys.signatures, {}
    for apex, soa in zone.apexes.items():
        zone.add(raw(apex, DNSKEY, soa.ttl, keys.dnskey(apex)))
    authoritative: dict[Name, dict[int, list[RR]]] = {}
    for owner, by_type in zone.records.items():
        top = zone.apex_of(owner)
        if top is not None and not any(owner[i:] in zone.delegations
                                       for i in range(len(owner) - len(top))):
            authoritative[owner] = dict(by_type)  # NSEC goes in here, not in the zone
    for cut in zone.delegations:  # a cut is in its parent's chain, with NS (and DS)
        authoritative.setdefault(cut, {})
    by_apex: dict[Name, list[Name]] = {apex: [] for apex in zone.apexes}
    for owner in authoritative:
        by_apex[zone.apex_of(owner) or ()].append(owner)
    for apex, soa in zone.apexes.items():
        # a cut that is also a zone we serve (the merged view) is in the child's chain only
        owners = sorted(by_apex[apex], key=canonical)
        records = []
        for i, owner in enumerate(owners):
            types = set(authoritative[owner]) | {RRSIG, NSEC}
            if owner in zone.delegations and owner not in zone.apexes:
                types = {QTYPE.NS, NSEC, RRSIG} | ({DS} if any(
                    rr.rtype == DS for rr in zone.delegations[owner]) else set())
            following = owners[(i + 1) % len(owners)]
            text = " ".join([(b".".join(following).decode("latin-1") + ".") if following else ".",
                             *(dns.rdatatype.to_text(dns.rdatatype.RdataType(t))
                               for t in sorted(types))])
            nsec = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NSEC, text)
            records.append(raw(owner, NSEC, min(soa.ttl, soa.rdata.times[4]), nsec))
        signed.chains[apex] = ([canonical(o) for o in owners], records)
        for nsec in records:
            authoritative.setdefault(lower(nsec.rname.label), {})[NSEC] = [nsec]
    for owner, by_type in authoritative.items():
        own = zone.apex_of(owner)
        assert own is not None
        for rtype, rrs in by_type.items():
            if owner in zone.delegations and owner not in zone.apexes and rtype != NSEC:
                continue  # the NS of a cut belongs to the child: not signed by the parent
            _sign(signed, keys, previous, own, owner, rtype, rrs, (inception, expiration, now))
        parent = zone.apex_of(owner[1:]) if owner else None
        ds_set = [rr for rr in zone.delegations.get(owner, []) if rr.rtype == DS]
        if ds_set and parent is not None:  # the DS is the parent's, signed with its key
            _sign(signed, keys, previous, parent, owner, DS, ds_set, (inception, expiration, now))
    return signed


def _sign(signed: Signed, keys: Keys, previous: dict[tuple[object, ...], tuple[float, RR]],
          apex: Name, owner: Name, rtype: int, rrs: list[RR],
          times: tuple[float, float, float]) -> None:
    inception, expiration, now = times
    what = (apex, owner, rtype, tuple(sorted((rr.ttl, rdata_wire(rr)) for rr in rrs)))
    kept = previous.get(what)
    if kept is not None and kept[0] - now > VALIDITY / 2:  # unchanged, and valid for long
        keys.signatures[what] = kept
        signed.rrsigs[(owner, rtype)] = [kept[1]]
        return
    signer = dns.name.Name([*apex, b""])
    rrsig = dns.dnssec.sign(to_dnspython(owner, rrs), keys.key(apex), signer, keys.dnskey(apex),
                            inception=inception, expiration=expiration,
                            deterministic=False)  # RFC 6979 in dnspython is pure Python: slow
    record = raw(owner, RRSIG, rrs[0].ttl, rrsig)
    keys.signatures[what] = (expiration, record)
    signed.rrsigs[(owner, rtype)] = [record]


def combined(*zones: Zone) -> Zone:
    """One view of several zones (the lab's and the fake root's and TLD's): a validator
    such as delv asks one server for every DNSKEY and DS up the chain."""
    out = Zone(serial=zones[0].serial)
    for zone in zones:
        out.apexes.update(zone.apexes)
        out.delegations.update(zone.delegations)
        for rrs in (rr for by_type in zone.records.values() for rr in by_type.values()):
            for rr in rrs:
                out.add(rr)
    out.finish()
    return out
