"""DHCP speed: DORA exchanges per second for 1000 simulated clients through the server core,
and DHCPv6's SOLICIT/ADVERTISE/REQUEST/REPLY beside it (the ratio to DHCPv4's, same run).

    python3 -m tests.bench.dhcp [--clients 1000]

Each client sends DISCOVER, takes the OFFER, sends REQUEST and gets its ACK: bytes in and
bytes out of the sans-IO core, as the UDP listener drives it. Measured twice: with leases
in memory (the logic alone) and with the lab store (every ACK durable in SQLite first, as
served). Checks that no address was given twice. There is no peer to measure side by side:
dnsmasq cannot be driven without sockets and a broadcast domain. Last, a flood of SOLICITs
with made-up DUIDs: how many a second the DHCPv6 core answers, and that it keeps nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.dhcp import codec, codec6
from services.dhcp.core import DHCPCore, MemoryBackend, Pool
from services.dhcp.core6 import DHCPv6Core, MemoryBackend6, Pool6, duid_ll
from services.dhcp.server import StoreBackend
from services.dhcp.server6 import StoreBackend6

POOL = Pool(server="10.199.0.1", first="10.199.1.0", last="10.199.8.255", netmask="255.255.0.0",
            router="10.199.0.1", dns=("10.199.0.1",), domain="lab.test", lease_time=600)


def request(kind: int, n: int, **options: bytes) -> bytes:
    chaddr = bytes([0x52, 0x54, 0, n >> 16 & 255, n >> 8 & 255, n & 255])
    opts = {codec.MESSAGE_TYPE: bytes([kind]), codec.PARAMETER_LIST: bytes([1, 3, 6, 15, 51])}
    for code, value in options.items():
        opts[int(code[1:])] = value
    return codec.pack(codec.Packet(op=1, xid=n, chaddr=chaddr, options=opts))


def run(core: DHCPCore, clients: int) -> tuple[float, list[str]]:
    given = []
    start = time.perf_counter()
    for n in range(clients):
        now = time.time()
        offer = core.handle(request(codec.DISCOVER, n, o12=f"pc{n}".encode()), ("0.0.0.0", 68), now)
        ip = codec.parse(offer.replies[0].data).yiaddr
        ack = core.handle(request(codec.REQUEST, n, o50=codec.ip_option(ip),
                                  o54=codec.ip_option(POOL.server), o12=f"pc{n}".encode()),
                          ("0.0.0.0", 68), now)
        reply = codec.parse(ack.replies[0].data)
        assert reply.type == codec.ACK
        given.append(reply.yiaddr)
    return clients / (time.perf_counter() - start), given


POOL6 = Pool6(prefix="fd00:199::/64", server_duid=duid_ll(bytes(6)), dns=("fd00:199::1",),
              domain="lab.test", lease_time=600, server="fd00:199::1")


def message6(kind: int, n: int, *options: tuple[int, bytes], server: bool = False) -> bytes:
    head = [(codec6.CLIENTID, duid_ll(bytes([0x52, 0x54, 0, n >> 16 & 255, n >> 8 & 255, n & 255])))]
    if server:
        head.append((codec6.SERVERID, POOL6.server_duid))
    return codec6.pack(codec6.Message(kind, n & 0xFFFFFF, [*head, *options]))


def run6(core: DHCPv6Core, clients: int) -> tuple[float, list[str]]:
    given = []
    start = time.perf_counter()
    for n in range(clients):
        now = time.time()
        ia = (codec6.IA_NA, codec6.IANA(1).pack())
        name = (codec6.CLIENT_FQDN, codec6.fqdn(codec6.FQDN_S, f"pc{n}", partial=True))
        advertise = core.handle(message6(codec6.SOLICIT, n, ia, name), now)
        assert advertise.reply is not None
        offered = advertise.reply.iana()[0].addresses[0].address
        asked = (codec6.IA_NA, codec6.IANA(1, 0, 0, [codec6.IAAddr(offered, 0, 0)]).pack())
        reply = core.handle(message6(codec6.REQUEST, n, asked, name, server=True), now).reply
        assert reply is not None and reply.type == codec6.REPLY
        given.append(reply.iana()[0].addresses[0].address)
    return clients / (time.perf_counter() - start), given


def flood6(core: DHCPv6Core, count: int) -> float:
    ia = (codec6.IA_NA, codec6.IANA(1).pack())
    start = time.perf_counter()
    for _ in range(count):
        data = codec6.pack(codec6.Message(codec6.SOLICIT, 1, [
            (codec6.CLIENTID, b"\x00\x04" + os.urandom(16)), ia]))
        core.handle(data, time.time())
    assert core.leases == {}, "a SOLICIT left state behind"
    return count / (time.perf_counter() - start)


def measure(label: str, exchange: str, durable: str, clients: int,
            in_memory: Callable[[], tuple[float, list[str]]],
            stored: Callable[[Any], tuple[float, list[str]]],
            leases: Callable[[Any], list[Any]]) -> float:
    """One family's figures: leases in memory, then in a fresh store (the answer sent once
    the lease is durable); every address given once. Returns the store's rate."""
    rate, given = in_memory()
    assert len(set(given)) == len(given), "an address was given twice"
    print(f"{label}memory leases: {rate:.0f} {exchange}/s, {len(set(given))} distinct addresses "
          f"for {clients} clients")
    with tempfile.TemporaryDirectory() as tmp:
        from services.store import Store

        store = Store(Path(tmp) / "data")
        rate, given = stored(store.net)
        held = [lease.ip for lease in leases(store.net)]
        store.close()
    assert len(set(given)) == len(given) == len(set(held)) == len(held), "an address was given twice"
    print(f"{label}store leases (durable {durable}): {rate:.0f} {exchange}/s, {len(set(held))} "
          f"distinct leases")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    v4 = measure("", "DORA", "ACK", args.clients, lambda: run(DHCPCore(POOL, MemoryBackend()), args.clients),
                 lambda net: run(DHCPCore(POOL, StoreBackend(net)), args.clients),
                 lambda net: net.leases())
    v6 = measure("DHCPv6 ", "SARR", "REPLY", args.clients,
                 lambda: run6(DHCPv6Core(POOL6, MemoryBackend6()), args.clients),
                 lambda net: run6(DHCPv6Core(POOL6, StoreBackend6(net)), args.clients),
                 lambda net: net.leases6())
    print(f"DHCPv6 / DHCPv4 with the store: {v6 / v4:.2f}")
    print(f"DHCPv6 SOLICIT flood, random DUIDs: {flood6(DHCPv6Core(POOL6, MemoryBackend6()), 20000):.0f} "
          f"answered/s, no state kept")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
