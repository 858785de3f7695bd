"""DHCP speed: DORA exchanges per second for 1000 simulated clients through the server core.

    python3 -m tests.bench.dhcp [--clients 1000]

Each client sends DISCOVER, takes the OFFER, sends REQUEST and gets its ACK: bytes in and
bytes out of the sans-IO core, as the UDP listener drives it. Measured twice: with leases
in memory (the logic alone) and with the lab store (every ACK durable in SQLite first, as
served). Checks that no address was given twice. There is no peer to measure side by side:
dnsmasq cannot be driven without sockets and a broadcast domain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from services.dhcp import codec
from services.dhcp.core import DHCPCore, MemoryBackend, Pool
from services.dhcp.server import StoreBackend

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    rate, given = run(DHCPCore(POOL, MemoryBackend()), args.clients)
    assert len(set(given)) == len(given), "an address was given twice"
    print(f"memory leases: {rate:.0f} DORA/s, {len(set(given))} distinct addresses for "
          f"{args.clients} clients")
    with tempfile.TemporaryDirectory() as tmp:
        from services.store import Store

        store = Store(Path(tmp) / "data")
        rate, given = run(DHCPCore(POOL, StoreBackend(store.net)), args.clients)
        held = [lease.ip for lease in store.net.leases()]
        store.close()
    assert len(set(given)) == len(given) == len(set(held)) == len(held), "an address was given twice"
    print(f"store leases (durable ACK): {rate:.0f} DORA/s, {len(set(held))} distinct leases, "
          f"{args.clients} clients")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
