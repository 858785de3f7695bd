"""FTP speed: RETR of one big file over loopback, the lab's server vs vsftpd, side by side.

    python3 -m tests.bench.ftp [--size 1024] [--rounds 2]

Both serve the very same file (vsftpd's anonymous root is alice's lab home); curl fetches
it from each in turn (passive, binary, to /dev/null), for a few rounds. Prints bytes/s
for both and the ratio of the best rounds (target: at least 0.8x vsftpd; both use
sendfile). The load average is printed too: other work on the same cores skews both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench.lab import big_file, serve, stop
from tests.bench.rounds import best_of_rounds, report_ratio


def fetch(url: str) -> float:
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", url],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"curl {url}: {out.stderr.strip()}")
    return float(out.stdout)


def vsftpd_config(directory: Path, root: Path, port: int) -> Path:
    config = directory / "vsftpd.conf"
    config.write_text("\n".join([
        "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={port}",
        "background=NO", "anonymous_enable=YES", "no_anon_password=YES", "local_enable=NO",
        f"anon_root={root}", "write_enable=NO", "pasv_enable=YES",
        f"pasv_min_port={port + 100}", f"pasv_max_port={port + 199}", "seccomp_sandbox=NO",
        "xferlog_enable=NO", "use_sendfile=YES", f"vsftpd_log_file={directory / 'vsftpd.log'}",
        "secure_chroot_dir=/var/run/vsftpd/empty", "",
    ]))
    return config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--offset", type=int, default=32000)
    args = parser.parse_args()
    for tool in ("curl", "vsftpd"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"needs {tool}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "data"
        lab = vsftpd = None
        try:
            lab = serve("ftp", data, args.offset)
            home = data / "homes/alice"
            big_file(home / "big.bin", args.size)
            os.chmod(home, 0o755)
            vsftpd_port = args.offset + 1021
            vsftpd = subprocess.Popen(
                ["/usr/sbin/vsftpd", str(vsftpd_config(tmpdir, home, vsftpd_port))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            urls = {"protolab": f"ftp://alice:alice@127.0.0.1:{args.offset + 21}/big.bin",
                    "vsftpd": f"ftp://127.0.0.1:{vsftpd_port}/big.bin"}
            fetch(urls["vsftpd"])  # warms the page cache and waits for vsftpd to listen
            best = best_of_rounds({name: (lambda url=url: fetch(url)) for name, url in urls.items()},
                                  args.rounds, f"{args.size} MiB RETR")
            report_ratio(best, "protolab", "vsftpd", "target >= 0.8x")
        finally:
            stop(vsftpd, lab)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
