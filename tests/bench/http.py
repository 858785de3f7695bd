"""HTTP benchmark: protolab's web server vs plain `twist web --path` and nginx, side by side.

    python3 -m tests.bench.http [--seconds 5] [--big-mb 100]

1. A small static page (the same file for all three), wrk with 20 connections: requests/s.
   Target: protolab >= 1.5x twist web.
2. A big file over one connection with curl: bytes/s. Target: protolab >= 0.8x nginx.

Everything listens on 127.0.0.1 on free ports; nginx runs as a private instance with its
own configuration (one worker, sendfile on, no access log) in a temporary directory.
The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
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
SMALL = ("<!doctype html>\n<html><head><title>bench</title></head><body>\n"
         + "<p>A small static page for the benchmark.</p>\n" * 8 + "</body></html>\n").encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t2", "-c20", f"-d{seconds}s", url], capture_output=True,
                         text=True, timeout=seconds + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk {url}:\n{out}")
    return float(match.group(1))


def download(url: str, size: int, runs: int) -> float:
    """Median bytes/s of `runs` downloads of `url` with curl over one connection."""
    speeds = []
    for _ in range(runs):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                              "%{size_download} %{speed_download}", url],
                             capture_output=True, text=True, timeout=300).stdout.split()
        if int(out[0]) != size:
            raise RuntimeError(f"{url}: got {out[0]} bytes, expected {size}")
        speeds.append(float(out[1]))
    return statistics.median(speeds)


def start_protolab(work: Path) -> tuple[subprocess.Popen, int, Path]:
    data = work / "data"
    offset = free_port() - 80
    while True:
        try:
            for port in (offset + 80, offset + 443):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            break
        except OSError:
            offset = free_port() - 80
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "serve", "--only", "http", "--data", str(data),
         "--bind", "127.0.0.1", "--port-offset", str(offset)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in process.stdout:
        if line.startswith("protolab ready"):
            break
    else:
        raise RuntimeError("protolab serve did not get ready")
    return process, offset + 80, data / "homes" / "alice" / "public_html"


def start_twist(site: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(["twist", "web", "--path", str(site), "--listen",
                                f"tcp:{port}:interface=127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def start_nginx(site: Path, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    types {{ text/html html; application/octet-stream bin; }}
    server {{ listen 127.0.0.1:{port}; root {site}; }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per server")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the big file")
    parser.add_argument("--runs", type=int, default=3, help="downloads of the big file each")
    args = parser.parse_args()
    for tool in ("wrk", "curl", "nginx", "twist"):
        if shutil.which(tool) is None:
            print(f"needs {tool}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="protolab-bench-http-"))
    work.chmod(0o755)  # nginx workers run as www-data
    site = work / "site"
    site.mkdir()
    (site / "small.html").write_bytes(SMALL)
    big_size = args.big_mb * 1024 * 1024
    with open(site / "big.bin", "wb") as handle:
        block = os.urandom(1024 * 1024)
        for _ in range(args.big_mb):
            handle.write(block)
    processes = []
    try:
        lab, lab_port, public_html = start_protolab(work)
        processes.append(lab)
        for name in ("small.html", "big.bin"):
            os.link(site / name, public_html / name)  # the very same files
        twist, twist_port = start_twist(site)
        processes.append(twist)
        nginx, nginx_port = start_nginx(site, work)
        processes.append(nginx)
        urls = {"protolab": f"http://127.0.0.1:{lab_port}/~alice/",
                "twist web": f"http://127.0.0.1:{twist_port}/",
                "nginx": f"http://127.0.0.1:{nginx_port}/"}
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores, shared)")
        print(f"\nsmall page ({len(SMALL)} bytes), wrk -t2 -c20 -d{args.seconds}s:")
        rps = {}
        for name, base in urls.items():
            wrk(base + "small.html", 1)  # warm up (caches, connections)
            rps[name] = wrk(base + "small.html", args.seconds)
            print(f"  {name:<10} {rps[name]:>10.0f} requests/s")
        print(f"  protolab / twist web = {rps['protolab'] / rps['twist web']:.2f}x (target >= 1.5)")
        print(f"  protolab / nginx     = {rps['protolab'] / rps['nginx']:.2f}x")
        print(f"\nbig file ({args.big_mb} MB), one connection, curl, median of {args.runs}:")
        bps = {}
        for name, base in urls.items():
            bps[name] = download(base + "big.bin", big_size, args.runs)
            print(f"  {name:<10} {bps[name] / 1e6:>10.0f} MB/s")
        print(f"  protolab / nginx     = {bps['protolab'] / bps['nginx']:.2f}x (target >= 0.8)")
        print(f"  protolab / twist web = {bps['protolab'] / bps['twist web']:.2f}x")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
