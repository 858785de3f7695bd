"""What benchmarks share: a lab server to measure, and a big file for it to serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20


def wait_for(process: subprocess.Popen, marker: str) -> None:
    for line in process.stdout:
        if marker in line:
            return
    raise SystemExit(f"server exited before '{marker}'")


def serve(only: str, data: Path, offset: int) -> subprocess.Popen:
    """`protolab serve --only ONLY` on loopback, returned once it is ready."""
    lab = subprocess.Popen(
        [sys.executable, "-m", "services", "serve", "--only", only, "--data", str(data),
         "--bind", "127.0.0.1", "--port-offset", str(offset)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(lab, "protolab ready")
    return lab


def big_file(path: Path, mib: int) -> Path:
    """MIB mebibytes of random data (one random MiB repeated: writing stays fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(CHUNK)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(block)
    return path


def stop(*processes: subprocess.Popen | None) -> None:
    """End the servers a benchmark started (those that did start)."""
    for process in processes:
        if process is not None:
            process.terminate()
            process.wait(10)
