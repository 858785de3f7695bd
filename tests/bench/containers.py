"""The image: its size, and the all-in-one container's start-up, next to the same lab
started as a plain process on this host.

    python -m tests.bench.containers [--runs N]      (as root, with podman: setup.sh)

Builds the image on the stand-in base (tests/containers/setup.sh; the official
python:3.12-slim cannot be pulled here), then prints: the base's size, the image's, what
the image adds (the venv and the user), and N times each from `podman run` to the
`protolab ready` line (all registered services, one container) against `protolab serve` as
a process on loopback. Target: the image adds under 60 MB; ready within 2 s of `run`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.containers import engine


def container_ready() -> tuple[float, float]:
    """Seconds from `podman run` to the ready line, and protolab's own figure (exec to
    ready, inside the container)."""
    start = time.perf_counter()
    name = engine.run("podman", "run", "-d", "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
                      engine.IMAGE).stdout.strip()
    try:
        logs = subprocess.Popen(["podman", "logs", "-f", name], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        for line in logs.stdout:
            if line.startswith("protolab ready"):
                wall = time.perf_counter() - start
                inner = float(line.split(" in ", 1)[1].split(" s", 1)[0])
                logs.kill()
                logs.wait()
                return wall, inner
        raise SystemExit(f"no ready line: {engine.run('podman', 'logs', name).stderr}")
    finally:
        engine.run("podman", "rm", "-f", "-t", "2", name, check=False)


def process_ready() -> float:
    with tempfile.TemporaryDirectory() as data:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--data", data, "--bind", "127.0.0.1",
             "--port-offset", "21000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=engine.ROOT)
        for line in process.stdout:
            if line.startswith("protolab ready"):
                break
        wall = time.perf_counter() - start
        process.terminate()
        process.wait(10)
        return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with engine.exclusive():
        python_image = engine.prepare()
        engine.build(python_image)
        base = engine.image_size(python_image)
        image = engine.image_size(engine.IMAGE)
        venv = engine.run("podman", "run", "--rm", "--entrypoint", "du", engine.IMAGE,
                          "-sb", "/opt/protolab").stdout.split()[0]
        print(f"base {python_image}: {base / 1e6:.0f} MB; image {engine.IMAGE}: "
              f"{image / 1e6:.0f} MB; the image adds {(image - base) / 1e6:.0f} MB "
              f"(venv {int(venv) / 1e6:.0f} MB)")
        walls, inners, plains = [], [], []
        for _ in range(args.runs):  # alternated, so that the machine's load hits both alike
            wall, inner = container_ready()
            walls.append(wall)
            inners.append(inner)
            plains.append(process_ready())
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"all-in-one container, run -> ready: median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}); exec -> ready inside: median "
              f"{statistics.median(inners):.2f} s")
        print(f"plain process on this host, exec -> ready: median "
              f"{statistics.median(plains):.2f} s; container / process: "
              f"{statistics.median(walls) / statistics.median(plains):.2f}x "
              f"({args.runs} runs each, load average {load})")


if __name__ == "__main__":
    main()
