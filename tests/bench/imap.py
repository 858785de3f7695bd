"""IMAP: protolab against Dovecot (Debian's dovecot-imapd) on loopback, measured in one run.

    python -m tests.bench.imap [--clients 10] [--seconds 6] [--messages 200]

Both servers get the same user (alice/alice) and the same messages, appended over IMAP.
Then, for each server in turn: `--clients` processes (imaplib, one connection each) run
a mix of SELECT, FETCH 1:* (FLAGS), FETCH of a whole message, SEARCH and STORE for
`--seconds`, then as many LOGIN/LOGOUT connections as they can for `--seconds`. Printed:
commands/s, logins/s, p50/p99 command latency, and protolab/Dovecot ratios (target:
commands/s >= 0.3x Dovecot). Dovecot runs with its own config in a temp directory
(passwd-file, maildir, default service settings) as its Debian package builds it.
"""

from __future__ import annotations

import argparse
import imaplib
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIX = ["SELECT", "FETCH FLAGS", "FETCH BODY", "SEARCH", "STORE"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)  # the server is starting; its port is its only ready signal
    raise SystemExit(f"no IMAP greeting on port {port}")


def message(i: int) -> bytes:
    body = "".join(f"Line {j} of message {i}: the quick brown fox jumps over the lazy dog.\r\n"
                   for j in range(30 + i % 40))
    return (f"From: Bob <bob@lab.test>\r\nTo: Alice <alice@lab.test>\r\n"
            f"Subject: message {i} {'urgent' if i % 7 == 0 else 'report'}\r\n"
            f"Date: Sun, 22 Nov 2026 04:{i % 60:02d}:00 +0000\r\nMessage-ID: <{i}@lab.test>\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()


def populate(port: int, count: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login("alice", "alice")
    for i in range(count):
        client.append("INBOX", None, None, message(i))
    client.logout()


def worker(args: tuple[int, float, int, int]) -> tuple[list[float], int]:
    port, seconds, count, seed = args
    rng = random.Random(seed)
    latencies: list[float] = []
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login("alice", "alice")
    client.select("INBOX")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kind = rng.choice(MIX)
        n = rng.randint(1, count)
        start = time.perf_counter()
        if kind == "SELECT":
            typ, _ = client.select("INBOX")
        elif kind == "FETCH FLAGS":
            typ, _ = client.fetch("1:*", "(FLAGS)")
        elif kind == "FETCH BODY":
            typ, _ = client.fetch(str(n), "(BODY.PEEK[])")
        elif kind == "SEARCH":
            typ, _ = client.search(None, rng.choice(["UNSEEN", "FLAGGED", 'SUBJECT "urgent"']))
        else:
            typ, _ = client.store(str(n), rng.choice(["+FLAGS", "-FLAGS"]), "(\\Flagged)")
        latencies.append(time.perf_counter() - start)
        if typ != "OK":
            raise SystemExit(f"{kind} answered {typ}")
    client.logout()
    logins = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c = imaplib.IMAP4("127.0.0.1", port)
        c.login("alice", "alice")
        c.logout()
        logins += 1
    return latencies, logins


def measure(name: str, port: int, clients: int, seconds: float, count: int) -> dict[str, float]:
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(worker, [(port, seconds, count, i) for i in range(clients)])
    latencies = sorted(one for lat, _ in results for one in lat)
    figures = {
        "commands/s": len(latencies) / seconds,
        "logins/s": sum(n for _, n in results) / seconds,
        "p50 ms": statistics.median(latencies) * 1000,
        "p99 ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }
    print(f"{name:<9} " + "  ".join(f"{k} {v:8.1f}" for k, v in figures.items()), flush=True)
    return figures


DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{tmp}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={tmp}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def start_dovecot(tmp: Path, port: int, users: dict[str, str] | None = None) -> subprocess.Popen:
    (tmp / "mail").mkdir()
    shutil.chown(tmp / "mail", "dovecot", "dovecot")
    users = users or {"alice": "alice"}
    (tmp / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    conf = tmp / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(tmp=tmp, port=port))
    process = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stderr=subprocess.PIPE)
    wait_port(port)
    return process


def start_protolab(tmp: Path, users: dict[str, str] | None = None
                   ) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if users:
        env["PROTOLAB_USERS"] = ",".join(f"{u}:{p}" for u, p in users.items())
    for _ in range(5):
        offset = random.randrange(10000, 29000)
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--only", "imap", "--data",
             str(tmp / "data"), "--bind", "127.0.0.1", "--port-offset", str(offset)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            if line.startswith("protolab ready"):
                return process, 143 + offset
        process.wait()
    raise SystemExit("protolab serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("dovecot") is None:
        raise SystemExit("needs dovecot (apt-get install dovecot-imapd)")
    print(f"{args.clients} clients, {args.seconds:.0f} s per phase, {args.messages} messages; "
          f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        ours, port = start_protolab(tmp)
        dovecot_port = free_port()
        (tmp / "dovecot").mkdir()
        dovecot = start_dovecot(tmp / "dovecot", dovecot_port)
        try:
            populate(port, args.messages)
            populate(dovecot_port, args.messages)
            theirs = measure("dovecot", dovecot_port, args.clients, args.seconds, args.messages)
            mine = measure("protolab", port, args.clients, args.seconds, args.messages)
        finally:
            ours.send_signal(signal.SIGTERM)
            ours.wait(10)
            dovecot.send_signal(signal.SIGTERM)
            dovecot.wait(10)
    for key in ("commands/s", "logins/s"):
        print(f"ratio {key:<11} protolab/dovecot = {mine[key] / theirs[key]:.2f}x"
              + ("  (target >= 0.3x)" if key == "commands/s" else ""))
    print(f"ratio p99 latency   protolab/dovecot = {mine['p99 ms'] / theirs['p99 ms']:.2f}x")


if __name__ == "__main__":
    main()
