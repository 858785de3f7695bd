"""HTTP benchmark: protolab's web server vs plain `twist web --path` and nginx, side by side.

    python3 -m tests.bench.http [--seconds 3] [--rounds 5] [--big-mb 100] [--runs 9] [--also DIR]
                                [--stall-only]

1. A small static page (the same file for all three), wrk with 20 connections: requests/s.
   Target: protolab >= 1.5x twist web, >= 0.35x nginx.
2. The same page over HTTP/2 in cleartext (h2c, prior knowledge), h2load with 20
   connections of 10 concurrent streams each: requests/s, protolab against nginx (twist
   web speaks HTTP/2 only over TLS). Target: protolab >= 0.3x nginx.
3. A big file over one connection with curl, --runs downloads each, interleaved: bytes/s.
   Target: protolab >= 0.8x nginx.
4. The reactor's worst stall: a probe fetching a small page in a loop on its own
   connection while another client lists a directory of --listing files in /~alice/
   (protolab only). Target: a few tens of milliseconds.

Everything listens on 127.0.0.1 on free ports; nginx runs as a private instance with its
own configuration in a temporary directory. The comparison is meant to be fair:
- one process each: nginx has worker_processes 1 (protolab and twist web are one Python
  process on one reactor), sendfile on, no access log (protolab's journal stays on: it is
  part of the lab);
- the same page bytes: the servers serve the very same files (hard links); the size of
  each server's response head is printed, since their headers differ;
- keep-alive for all: wrk and h2load reuse their connections, nginx's keepalive_requests
  is raised so it never closes them in a run (protolab and twist web never do);
- the same clients, pinned the same way: wrk -t2 -c20 and h2load -t2 -c20 -m10 for each
  server, one server at a time, each after a one-second warm-up run (and one download of
  the big file each before its rounds);
- interleaved: each round measures every server once, and the median of the rounds is
  the figure (each round's figures are printed too), so that other users' load on the
  shared machine does not fall on one server's runs only.
--also DIR measures a second protolab checkout (say, main's, from `git archive`) in the
same run, next to this one: the before and after of a change.
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
import threading
import time
from collections.abc import Callable
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


def h2load(url: str, seconds: int) -> float:
    out = subprocess.run(["h2load", "-c20", "-m10", "-t2", f"-D{seconds}", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    failed = re.search(r"(\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not match or not failed or failed.groups() != ("0", "0") or not codes or \
            any(n != "0" for n in codes.groups()[1:]):
        raise RuntimeError(f"h2load {url}:\n{out}")
    return float(match.group(1))


def download(url: str, size: int) -> float:
    """Bytes/s of one download of `url` with curl over one connection."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                          "%{size_download} %{speed_download}", url],
                         capture_output=True, text=True, timeout=300).stdout.split()
    if int(out[0]) != size:
        raise RuntimeError(f"{url}: got {out[0]} bytes, expected {size}")
    return float(out[1])


def interleaved(measures: dict[str, Callable[[], float]], rounds: int,
                unit: str) -> dict[str, float]:
    """Each server's median over `rounds` rounds, every round measuring each server in
    turn: the machine is shared, and a burst of someone else's load then falls on one
    round of every server rather than on all of one server's runs."""
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"  {name:<10} {medians[name]:>10.0f} {unit} (rounds: "
              f"{', '.join(f'{v:.0f}' for v in values)})")
    return medians


def fetch(connection: socket.socket, path: str) -> bytes:
    """One keep-alive GET on `connection`; the body (the lab always sends a length)."""
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: www\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        body += connection.recv(65536)
    return body


def stall(port: int, public_html: Path, files: int, rounds: int = 10) -> None:
    """Worst latency of a probe's small GETs while directory listings are served."""
    directory = public_html / "many"
    directory.mkdir(exist_ok=True)
    for number in range(files):
        (directory / f"file{number:06d}.txt").touch()
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with socket.create_connection(("127.0.0.1", port)) as connection:
            while not done.is_set():
                started = time.perf_counter()
                fetch(connection, "/lab/http/basic.html")
                latencies.append(time.perf_counter() - started)

    with socket.create_connection(("127.0.0.1", port)) as connection:
        idle = []
        for _ in range(2000):
            started = time.perf_counter()
            fetch(connection, "/lab/http/basic.html")
            idle.append(time.perf_counter() - started)
        thread = threading.Thread(target=probe)
        thread.start()
        listing_times = []
        for _ in range(rounds):
            started = time.perf_counter()
            size = len(fetch(connection, "/~alice/many/"))
            listing_times.append(time.perf_counter() - started)
        done.set()
        thread.join()
    print(f"\nstall: listing of {files} files ({size} bytes) x {rounds}, probe on its own "
          "connection:")
    print(f"  listing median {statistics.median(listing_times) * 1000:.1f} ms")
    for name, figures in (("alone", idle), ("during listings", latencies)):
        ordered = sorted(figures)
        print(f"  probe {name}: median {statistics.median(ordered) * 1000:.2f} ms, 99% "
              f"{ordered[len(ordered) * 99 // 100] * 1000:.1f} ms, worst "
              f"{ordered[-1] * 1000:.1f} ms ({len(ordered)} probes)")


def head_size(url: str, *options: str) -> int:
    """Bytes of the response head (status line and headers) curl gets for `url`."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_header}", *options,
                          url], capture_output=True, text=True, timeout=30).stdout
    return int(out)


def start_protolab(work: Path, root: Path = ROOT) -> tuple[subprocess.Popen, int, Path]:
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
        stdout=subprocess.PIPE, stderr=(work / "protolab.err").open("w"), text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)})
    for line in process.stdout:
        if line.startswith("protolab ready"):
            break
    else:
        raise RuntimeError("protolab serve did not get ready:\n"
                           + (work / "protolab.err").read_text()[-2000:])
    return process, offset + 80, data / "homes" / "alice" / "public_html"


def start_twist(site: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(["twist", "web", "--path", str(site), "--listen",
                                f"tcp:{port}:interface=127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def start_nginx(site: Path, work: Path) -> tuple[subprocess.Popen, int, int]:
    """nginx on two ports: HTTP/1.1, and h2c (prior knowledge) for h2load."""
    port, h2_port = free_port(), free_port()
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
    server {{ listen 127.0.0.1:{port}; listen 127.0.0.1:{h2_port} http2; root {site}; }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    wait_port(h2_port)
    return process, port, h2_port


def also_ratio(figures: dict[str, float]) -> None:
    if "--also" in figures:
        print(f"  --also / nginx       = {figures['--also'] / figures['nginx']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3,
                        help="wrk and h2load duration per server and round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of wrk and h2load (each server once per round)")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the big file")
    parser.add_argument("--runs", type=int, default=9, help="downloads of the big file each")
    parser.add_argument("--listing", type=int, default=20_000,
                        help="files in the directory the stall probe lists")
    parser.add_argument("--stall-only", action="store_true", help="only measure the stall")
    parser.add_argument("--also", type=Path, metavar="DIR",
                        help="another protolab checkout to measure in the same run")
    args = parser.parse_args()
    if args.stall_only:
        work = Path(tempfile.mkdtemp(prefix="protolab-bench-http-"))
        lab, lab_port, public_html = start_protolab(work)
        try:
            stall(lab_port, public_html, args.listing)
        finally:
            lab.send_signal(signal.SIGTERM)
            lab.wait(10)
            shutil.rmtree(work, ignore_errors=True)
        return 0
    for tool in ("wrk", "h2load", "curl", "nginx", "twist"):
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
        also_port = 0
        if args.also is not None:
            (work / "also").mkdir()
            also, also_port, also_html = start_protolab(work / "also", args.also.resolve())
            processes.append(also)
            for name in ("small.html", "big.bin"):
                os.link(site / name, also_html / name)
        twist, twist_port = start_twist(site)
        processes.append(twist)
        nginx, nginx_port, nginx_h2_port = start_nginx(site, work)
        processes.append(nginx)
        urls = {"protolab": f"http://127.0.0.1:{lab_port}/~alice/",
                "twist web": f"http://127.0.0.1:{twist_port}/",
                "nginx": f"http://127.0.0.1:{nginx_port}/"}
        if also_port:
            urls["--also"] = f"http://127.0.0.1:{also_port}/~alice/"
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores, shared)")
        if also_port:
            print(f"--also is {args.also}")
        print("\nresponse head of the small page, bytes: " + ", ".join(
            f"{name} {head_size(base + 'small.html')}" for name, base in urls.items()))
        print(f"\nsmall page ({len(SMALL)} bytes), wrk -t2 -c20 -d{args.seconds}s, median of "
              f"{args.rounds} rounds:")
        for base in urls.values():
            wrk(base + "small.html", 1)  # warm up (caches, connections)
        rps = interleaved({name: lambda base=base: wrk(base + "small.html", args.seconds)
                           for name, base in urls.items()}, args.rounds, "requests/s")
        print(f"  protolab / twist web = {rps['protolab'] / rps['twist web']:.2f}x (target >= 1.5)")
        print(f"  protolab / nginx     = {rps['protolab'] / rps['nginx']:.2f}x (target >= 0.35)")
        also_ratio(rps)
        print(f"\nsmall page over HTTP/2 (h2c), h2load -c20 -m10 -D{args.seconds}, median of "
              f"{args.rounds} rounds:")
        h2_urls = {"protolab": urls["protolab"],
                   "nginx": f"http://127.0.0.1:{nginx_h2_port}/"}
        if also_port:
            h2_urls["--also"] = urls["--also"]
        print("  response head, bytes: " + ", ".join(
            f"{name} {head_size(base + 'small.html', '--http2-prior-knowledge')}"
            for name, base in h2_urls.items()))
        for base in h2_urls.values():
            h2load(base + "small.html", 1)
        h2_rps = interleaved({name: lambda base=base: h2load(base + "small.html", args.seconds)
                              for name, base in h2_urls.items()}, args.rounds, "requests/s")
        print(f"  protolab / nginx     = {h2_rps['protolab'] / h2_rps['nginx']:.2f}x "
              "(target >= 0.3)")
        also_ratio(h2_rps)
        print(f"\nbig file ({args.big_mb} MB), one connection, curl, median of {args.runs}:")
        for base in urls.values():  # warm-up: the first read of the file just written was
            download(base + "big.bin", big_size)  # slow, and fell on the first server only
        bps = interleaved({name: lambda base=base: download(base + "big.bin", big_size) / 1e6
                           for name, base in urls.items()}, args.runs, "MB/s")
        print(f"  protolab / nginx     = {bps['protolab'] / bps['nginx']:.2f}x (target >= 0.8)")
        also_ratio(bps)
        print(f"  protolab / twist web = {bps['protolab'] / bps['twist web']:.2f}x")
        stall(lab_port, public_html, args.listing)
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
