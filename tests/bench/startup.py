"""Start-up: from exec to the `protolab ready` line, and from SIGTERM to exit.

    python -m tests.bench.startup [--runs N] [--only NAMES] [--bind ADDR]

Runs `protolab serve` with every registered service (or --only) on loopback, N times on a
fresh data directory (first start: the lab CA and certificate are made) and N times on
the same one (every later start). Target: ready within 1.0 s of exec on a 2-core machine
(GreenMail allows itself 2 s, aiosmtpd 5 s); stopped within 2 s of SIGTERM.

The package's bytecode is compiled first, as pip does when it installs protolab (this
machine sets PYTHONDONTWRITEBYTECODE, which would otherwise make every start compile
every module). Besides wall time it prints the CPU time the server used until ready,
which other load on the machine does not inflate.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services import registry

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def once(data: Path, only: str, bind: str) -> tuple[float, float, float]:
    offset = random.randrange(10000, 29000)
    command = [sys.executable, "-m", "services", "serve", "--data", str(data), "--bind",
               bind, "--port-offset", str(offset)] + (["--only", only] if only else [])
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    for line in process.stdout:
        if line.startswith("protolab ready"):
            break
    else:
        raise SystemExit(f"serve failed: {process.wait()} {process.stderr.read()}")
    ready = time.perf_counter() - start
    cpu = cpu_seconds(process.pid)
    stop_start = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    stopped = time.perf_counter() - stop_start
    if code != 0:
        raise SystemExit(f"serve exited {code} on SIGTERM: {process.stderr.read()}")
    return ready, cpu, stopped


def report(label: str, values: list[float], target: float) -> None:
    median = statistics.median(values)
    print(f"{label:<28} median {median:6.3f} s  min {min(values):6.3f}  max {max(values):6.3f}"
          f"  target {target:.1f} s  ({'ok' if median <= target else 'OVER'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default=",".join(registry.names()))
    parser.add_argument("--bind", default="127.0.0.1",
                        help="the lab's bind address (:: for both families: twice the sockets)")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "services", quiet=1)
    with open("/proc/loadavg") as load:
        print(f"services: {args.only or 'none'} on {args.bind}; {args.runs} runs each; "
              f"load average {load.read().split()[0]} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        cold = [once(Path(tmp) / f"cold{i}", args.only, args.bind) for i in range(args.runs)]
        warm = [once(Path(tmp) / "warm", args.only, args.bind) for _ in range(args.runs)]
    report("exec -> ready, first start", [r for r, _, _ in cold], 1.0)
    report("exec -> ready, later starts", [r for r, _, _ in warm], 1.0)
    report("CPU used until ready", [c for _, c, _ in cold + warm], 1.0)
    report("SIGTERM -> exit", [s for _, _, s in cold + warm], 2.0)


if __name__ == "__main__":
    main()
