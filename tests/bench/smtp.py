"""SMTP deliveries per second: protolab against aiosmtpd, side by side in one run.

    python -m tests.bench.smtp [--seconds S] [--rounds N] [--senders 10] [--size 10240]

Both servers run as subprocesses on loopback; one asyncio client process keeps `senders`
connections busy sending `size`-byte messages (MAIL, RCPT, DATA, wait for the 250: no
pipelining, as most clients) for S seconds per round, alternating servers so both see
the same machine load. Every delivery is durable before its 250 on both sides: protolab
commits to its SQLite store (synchronous=FULL); the aiosmtpd peer's handler writes each
message to a Maildir the way a careful MDA does (write to tmp/, fsync, rename into new/,
fsync the directory), off the event loop in a thread so that fsyncs of concurrent
sessions can overlap. Messages are counted in the stores afterwards, not just by replies.
Target: ratio >= 1.0; Mailpit publishes 200-300 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# --- the aiosmtpd peer (runs in its own process: --aiosmtpd PORT DIR) --------------------

def serve_aiosmtpd(port: int, maildir: Path) -> None:
    from aiosmtpd.controller import Controller

    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    counter = iter(range(10**9))

    def write(data: bytes) -> None:
        name = f"{time.time():.6f}.{os.getpid()}_{next(counter)}.bench"
        tmp = maildir / "tmp" / name
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, maildir / "new" / name)
        fd = os.open(maildir / "new", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            await asyncio.get_running_loop().run_in_executor(None, write, envelope.content)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            data_size_limit=25 * 1024 * 1024)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


# --- the load ------------------------------------------------------------------------

async def sender(port: int, body: bytes, deadline: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return line

    async def command(line: bytes, expect: bytes) -> None:
        writer.write(line)
        answer = await reply()
        if not answer.startswith(expect):
            raise RuntimeError(f"{line!r} -> {answer!r}")

    await reply()
    await command(b"EHLO bench\r\n", b"250")
    sent = 0
    while time.perf_counter() < deadline:
        await command(b"MAIL FROM:<load@bench.example>\r\n", b"250")
        await command(b"RCPT TO:<bob@lab.test>\r\n", b"250")
        await command(b"DATA\r\n", b"354")
        await command(body, b"250")
        sent += 1
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()
    return sent


def message(size: int) -> bytes:
    head = b"From: load@bench.example\r\nTo: bob@lab.test\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    lines = (size - len(head)) // len(line)
    return head + line * lines + b".\r\n"


def load(port: int, senders: int, size: int, seconds: float, warmup: float = 0.5
         ) -> tuple[int, int, float]:
    """(messages sent in all, of them in the measured part, its seconds): a short unmeasured
    warm-up first (a fresh store's first pages, the peer's thread pool)."""
    body = message(size)

    async def run(seconds: float) -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(sender(port, body, start + seconds)
                                        for _ in range(senders)))
        return sum(counts), time.perf_counter() - start

    warm, _ = asyncio.run(run(warmup))
    sent, elapsed = asyncio.run(run(seconds))
    return warm + sent, sent, elapsed


# --- servers -------------------------------------------------------------------------

def wait_for(process: subprocess.Popen, word: str) -> None:
    for line in process.stdout:
        if line.startswith(word):
            return
    raise SystemExit(f"server did not start: exit {process.wait()}")


def start_protolab(data: Path) -> tuple[subprocess.Popen, int]:
    offset = random.randrange(10000, 29000)
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "serve", "--data", str(data), "--bind", "127.0.0.1",
         "--port-offset", str(offset), "--only", "smtp"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    wait_for(process, "protolab ready")
    return process, 25 + offset


def start_aiosmtpd(maildir: Path) -> tuple[subprocess.Popen, int]:
    port = random.randrange(30000, 40000)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.smtp", "--aiosmtpd", str(port), str(maildir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    wait_for(process, "ready")
    return process, port


def stored_protolab(data: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from services.store import Store

    store = Store(data)
    try:
        return store.mail.status(store.mail.mailbox("bob", "INBOX").id).messages
    finally:
        store.close()


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--aiosmtpd", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.aiosmtpd:
        serve_aiosmtpd(int(args.aiosmtpd[0]), Path(args.aiosmtpd[1]))
        return
    print(f"{args.senders} senders, {args.size}-byte messages, {args.rounds} rounds of "
          f"{args.seconds:g} s per server; load average before: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    # Each server: how it starts on a fresh directory, and how many messages it stored there.
    servers = {
        "protolab": (start_protolab, stored_protolab),
        "aiosmtpd": (start_aiosmtpd, lambda maildir: len(os.listdir(maildir / "new"))),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, (start, stored_in) in servers.items():
                directory = Path(tmp) / f"{name}{round_}"
                process, port = start(directory)
                try:
                    acked, measured, elapsed = load(port, args.senders, args.size, args.seconds)
                finally:
                    stop(process)
                stored = stored_in(directory)
                assert stored == acked, f"{name} acknowledged {acked}, stored {stored}"
                rates[name].append(measured / elapsed)
            print(f"round {round_ + 1}: protolab {rates['protolab'][-1]:7.1f}/s   "
                  f"aiosmtpd {rates['aiosmtpd'][-1]:7.1f}/s", flush=True)
    ours, peer = (statistics.median(rates[k]) for k in ("protolab", "aiosmtpd"))
    print(f"protolab  {ours:7.1f} deliveries/s (median)")
    print(f"aiosmtpd  {peer:7.1f} deliveries/s (median; Maildir + fsync)")
    print(f"ratio     {ours / peer:7.2f}x  (target >= 1.0x; Mailpit publishes 200-300/s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
