"""DNS speed: dnsperf against the lab server and against dnsmasq, side by side.

    python3 -m tests.bench.dns [--seconds 4] [--rounds 2]

Both serve the same record (bench.lab.test A 10.1.2.3) from memory on loopback; dnsperf
asks for it over UDP for the same time against each, alternating for a few rounds. Prints
queries per second for both and the ratio of the best rounds (the target is at least 0.75x dnsmasq). The machine's
load is printed too: other work on the same cores skews both figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD = ("bench.lab.test", "10.1.2.3")


def dnsperf(port: int, queries: Path, seconds: int) -> float:
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                          "-l", str(seconds), "-c", "4", "-q", "200", "-t", "2"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not match:
        raise SystemExit(f"dnsperf said:\n{out}")
    print(f"    dnsperf: {match.group(1)} q/s, lost {lost.group(1) if lost else '?'}")
    return float(match.group(1))


def wait_for(process: subprocess.Popen, marker: str) -> None:
    for line in process.stdout:
        if marker in line:
            return
    raise SystemExit(f"server exited before '{marker}'")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--offset", type=int, default=31000)
    args = parser.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        queries = tmpdir / "queries"
        queries.write_text(f"{RECORD[0]} A\n")
        config = tmpdir / "lab.toml"
        config.write_text(f'[hosts]\nbench = "{RECORD[1]}"\n')
        lab_port = 53 + args.offset
        lab = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--only", "dns", "--config", str(config),
             "--data", str(tmpdir / "data"), "--bind", "127.0.0.1", "--port-offset",
             str(args.offset)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        peer_port = lab_port + 1
        dnsmasq = subprocess.Popen(
            ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
             "--listen-address=127.0.0.1", f"--port={peer_port}", "--pid-file",
             f"--host-record={RECORD[0]},{RECORD[1]}", "--log-facility=-"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lab, "protolab ready")
            wait_for(dnsmasq, "started")
            ours, theirs = [], []
            for round_ in range(1, args.rounds + 1):  # alternated: load changes hit both
                print(f"round {round_}: protolab dns on 127.0.0.1:{lab_port}")
                ours.append(dnsperf(lab_port, queries, args.seconds))
                print(f"round {round_}: dnsmasq on 127.0.0.1:{peer_port}")
                theirs.append(dnsperf(peer_port, queries, args.seconds))
        finally:
            for process in (lab, dnsmasq):
                process.terminate()
                process.wait(10)
    print(f"load average after: {os.getloadavg()}")
    best_ours, best_theirs = max(ours), max(theirs)
    print(f"best of {args.rounds}: protolab {best_ours:.0f} q/s, dnsmasq {best_theirs:.0f} q/s, "
          f"ratio {best_ours / best_theirs:.2f}x (target >= 0.75x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
