"""Helpers shared by the FTP, SMB and path tests (not a test module)."""

from __future__ import annotations

import ftplib
import io
import json
import signal
import subprocess
from pathlib import Path


def ftp_login(server, user: str = "alice", password: str | None = None,
              tls: bool = False) -> ftplib.FTP:
    ftp = ftplib.FTP_TLS() if tls else ftplib.FTP()
    ftp.connect("127.0.0.1", server.port("ftp", "ftp"), timeout=15)
    if tls:
        ftp.auth()
    ftp.login(user, user if password is None else password)
    if tls:
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    return ftp


def put(ftp: ftplib.FTP, name: str, data: bytes) -> str:
    return ftp.storbinary(f"STOR {name}", io.BytesIO(data))


def get(ftp: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def journal(data: Path, service: str) -> list[dict]:
    """Every journal event of `service` (call after the server stopped: it flushed)."""
    events = []
    for path in sorted((data / "journal").glob("*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in events if e["service"] == service]


class Capture:
    """A loopback capture with a filter (tcpdump, packet-buffered, so that nothing is left
    in a kernel block at stop); tshark dissects it; `bad()` lists malformed/error items."""

    def __init__(self, tmp_path: Path, capture_filter: str, decode_as: tuple[str, ...] = ()
                 ) -> None:
        """decode_as: tshark -d rules ("tcp.port==10021,ftp") for ports off the standard."""
        self.file = tmp_path / "capture.pcap"
        self.decode = [arg for rule in decode_as for arg in ("-d", rule)]
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", str(self.file),
             capture_filter],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on lo, ..." once the capture runs.
        lines = []
        while not lines or "listening on" not in lines[-1]:
            lines.append(self.process.stderr.readline())
            assert lines[-1], lines

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # tcpdump writes what it has, then exits
        self.process.wait(10)

    def count(self, display_filter: str) -> int:
        out = subprocess.run(["tshark", "-r", str(self.file), *self.decode, "-Y", display_filter],
                             capture_output=True, text=True, timeout=120).stdout
        return len(out.splitlines())

    def bad(self, protocol: str) -> list[str]:
        out = subprocess.run(
            ["tshark", "-r", str(self.file), *self.decode, "-Y",
             f"({protocol}) && (_ws.malformed || _ws.expert.severity == error)"],
            capture_output=True, text=True, timeout=120).stdout
        return out.splitlines()


def smbclient(server, share: str, commands: str, user: str = "alice",
              password: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    """Samba's smbclient against the lab's SMB port (-U USER%PASS, or -N when user is "")."""
    auth = ["-N"] if not user else ["-U", f"{user}%{user if password is None else password}"]
    return subprocess.run(
        ["smbclient", f"//127.0.0.1/{share}", "-p", str(server.port("smb", "smb")), *auth,
         *extra, "-c", commands], capture_output=True, text=True, timeout=120)
