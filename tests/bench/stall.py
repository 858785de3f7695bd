"""How long one client's heavy command holds up everyone else (issue 11: no single command
may block other sessions for more than a few tens of milliseconds).

    python -m tests.bench.stall [--rounds N]

Starts an all-in-one lab (HTTP, IMAP, SMB, DNS) on a fresh data directory, gives alice a
2,000-message INBOX, a message of 3,000 MIME parts, a 20,000-file directory in her web space
and the zone 2,000 more records, then runs two probe sessions, HTTP GET / and IMAP NOOP,
each every 10 ms on its own keep-alive connection, while one heavy command at a time runs on
another session. Printed per heavy command: its own duration, and for each probe the worst
latency and the p99 seen while it ran (a probe that answers in 1 ms when idle and 400 ms
during a SEARCH was stalled about 400 ms by it).
"""

from __future__ import annotations

import argparse
import http.client
import imaplib
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.lab import serve, stop

OFFSET = 24000
HOST = "127.0.0.1"
MESSAGES = 2000
PARTS = 3000
FILES = 20000
RECORDS = 2000
INTERVAL = 0.010


def port(base: int) -> int:
    return base + OFFSET


def populate(data: Path) -> None:
    from services.store import Store

    store = Store(data)
    rng = random.Random(7)
    words = ["lab", "packet", "wireshark", "mail", "needle", "router", "switch", "frame"]
    store.mail.append_many([("alice", "INBOX", b"Subject: message %d\r\n\r\n" % i +
                             " ".join(rng.choice(words) for _ in range(400)).encode() + b"\r\n")
                            for i in range(MESSAGES)])
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(PARTS))
    store.mail.append("alice", "INBOX", b"Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: "
                      b"multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n")
    store.net.add_records((f"host{i}.lab.test", "A", f"10.0.{i // 256 % 256}.{i % 256}")
                          for i in range(RECORDS))
    big = store.files.web("alice") / "big"
    big.mkdir()
    for i in range(FILES):
        (big / f"file-{i:05d}.txt").write_bytes(b"x")
    store.close()


class Probe(threading.Thread):
    """Sends one request every INTERVAL and records (start, latency) of each."""

    def __init__(self, name: str, connect: Callable[[], Callable[[], None]]) -> None:
        super().__init__(daemon=True, name=name)
        self.once = connect()
        self.samples: list[tuple[float, float]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            start = time.monotonic()
            self.once()
            self.samples.append((start, time.monotonic() - start))
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - start)))

    def during(self, begin: float, end: float) -> list[float]:
        return [latency for start, latency in self.samples if begin <= start <= end
                or start < begin < start + latency]


def http_probe() -> Callable[[], None]:
    connection = http.client.HTTPConnection(HOST, port(80), timeout=60)

    def once() -> None:
        connection.request("GET", "/")
        connection.getresponse().read()
    return once


def imap_login() -> imaplib.IMAP4:
    client = imaplib.IMAP4(HOST, port(143), timeout=600)
    client.login("alice", "alice")
    return client


def imap_probe() -> Callable[[], None]:
    client = imap_login()
    return lambda: client.noop()


def heavy_commands() -> dict[str, Callable[[], None]]:
    imap = imap_login()
    imap.select("INBOX")
    smb = _smb()
    return {
        f"IMAP SEARCH TEXT ({MESSAGES} messages)": lambda: imap.search(None, "TEXT", "needle"),
        f"IMAP FETCH 1:* BODY[] ({MESSAGES} messages)": lambda: imap.fetch("1:*", "(BODY.PEEK[])"),
        f"IMAP FETCH BODYSTRUCTURE ({PARTS} parts)":
            lambda: imap.fetch(str(MESSAGES + 1), "(BODYSTRUCTURE)"),
        f"HTTP listing of {FILES} files": lambda: _http_get("/~alice/big/"),
        f"SMB listing of {FILES} files": lambda: smb.listPath("alice", "public_html\\big\\*"),
        f"DNS AXFR ({RECORDS}+ records)": _axfr,
    }


def _http_get(path: str) -> None:
    connection = http.client.HTTPConnection(HOST, port(80), timeout=600)
    connection.request("GET", path)
    connection.getresponse().read()
    connection.close()


def _smb():
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection("FILES", HOST, sess_port=port(445), timeout=600)
    connection.login("alice", "alice")
    return connection


def _axfr() -> None:
    import dns.query
    import dns.zone

    dns.zone.from_xfr(dns.query.xfr(HOST, "lab.test", port=port(53), timeout=600))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each heavy command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="protolab-stall-") as tmp:
        data = Path(tmp) / "data"
        lab = serve("http,imap,smb,dns", data, OFFSET)
        try:
            print(f"populating: {MESSAGES} messages, {PARTS} MIME parts, {FILES} files, "
                  f"{RECORDS} DNS records ...", flush=True)
            populate(data)
            probes = [Probe("HTTP GET /", http_probe), Probe("IMAP NOOP", imap_probe)]
            for probe in probes:
                probe.start()
            time.sleep(1)  # idle figures first: what a probe costs when nothing is heavy
            print(header([p.name for p in probes]), flush=True)
            print(row("(idle)", 0.0, [p.during(0, time.monotonic()) for p in probes]), flush=True)
            for name, command in heavy_commands().items():
                durations, seen = [], [[] for _ in probes]
                for _ in range(args.rounds):
                    begin = time.monotonic()
                    command()
                    end = time.monotonic()
                    durations.append(end - begin)
                    time.sleep(0.2)  # let the probes answer what was queued behind it
                    for i, probe in enumerate(probes):
                        seen[i] += probe.during(begin, end)
                print(row(name, max(durations), seen), flush=True)
            for probe in probes:
                probe.running = False
        finally:
            stop(lab)


def header(probe_names: list[str]) -> str:
    line = f"{'heavy command':<44} {'took':>8}"
    for name in probe_names:
        line += f" | {name + ' worst':>18} {'p99':>8}"
    return line


def row(name: str, took: float, seen: list[list[float]]) -> str:
    line = f"{name:<44} {took * 1000:7.0f}ms"
    for latencies in seen:
        if len(latencies) > 1:
            p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
            line += f" | {max(latencies) * 1000:16.1f}ms {p99 * 1000:6.1f}ms"
        elif latencies:
            line += f" | {latencies[0] * 1000:16.1f}ms {'-':>8}"
        else:
            line += f" | {'-':>18} {'-':>8}"
    return line


if __name__ == "__main__":
    main()
