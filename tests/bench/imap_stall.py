"""IMAP: the worst stall a probe session sees while another session runs one heavy command.

    python -m tests.bench.imap_stall [--messages 2000] [--kib 50] [--parts 5000] [--flood-mib 200]

A protolab IMAP server on loopback gets `--messages` messages of `--kib` KiB in alice's
INBOX (written straight into its store, as a second process on the same data directory
would), and one message of `--parts` MIME parts in the mailbox "Parts". A probe session
(logged in as bob) sends NOOP every 10 ms and times each answer; for each heavy command
run by another session (after its SELECT, which is not measured) the worst probe round
trip is printed, with the command's own time and the server's RSS (VmRSS) after it:

    search   UID SEARCH TEXT "needle" over INBOX (no message contains it)
    fetch    FETCH 1:* BODY.PEEK[] of INBOX (the reader drains it as fast as it can)
    parts    FETCH 1 (BODYSTRUCTURE BODY.PEEK[4000]) of the message of many parts
    flood    before login, one command of endless 64 KiB non-synchronising literals
             (`--flood-mib` MiB in all)
"""

from __future__ import annotations

import argparse
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

from tests.bench.lab import serve, stop


class Probe(threading.Thread):
    """NOOP every 10 ms; `worst()` is the longest answer since the last `reset()`."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.sock.sendall(b"l LOGIN bob bob\r\n")
        self._until(b"l ")
        self.running = True
        self.times: list[float] = []
        self.lock = threading.Lock()

    def _until(self, tag: bytes) -> None:
        while not self.file.readline().startswith(tag):
            pass

    def run(self) -> None:
        n = 0
        while self.running:
            n += 1
            tag = b"p%d" % n
            start = time.perf_counter()
            self.sock.sendall(tag + b" NOOP\r\n")
            self._until(tag + b" ")
            with self.lock:
                self.times.append(time.perf_counter() - start)
            time.sleep(0.01)

    def reset(self) -> None:
        with self.lock:
            self.times = []

    def worst(self) -> tuple[float, int]:
        with self.lock:
            return max(self.times, default=0.0) * 1000, len(self.times)


def session(port: int, user: str = "alice") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"l LOGIN {user} {user}\r\n".encode())
    read_until(sock, b"l ")
    return sock


def read_until(sock: socket.socket, tag: bytes) -> int:
    """Read and drop everything up to the tagged line; returns the bytes read."""
    total, tail = 0, b"\r\n"
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit(f"connection closed while waiting for {tag!r}")
        total += len(chunk)
        tail = (tail + chunk)[-(1 << 16):]
        if b"\r\n" + tag in tail and tail.endswith(b"\r\n"):
            return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def populate(data: Path, messages: int, kib: int, parts: int) -> None:
    from services.store import Store

    store = Store(data)
    filler = ("the quick brown fox jumps over the lazy dog %d\r\n" * 1).encode()
    body = b"".join(filler % i for i in range(kib * 1024 // len(filler % 0)))
    batch = []
    for i in range(messages):
        batch.append(("alice", "INBOX", b"From: Bob <bob@lab.test>\r\nSubject: message %d\r\n"
                      b"\r\n" % i + body))
        if len(batch) == 100:
            store.mail.append_many(batch)
            batch = []
    if batch:
        store.mail.append_many(batch)
    store.mail.create_mailbox("alice", "Parts")
    many = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(parts)) + b"--b--\r\n"
    store.mail.append("alice", "Parts", many)
    store.close()


def flood(port: int, mib: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.recv(1000)
    chunk = b"x" * 65536 + b" {65536+}\r\n"
    sock.sendall(b"f LOGIN {65536+}\r\n")
    try:
        for _ in range(mib * 16):
            sock.sendall(chunk)
    except OSError:
        pass  # the server closed the connection: a defined limit
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=50)
    parser.add_argument("--parts", type=int, default=5000)
    parser.add_argument("--flood-mib", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        offset = random.randrange(10000, 29000)
        lab = serve("imap", data, offset)
        try:
            port = 143 + offset
            started = time.perf_counter()
            populate(data, args.messages, args.kib, args.parts)
            print(f"{args.messages} x {args.kib} KiB + one message of {args.parts} parts "
                  f"stored in {time.perf_counter() - started:.1f} s; server RSS "
                  f"{rss_kib(lab.pid) // 1024} MiB", flush=True)
            probe = Probe(port)
            probe.start()
            heavy = session(port)

            def command(text: bytes) -> None:
                heavy.sendall(b"h " + text + b"\r\n")
                read_until(heavy, b"h ")

            runs = [("search", b"SELECT INBOX", lambda: command(b'UID SEARCH TEXT "needle"')),
                    ("fetch", b"SELECT INBOX", lambda: command(b"FETCH 1:* BODY.PEEK[]")),
                    ("parts", b"SELECT Parts",
                     lambda: command(b"FETCH 1 (BODYSTRUCTURE BODY.PEEK[4000])")),
                    ("flood", b"NOOP", lambda: flood(port, args.flood_mib))]
            for name, setup, run in runs:
                command(setup)  # not measured: the stall is the heavy command's
                time.sleep(0.1)  # a few quiet probes first
                probe.reset()
                started = time.perf_counter()
                run()
                took = time.perf_counter() - started
                time.sleep(0.05)
                worst, probes = probe.worst()
                print(f"{name:<7} took {took:6.2f} s  worst probe stall {worst:8.1f} ms "
                      f"({probes} probes)  server RSS {rss_kib(lab.pid) // 1024} MiB",
                      flush=True)
            probe.running = False
            probe.join(5)
        finally:
            stop(lab)


if __name__ == "__main__":
    main()
