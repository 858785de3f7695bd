"""Dovecot's imaptest compliance suite: protolab and Dovecot side by side, in one run.

    python -m tests.bench.imaptest [--groups NAME ...] [--keep-logs DIR]
    python -m tests.bench.imaptest --stress SECONDS [--clients 10]

imaptest (github.com/dovecot/imaptest) is not packaged and CI cannot fetch it: build it
first (the lab's notes: tools/imaptest/README.md, `build.sh`; the binary and its tests land
in ~/.cache/imaptest, or $IMAPTEST_HOME). Without it this prints why and exits 0.
Both servers get users imaptest and imaptest2 (password imaptest) in a temp directory;
Dovecot is Debian's dovecot-imapd, run privately on loopback (row left out if missing).
Printed: passed, failed, skipped per server (per test group, as imaptest counts them:
skipped = the server lacks a capability the group needs) and the failing groups.
--stress: imaptest's stress mode instead, as issue 14 measures it: `--clients` sessions on
one shared INBOX that imaptest fills to 30 messages from the build's realistic mbox,
`checkpoint=1` (every session's view checked against the others'), for SECONDS per server,
one server after the other; printed per server: commands/s, logins/s, average latency
of each command, errors, the sessions past the greeting on average (Dovecot's logins are
slow: most of its sessions wait there, and fewer send commands at once), and the ratios
protolab/Dovecot, with the load average.
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


STRESS_MESSAGES = 30
# The end of each second's counts: "  7/ 10", sessions past the greeting of all sessions
ACTIVE = re.compile(r"^\s*\d+(?:\s+\d+)+\s+(\d+)/\s*\d+")


def stress(binary: Path, port: int, seconds: int, clients: int, log: Path) -> dict[str, float]:
    """One imaptest stress run; returns totals per second and average ms per command."""
    source = HOME / "mbox" / "realistic-50.mbox"  # imaptest itself fills INBOX from it
    out = subprocess.run(
        [str(binary), "host=127.0.0.1", f"port={port}", "user=imaptest", "pass=imaptest",
         f"clients={clients}", f"secs={seconds}", f"mbox={source}",
         f"msgs={STRESS_MESSAGES}", "seed=123", "checkpoint=1"],
        capture_output=True, timeout=seconds + 120)
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    log.write_text(text)
    lines = text.splitlines()
    figures: dict[str, float] = {"errors": sum("Error: " in line for line in lines)}
    columns: list[str] = []
    latency: dict[str, list[float]] = {}
    active: list[int] = []
    for i, line in enumerate(lines):
        words = line.split()
        if columns and (past := ACTIVE.search(line)):
            active.append(int(past[1]))
        if words[:1] == ["Logi"]:
            columns = words  # the header: Logi List Stat Sele Fetc ... ChkP
        elif "ms/cmd avg" in line and columns:
            for name, value in zip(columns, words, strict=False):
                latency.setdefault(name, []).append(float(value))
        elif line.startswith("Totals:") and columns:
            # after the header and its two lines of percentages
            totals = [int(w) for w in lines[i + 4].split()[:len(columns)]] \
                if i + 4 < len(lines) else []
            for name, total in zip(columns, totals, strict=False):
                figures[f"{name}/s"] = total / seconds
            figures["commands/s"] = sum(totals) / seconds
    for name, values in latency.items():
        figures[f"{name} ms"] = sum(values) / len(values)
    if active:
        figures["sessions"] = sum(active) / len(active)
    return figures


def stress_main(binary: Path, seconds: int, clients: int) -> None:
    print(f"imaptest stress: {clients} clients, one INBOX of {STRESS_MESSAGES} messages, "
          f"checkpoint=1, {seconds} s per server; load average before: "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        (tmp / "dovecot").mkdir()
        ours, port = start_protolab(tmp, USERS)
        dovecot_port = free_port()
        theirs = start_dovecot(tmp / "dovecot", dovecot_port, USERS)
        try:
            for name, server_port in (("Dovecot", dovecot_port), ("protolab", port)):
                results[name] = stress(binary, server_port, seconds, clients,
                                       Path(tempfile.gettempdir()) / f"imaptest-stress-{name}.log")
        finally:
            for process in (ours, theirs):
                process.send_signal(signal.SIGTERM)
                process.wait(10)
    print(f"load average after: {os.getloadavg()[0]:.2f}; logs: "
          f"{tempfile.gettempdir()}/imaptest-stress-*.log")
    keys = ["commands/s", "Logi/s", "Fetc ms", "Sele ms", "Stor ms", "errors", "sessions"]
    print("| | " + " | ".join(keys) + " |\n" + "|---" * (len(keys) + 1) + "|")
    for name, figures in results.items():
        print(f"| {name} | " + " | ".join(f"{figures.get(k, float('nan')):.1f}" for k in keys)
              + " |")
    mine, theirs_ = results["protolab"], results["Dovecot"]
    if theirs_.get("commands/s"):
        print(f"ratio commands/s protolab/Dovecot = "
              f"{mine.get('commands/s', 0) / theirs_['commands/s']:.2f}x (goal >= 0.8x)")
    for name, key in (("FETCH", "Fetc ms"), ("STORE", "Stor ms")):
        if theirs_.get(key):
            print(f"ratio {name} latency protolab/Dovecot = "
                  f"{mine.get(key, 0) / theirs_[key]:.2f}x (goal <= 2x)")
    print("sessions: of the clients, those past the server's greeting on average (the "
          "rest wait for it: no command latency counted); a command's latency grows with "
          "the sessions that send at once")


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
    parser.add_argument("--stress", type=int, metavar="SECONDS", help="stress mode instead")
    parser.add_argument("--clients", type=int, default=10, help="stress mode's sessions")
    args = parser.parse_args()
    binary, tests = HOME / "bin" / "imaptest", HOME / "tests"
    if not binary.exists() or not tests.is_dir():
        print(f"skipped: no imaptest build at {HOME} (see the lab's tools/imaptest/README.md)")
        return
    if args.stress:
        if shutil.which("dovecot") is None:
            raise SystemExit("--stress needs dovecot (apt-get install dovecot-imapd)")
        stress_main(binary, args.stress, args.clients)
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
