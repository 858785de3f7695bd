"""DNS speed: dnsperf against the lab server and against dnsmasq, side by side.

    python3 -m tests.bench.dns [--seconds 4] [--rounds 2] [--seed 21] [--files one,nxdomain,mix]

Both serve the same names from memory on loopback: ten hosts h0..h9.lab.test (A), the
domain's MX, and NXDOMAIN for every other name under lab.test. dnsperf sends each query file
over UDP for the same time against each, alternating for a few rounds. The query files
(generated from the seed, so every run asks the same):
  one       one name, repeated (what the whole-reply cache serves)      target >= 0.75x
  nxdomain  400,000 distinct random names under lab.test                target >= 0.5x
  mix       60% A of the ten hosts, 10% AAAA, 10% MX, 20% distinct random names
                                                                        target >= 0.8x
Prints queries per second for both and the ratio of the best rounds. The machine's load is
printed too: other work on the same cores skews both figures.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOSTS = [(f"h{i}.lab.test", f"10.1.2.{i + 10}") for i in range(10)]
MAIL = ("mail.lab.test", "10.1.2.99")
TARGETS = {"one": 0.75, "nxdomain": 0.5, "mix": 0.8}
DISTINCT = 400_000


def random_name(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(letters) for _ in range(rng.randint(5, 14))) + ".lab.test"


def query_lines(kind: str, rng: random.Random) -> list[str]:
    """A query file's lines: every random name distinct (a set keeps them so)."""
    if kind == "one":
        return [f"{HOSTS[0][0]} A"]
    names: set[str] = set()
    while len(names) < (DISTINCT if kind == "nxdomain" else DISTINCT // 5):
        names.add(random_name(rng))
    if kind == "nxdomain":
        return [f"{name} A" for name in names]
    lines = [f"{name} A" for name in names]
    for _ in range(DISTINCT - len(lines)):
        pick = rng.random() * 0.8
        host = rng.choice(HOSTS)[0]
        lines.append(f"{host} A" if pick < 0.6 else f"{host} AAAA" if pick < 0.7 else "lab.test MX")
    rng.shuffle(lines)
    return lines


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


def wait_for(process: subprocess.Popen[str], marker: str) -> None:
    assert process.stdout is not None  # both are started with stdout=PIPE
    for line in process.stdout:
        if marker in line:
            return
    raise SystemExit(f"server exited before '{marker}'")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--offset", type=int, default=31000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--files", default=",".join(TARGETS))
    args = parser.parse_args()
    kinds = args.files.split(",")
    if not set(kinds) <= set(TARGETS):
        raise SystemExit(f"--files: choose from {','.join(TARGETS)}")
    for tool in ("dnsperf", "dnsmasq"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        rng = random.Random(args.seed)
        files = {}
        for kind in kinds:
            files[kind] = tmpdir / f"{kind}.queries"
            files[kind].write_text("\n".join(query_lines(kind, rng)) + "\n")
        config = tmpdir / "lab.toml"
        hosts = "".join(f'{name.split(".")[0]} = "{address}"\n' for name, address in [*HOSTS, MAIL])
        config.write_text(f'[hosts]\n{hosts}[smtp]\nhost = "mail"\n')
        records = [f"--host-record={name},{address}" for name, address in [*HOSTS, MAIL]]
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
             "--local=/lab.test/", f"--mx-host=lab.test,{MAIL[0]},10", *records,
             "--log-facility=-"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lab, "protolab ready")
            wait_for(dnsmasq, "started")
            ours: dict[str, list[float]] = {kind: [] for kind in kinds}
            theirs: dict[str, list[float]] = {kind: [] for kind in kinds}
            for round_ in range(1, args.rounds + 1):  # alternated: load changes hit both
                for kind in kinds:
                    print(f"round {round_}, {kind}: protolab dns on 127.0.0.1:{lab_port}")
                    ours[kind].append(dnsperf(lab_port, files[kind], args.seconds))
                    print(f"round {round_}, {kind}: dnsmasq on 127.0.0.1:{peer_port}")
                    theirs[kind].append(dnsperf(peer_port, files[kind], args.seconds))
        finally:
            for process in (lab, dnsmasq):
                process.terminate()
                process.wait(10)
    print(f"load average after: {os.getloadavg()}")
    print(f"best of {args.rounds} rounds, seed {args.seed}:")
    print(f"  {'query file':<10} {'protolab':>12} {'dnsmasq':>12} {'ratio':>7}  target")
    for kind in kinds:
        best_ours, best_theirs = max(ours[kind]), max(theirs[kind])
        print(f"  {kind:<10} {best_ours:>10.0f}/s {best_theirs:>10.0f}/s "
              f"{best_ours / best_theirs:>6.2f}x  >= {TARGETS[kind]}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
