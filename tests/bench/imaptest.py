"""Dovecot's imaptest compliance suite: protolab and Dovecot side by side, in one run.

    python -m tests.bench.imaptest [--groups NAME ...] [--keep-logs DIR]

imaptest (github.com/dovecot/imaptest) is not packaged and CI cannot fetch it: build it
first (the lab's notes: tools/imaptest/README.md, `build.sh`; the binary and its tests land
in ~/.cache/imaptest, or $IMAPTEST_HOME). Without it this prints why and exits 0.
Both servers get users imaptest and imaptest2 (password imaptest) in a temp directory;
Dovecot is Debian's dovecot-imapd, run privately on loopback (row left out if missing).
Printed: passed, failed, skipped per server (per test group, as imaptest counts them:
skipped = the server lacks a capability the group needs) and the failing groups.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .imap import free_port, start_dovecot, start_protolab

HOME = Path(os.environ.get("IMAPTEST_HOME", Path.home() / ".cache" / "imaptest"))
USERS = {"imaptest": "imaptest", "imaptest2": "imaptest"}
SUMMARY = re.compile(rb"^(\d+) test groups: (\d+) failed, (\d+) skipped", re.M)


@dataclass
class Result:
    passed: int | str
    failed: int | str
    skipped: int | str
    failing: list[str]


def run(binary: Path, tests: Path, port: int, log: Path) -> Result:
    """One imaptest run over `tests` against 127.0.0.1:port."""
    out = subprocess.run(
        [str(binary), "host=127.0.0.1", f"port={port}", "user=imaptest", "pass=imaptest",
         "user2=imaptest2", "box=imaptest", f"test={tests}"],
        capture_output=True, timeout=900)
    text = out.stdout + out.stderr
    log.write_bytes(text)
    found = SUMMARY.findall(text)
    if not found:
        return Result("?", "?", "?", ["(no summary: see the log)"])
    groups, failed, skipped = (int(x) for x in found[-1])
    failing = sorted(set(re.findall(rb"^\*\*\* Test (\S+) ", text, re.M)))
    return Result(groups - failed - skipped, failed, skipped, [f.decode() for f in failing])


def chosen(tests: Path, groups: list[str], into: Path) -> Path:
    """A test directory of only these groups (and their mailboxes)."""
    into.mkdir()
    (into / "default.mbox").symlink_to(tests / "default.mbox")  # groups without their own
    for name in groups:
        for path in (tests / name, tests / f"{name}.mbox"):
            if path.exists():
                (into / path.name).symlink_to(path)
        if not (tests / name).exists():
            raise SystemExit(f"no imaptest group {name!r} in {tests}")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="*", default=[], help="only these test groups")
    parser.add_argument("--keep-logs", type=Path, help="copy the full logs here")
    args = parser.parse_args()
    binary, tests = HOME / "bin" / "imaptest", HOME / "tests"
    if not binary.exists() or not tests.is_dir():
        print(f"skipped: no imaptest build at {HOME} (see the lab's tools/imaptest/README.md)")
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        if args.groups:
            tests = chosen(tests, args.groups, tmp / "tests")
        servers = {}
        ours, port = start_protolab(tmp, USERS)
        servers["protolab"] = (ours, port)
        if shutil.which("dovecot"):
            (tmp / "dovecot").mkdir()
            dovecot_port = free_port()
            servers["Dovecot"] = (start_dovecot(tmp / "dovecot", dovecot_port, USERS),
                                  dovecot_port)
        results = {}
        try:
            for name, (_, server_port) in servers.items():
                results[name] = run(binary, tests, server_port, tmp / f"{name}.log")
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in results:
                shutil.copy(tmp / f"{name}.log", args.keep_logs / f"imaptest-{name}.log")
    info = (HOME / "BUILD-INFO").read_text().split("\n", 1)[0] if (HOME / "BUILD-INFO").exists() \
        else ""
    print(f"imaptest {info}".strip())
    print("| | passed | failed | skipped |\n|---|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result.passed} | {result.failed} | {result.skipped} |")
    for name, result in results.items():
        if result.failing:
            print(f"{name} failing: {' '.join(result.failing)}")


if __name__ == "__main__":
    main()
