"""`protolab dns add|del|list`: the store's DNS records, changed while servers run."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .zone import TYPES, rdata

if TYPE_CHECKING:
    from ..cli import Commands


def add_commands(commands: Commands) -> None:
    common = commands.common
    dns = commands.add("dns", help="add, delete and list the lab zone's own records")
    sub = dns.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a record (seen by running servers within a second)")
    common(add)
    add.add_argument("name", help="host name (relative to the lab's domain) or full name.")
    add.add_argument("type", type=str.upper, choices=TYPES, metavar="TYPE",
                     help="one of " + ", ".join(TYPES))
    add.add_argument("value", nargs="+", help="address, host, 'PREF HOST' (MX), "
                     "'PRIO WEIGHT PORT TARGET' (SRV) or text (TXT)")
    add.add_argument("--ttl", type=int, default=None, metavar="S",
                     help="TTL in seconds (default: [lab] ttl)")
    delete = sub.add_parser("del", help="delete a name's records (of one TYPE if given)")
    common(delete)
    delete.add_argument("name")
    delete.add_argument("type", nargs="?", type=str.upper, choices=TYPES, metavar="TYPE")
    listing = sub.add_parser("list", help="list the records added at run time (and by DHCP)")
    common(listing)
    listing.add_argument("--json", action="store_true")
    dns.set_defaults(func=lambda args: run(args, commands))


def fqdn(name: str, domain: str) -> str:
    name = name.strip().lower()
    if name.endswith("."):
        return name.rstrip(".")
    if name in ("@", ""):
        return domain
    if name == domain or name.endswith(("." + domain, ".arpa")):
        return name
    return f"{name}.{domain}"


def run(args: argparse.Namespace, commands: Commands) -> int:
    config = commands.config(args)
    domain = config.lab.domain.lower()
    if args.action == "add":
        name = fqdn(args.name, domain)
        if not (name == domain or name.endswith(("." + domain, ".in-addr.arpa", ".ip6.arpa"))):
            raise commands.Error(f"{name}: not in the lab's zones ({domain} and reverse zones)", 2)
        value = " ".join(args.value)
        try:
            rdata(args.type, value, domain)
            from dnslib import DNSLabel

            DNSLabel(name)
        except ValueError as error:
            raise commands.Error(f"{name} {args.type}: {error}", 2) from None
        ttl = config.lab.ttl if args.ttl is None else args.ttl
        if not 0 <= ttl < 2**31:
            raise commands.Error("--ttl must be 0..2147483647", 2)
        commands.store(args, config).net.add_record(name, args.type, value, ttl)
        print(f"added {name} {ttl} {args.type} {value}")
    elif args.action == "del":
        name = fqdn(args.name, domain)
        count = commands.store(args, config, create=False).net.delete_records(name, args.type)
        if not count:
            raise commands.Error(f"{name}: no {args.type + ' ' if args.type else ''}records to delete")
        print(f"deleted {count} record{'s' * (count != 1)} of {name}")
    else:
        records = commands.store(args, config, create=False).net.live_records()
        if args.json:
            print(json.dumps([{"name": r.name, "type": r.type, "value": r.value, "ttl": r.ttl,
                               "owner": r.owner} for r in records]))
        for record in [] if args.json else records:
            owner = f"  ({record.owner})" if record.owner else ""
            print(f"{record.name:<32} {record.ttl:>6} {record.type:<5} {record.value}{owner}")
    return 0
