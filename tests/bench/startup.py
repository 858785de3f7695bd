"""Start-up: from exec to the `protolab ready` line, and from SIGTERM to exit.

    python -m tests.bench.startup [--runs N] [--only NAMES]

Runs `protolab serve` with every registered service (or --only) on loopback, N times on a
fresh data directory (first start: the lab CA and certificate are made) and N times on
the same one (every later start). Target: ready within 1.0 s of exec on a 2-core machine
(GreenMail allows itself 2 s, aiosmtpd 5 s); stopped within 2 s of SIGTERM.
"""

from __future__ import annotations

import argparse
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


def once(data: Path, only: str) -> tuple[float, float]:
    offset = random.randrange(10000, 29000)
    command = [sys.executable, "-m", "services", "serve", "--data", str(data), "--bind",
               "127.0.0.1", "--port-offset", str(offset)] + (["--only", only] if only else [])
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    for line in process.stdout:
        if line.startswith("protolab ready"):
            break
    else:
        raise SystemExit(f"serve failed: {process.wait()} {process.stderr.read()}")
    ready = time.perf_counter() - start
    stop_start = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    stopped = time.perf_counter() - stop_start
    if code != 0:
        raise SystemExit(f"serve exited {code} on SIGTERM: {process.stderr.read()}")
    return ready, stopped


def report(label: str, values: list[float], target: float) -> None:
    median = statistics.median(values)
    print(f"{label:<28} median {median:6.3f} s  min {min(values):6.3f}  max {max(values):6.3f}"
          f"  target {target:.1f} s  ({'ok' if median <= target else 'OVER'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default=",".join(registry.names()))
    args = parser.parse_args()
    print(f"services: {args.only or 'none'}; {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        cold = [once(Path(tmp) / f"cold{i}", args.only) for i in range(args.runs)]
        warm = [once(Path(tmp) / "warm", args.only) for _ in range(args.runs)]
    report("exec -> ready, first start", [r for r, _ in cold], 1.0)
    report("exec -> ready, later starts", [r for r, _ in warm], 1.0)
    report("SIGTERM -> exit", [s for _, s in cold + warm], 2.0)


if __name__ == "__main__":
    main()
