"""SMB speed: smbclient get and put of one big file, and a get of many small ones, the
lab's server vs Samba's smbd, side by side.

    python3 -m tests.bench.smb [--size 200] [--rounds 2] [--files 1000]
    python3 -m tests.bench.smb --logins 1000

With --logins N: N sequential connections that log in, leave a file open half the time
and vanish (no CLOSE, no LOGOFF); prints logins/s and the server's open descriptors and
RSS before and after (tests/smb/test_resources.py does a smaller count and asserts).

A private smbd (its own smb.conf, state and passdb in a temp directory, loopback port)
shares the very same directory as the lab's `alice` share; Samba's smbclient gets the
file from each in turn, then puts it back (into a directory of its own on each side), then
gets --files files of 4 KiB (`prompt; mget *`), for a few rounds. Prints bytes/s and the
ratio of the best rounds (aim: 0.7x smbd for get and put, 0.5x for small files; issue 15).
Both speak SMB 3.1.1 to smbclient. The load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.lab import CHUNK, big_file, serve, stop
from tests.bench.rounds import best_of_rounds, report_ratio
from tests.hardening import rss_kib
from tests.smb.test_resources import login_and_drop, settle

SMALL = 4096  # bytes of each small file


def get(port: int, share: str, user: str, password: str, size: int) -> float:
    return transfer(port, share, user, password, size, "get big.bin /dev/null")


def put(port: int, share: str, user: str, password: str, size: int, source: Path) -> float:
    return transfer(port, share, user, password, size, f"put {source} put.bin")


def mget(port: int, share: str, user: str, password: str, size: int, into: Path) -> float:
    """All of small/ into `into` (the working directory: where mget writes)."""
    return transfer(port, share, user, password, size, "prompt; mget *", "-D", "small", cwd=into)


def transfer(port: int, share: str, user: str, password: str, size: int, command: str,
             *options: str, cwd: Path | None = None) -> float:
    started = time.monotonic()
    out = subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U",
                          f"{user}%{password}", *options, "-c", command],
                         capture_output=True, text=True, timeout=600, cwd=cwd)
    elapsed = time.monotonic() - started
    if out.returncode or "NT_STATUS" in out.stdout + out.stderr:
        raise SystemExit(f"smbclient on {port}: {out.stdout}{out.stderr}")
    return size / elapsed


def small(directory: Path, count: int) -> None:
    directory.mkdir()
    for number in range(count):
        (directory / f"f{number:05d}.bin").write_bytes(os.urandom(SMALL))


def smbd_config(directory: Path, share: Path, uploads: Path, port: int) -> Path:
    state = directory / "samba"
    for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    config = directory / "smb.conf"
    config.write_text(f"""[global]
    server role = standalone server
    smb ports = {port}
    interfaces = 127.0.0.1
    bind interfaces only = yes
    lock directory = {state / 'lock'}
    state directory = {state / 'state'}
    cache directory = {state / 'cache'}
    private dir = {state / 'private'}
    pid directory = {state / 'pid'}
    ncalrpc dir = {state / 'ncalrpc'}
    passdb backend = tdbsam:{state / 'private/passdb.tdb'}
    log file = {state / 'log.%m'}
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    disable netbios = yes
[alice]
    path = {share}
    read only = yes
[uploads]
    path = {uploads}
    read only = no
""")
    return config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--files", type=int, default=1000, help="small files (4 KiB) for mget")
    parser.add_argument("--offset", type=int, default=33000)
    parser.add_argument("--logins", type=int, default=0, help="measure N vanishing logins instead")
    args = parser.parse_args()
    if args.logins:
        return logins(args.logins, args.offset)
    for tool in ("smbclient", "smbd", "smbpasswd"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}")
    print(f"load average before: {os.getloadavg()}")
    size = args.size * CHUNK
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "data"
        lab = smbd = None
        try:
            lab = serve("smb", data, args.offset)
            home = data / "homes/alice"
            big_file(home / "big.bin", args.size)
            smbd_port = args.offset + 1445
            uploads = tmpdir / "uploads"
            uploads.mkdir()
            config = smbd_config(tmpdir, home, uploads, smbd_port)
            # smbd needs a system user: root, with the password "bench", in its own passdb.
            subprocess.run(["smbpasswd", "-c", str(config), "-a", "-s", "root"],
                           input="bench\nbench\n", text=True, check=True, capture_output=True)
            smbd = subprocess.Popen(["smbd", "--foreground", "--no-process-group",
                                     f"--configfile={config}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peers = {"protolab": (args.offset + 445, "alice", "alice"),
                     "smbd": (smbd_port, "root", "bench")}
            deadline = time.monotonic() + 20
            while True:  # smbd prints no ready line: a first get is the readiness probe
                try:
                    get(smbd_port, "alice", "root", "bench", size)
                    break
                except SystemExit:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            best = best_of_rounds(
                {name: (lambda p=peer: get(p[0], "alice", p[1], p[2], size))
                 for name, peer in peers.items()}, args.rounds, f"{args.size} MiB get")
            report_ratio(best, "protolab", "smbd", "aim 0.7x")
            source = home / "big.bin"
            targets = {"protolab": "alice", "smbd": "uploads"}
            best = best_of_rounds(
                {name: (lambda p=peer, n=name: put(p[0], targets[n], p[1], p[2], size, source))
                 for name, peer in peers.items()}, args.rounds, f"{args.size} MiB put")
            report_ratio(best, "protolab", "smbd", "aim 0.7x")
            small(home / "small", args.files)
            downloads = tmpdir / "downloads"
            downloads.mkdir()
            best = best_of_rounds(
                {name: (lambda p=peer: mget(p[0], "alice", p[1], p[2], args.files * SMALL,
                                            downloads))
                 for name, peer in peers.items()}, args.rounds, f"{args.files} x 4 KiB mget")
            report_ratio(best, "protolab", "smbd", "aim 0.5x")
        finally:
            stop(smbd, lab)
    print(f"load average after: {os.getloadavg()}")
    return 0


def logins(count: int, offset: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lab = serve("smb", Path(tmp) / "data", offset)
        try:
            port = offset + 445
            for _ in range(20):
                login_and_drop(port, open_file=True)
            fds, rss = settle(lab.pid, 0, timeout=2), rss_kib(lab.pid)
            started = time.monotonic()
            for number in range(count):
                login_and_drop(port, open_file=number % 2 == 0)
            elapsed = time.monotonic() - started
            after = settle(lab.pid, fds + 3)
            print(f"{count} logins in {elapsed:.1f} s ({count / elapsed:.0f}/s); "
                  f"open fds {fds} -> {after}; RSS {rss} -> {rss_kib(lab.pid)} KiB; "
                  f"load average {os.getloadavg()}")
        finally:
            stop(lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
