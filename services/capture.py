"""`protolab capture`: record the lab's traffic, and export captures that decrypt themselves.

`capture start` runs tcpdump in the background (DATA/captures/lab-TIME.pcap) and records
it in DATA/captures/running.json; `capture stop` ends it. `capture export OUT.pcapng`
cuts a capture down to one client (an address, or a lab user's own sessions from the
journal) and a time window, and embeds the TLS secrets of exactly the sessions left in a
Decryption Secrets Block (what `editcap --inject-secrets` writes): Wireshark and tshark
then show HTTPS, IMAPS, SMTPS, POP3S and FTPS decrypted with no key log to set, and one
student's file never holds another's secrets.

A key-log line names its session by the ClientHello's random (NSS key log format), so
the export keeps the lines whose random is in a ClientHello of the cut capture. The random
is read from the first bytes of the TCP payload that carries the ClientHello (a TLS record
header, then the handshake header): that finds STARTTLS sessions on any port, where
tshark would need a decode-as rule per port to dissect them.

tcpdump and editcap (Wireshark's, in Debian's wireshark-common, which tshark pulls in) do
the work: both are what a class has anyway, and pcapng's secrets block is theirs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .journal import read as read_journal
from .running import alive

if TYPE_CHECKING:
    from .cli import Commands


class CaptureError(Exception):
    """What a user did not have or did wrong, as one line."""


@dataclass
class Capturing:
    pid: int
    file: str
    interface: str
    filter: str
    started: float


def state_path(data: Path) -> Path:
    return data / "captures" / "running.json"


def running(data: Path) -> Capturing | None:
    """The capture `capture start` left running for this data directory, if it still runs."""
    try:
        found = Capturing(**json.loads(state_path(data).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return found if alive(found.pid) else None


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        package = {"tcpdump": "tcpdump", "editcap": "wireshark-common", "tshark": "tshark"}[name]
        raise CaptureError(f"{name} is not installed (Debian/Ubuntu: apt install {package})")
    return found


def start(data: Path, interface: str, bpf: str = "", output: Path | None = None) -> Capturing:
    """Start tcpdump; returns once it captures (its "listening on" line)."""
    if (already := running(data)) is not None:
        raise CaptureError(f"a capture is already running (pid {already.pid}, {already.file}); "
                           "protolab capture stop ends it")
    tcpdump = _tool("tcpdump")
    directory = data / "captures"
    directory.mkdir(parents=True, exist_ok=True)
    if output is None:
        output = directory / f"lab-{datetime.now().strftime('%Y%m%d-%H%M%S')}.pcap"
    # Immediate mode and -U: each packet is read and written as it comes, so an export
    # while it runs sees everything so far and a stop loses nothing waiting in a buffer;
    # -Z root keeps tcpdump writing into the data directory after it drops privileges.
    command = [tcpdump, "-i", interface, "--immediate-mode", "-U", "-Z", "root", "-w", str(output)]
    if bpf:
        command.append(bpf)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    said: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        said.append(line.strip())
        if "listening on" in line:
            break
    else:
        process.wait()
        raise CaptureError(f"tcpdump could not capture on {interface}: "
                           f"{said[-1] if said else 'exit ' + str(process.returncode)}")
    process.stderr.close()  # tcpdump's later lines (the count at its end) go nowhere
    found = Capturing(process.pid, str(output), interface, bpf, time.time())
    state_path(data).write_text(json.dumps(asdict(found)))
    return found


def stop(data: Path, timeout: float = 10) -> Capturing:
    found = running(data)
    state_path(data).unlink(missing_ok=True)
    if found is None:
        raise CaptureError("no capture is running (protolab capture start begins one)")
    os.kill(found.pid, signal.SIGTERM)  # tcpdump writes what it holds, then exits
    deadline = time.monotonic() + timeout
    while _alive(found.pid):
        if time.monotonic() > deadline:
            os.kill(found.pid, signal.SIGKILL)
            break
        # Polled: tcpdump is not this process's child (an earlier `capture start` made it),
        # so there is no wait() to block on.
        time.sleep(0.05)
    return found


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child (start and stop in one process), now reaped
    except ChildProcessError:
        pass  # not our child: the usual case, `capture start` was another process
    return alive(pid)


# --- export ------------------------------------------------------------------------------

def user_sessions(journal: Path, user: str) -> set[tuple[str, int]]:
    """(address, port) of the client's end of every session USER logged in to. A session's
    events carry its user from its successful login on (the login's own event too)."""
    peers: dict[str, str] = {}
    theirs: set[str] = set()
    for event in read_journal(journal):
        session = event.get("session", "")
        peers.setdefault(session, event.get("peer", ""))
        if event.get("user") == user:
            theirs.add(session)
    found = set()
    for session in theirs:
        host, _, port = peers[session].rpartition(":")
        if host and port.isdigit():
            found.add((host.strip("[]"), int(port)))
    return found


def display_filter(client: str = "", sessions: set[tuple[str, int]] | None = None,
                   since: float | None = None, until: float | None = None) -> str:
    """The tshark filter for one client address and/or these sessions (TCP, or QUIC's UDP), in a window;
    "" keeps everything. An empty set of sessions keeps nothing."""
    parts = []
    if client:
        parts.append(f"{_family(client)}.addr == {client}")
    if sessions is not None:
        ends = [f"({_family(host)}.addr == {host} && (tcp.port == {port} || udp.port == {port}))"
                for host, port in sorted(sessions)]
        parts.append("(" + (" || ".join(ends) or "frame.number == 0") + ")")
    if since is not None:
        parts.append(f"frame.time_epoch >= {since:.6f}")
    if until is not None:
        parts.append(f"frame.time_epoch <= {until:.6f}")
    return " && ".join(parts)


def _family(address: str) -> str:
    return "ipv6" if ":" in address else "ip"


def client_randoms(pcap: Path) -> set[str]:
    """The random (hex) of every TLS ClientHello whose record starts a TCP payload, and of
    every QUIC Initial's ClientHello (tshark decrypts Initials without keys: their keys
    come from the connection ID, RFC 9001 5.2; its QUIC heuristic finds them on any port)."""
    result = subprocess.run(
        [_tool("tshark"), "-r", str(pcap), "-Y", "tcp.len >= 43 || (quic && tls.handshake.type == 1)",
         "-T", "fields", "-E", "separator=;", "-e", "tcp.payload", "-e", "tls.handshake.random"],
        capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise CaptureError(f"tshark could not read {pcap}: {result.stderr.strip()[-200:]}")
    found = set()
    for line in result.stdout.splitlines():
        tcp, _, quic = line.partition(";")
        payload = tcp.replace(":", "")
        # record: type 22 (handshake), version 3.x, length; handshake: type 1 (ClientHello),
        # length (3), client version (2), then the 32 random bytes
        if payload.startswith("1603") and payload[10:12] == "01":
            found.add(payload[22:86].lower())
        elif not payload and quic:
            found.update(random.replace(":", "").lower() for random in quic.split(","))
    return found


def secrets_for(keylog: Path, randoms: set[str]) -> list[str]:
    """The key-log lines of exactly those sessions (NSS format: LABEL RANDOM SECRET)."""
    kept = []
    with open(keylog, encoding="ascii", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 3 and fields[1].lower() in randoms:
                kept.append(line.rstrip("\n"))
    return kept


def export(source: Path, out: Path, keylog: Path | None, client: str = "",
           sessions: set[tuple[str, int]] | None = None, since: float | None = None,
           until: float | None = None) -> tuple[int, int]:
    """Write OUT (pcapng) with the matching packets and their sessions' secrets embedded.
    Returns (packets, sessions with secrets)."""
    tshark, editcap = _tool("tshark"), _tool("editcap")
    if not source.is_file():
        raise CaptureError(f"{source}: no such capture")
    wanted = display_filter(client, sessions, since, until)
    with tempfile.TemporaryDirectory(prefix="protolab-export-") as tmp:
        cut = Path(tmp) / "cut.pcapng"
        command = [tshark, "-r", str(source), "-F", "pcapng", "-w", str(cut)]
        if wanted:
            command += ["-Y", wanted]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise CaptureError(f"tshark could not cut {source}: {result.stderr.strip()[-200:]}")
        packets = _count(cut)
        lines = secrets_for(keylog, client_randoms(cut)) if keylog and keylog.is_file() else []
        if lines:
            keys = Path(tmp) / "keys.log"
            keys.write_text("\n".join(lines) + "\n")
            result = subprocess.run([editcap, "--inject-secrets", f"tls,{keys}", str(cut),
                                     str(out)], capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise CaptureError(f"editcap failed: {result.stderr.strip()[-200:]}")
        else:
            shutil.copyfile(cut, out)
    randoms = {line.split()[1] for line in lines}
    return packets, len(randoms)


def export_for(data: Path, source: Path, out: Path, keylog: Path | None, who: str = "",
               since: float | None = None, until: float | None = None) -> tuple[int, int]:
    """export() for `who`: a client address (all its traffic), a lab user (the sessions the
    journal says they logged in to), or "" (everyone)."""
    if who and not _is_address(who):
        return export(source, out, keylog, "", user_sessions(data / "journal", who), since, until)
    return export(source, out, keylog, who, None, since, until)


def _count(pcap: Path) -> int:
    result = subprocess.run([_tool("tshark"), "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
                            capture_output=True, text=True, timeout=600)
    return len(result.stdout.split())


# --- the commands ----------------------------------------------------------------------

def add_commands(commands: Commands) -> None:
    common = commands.common
    capture = commands.add(
        "capture", help="record the lab's traffic; export captures that decrypt themselves")
    sub = capture.add_subparsers(dest="action", required=True, metavar="ACTION")
    begin = sub.add_parser("start", help="start tcpdump in the background (root or CAP_NET_RAW)")
    common(begin)
    begin.add_argument("--interface", "-i", metavar="IF",
                       help="where to listen (default: the `net up` bridge, else lo for a lab "
                            "on 127.0.0.1, else any)")
    begin.add_argument("--filter", metavar="BPF", default="", help="a tcpdump filter")
    begin.add_argument("--output", "-w", metavar="FILE",
                       help="the pcap to write (default DATA/captures/lab-TIME.pcap)")
    end = sub.add_parser("stop", help="stop the running capture")
    common(end)
    out = sub.add_parser("export", help="one client's traffic, its TLS secrets embedded (pcapng)")
    common(out)
    out.add_argument("out", metavar="OUT.pcapng")
    out.add_argument("--client", metavar="ADDRESS|USER",
                     help="an address (all its traffic) or a lab user (the sessions they "
                          "logged in to); default: everyone")
    out.add_argument("--since", metavar="TIME", help="ISO time (2026-12-02T10:15) or epoch seconds")
    out.add_argument("--until", metavar="TIME")
    out.add_argument("--from", dest="source", metavar="PCAP",
                     help="the capture to cut (default: the running or the latest one)")
    out.add_argument("--keylog", metavar="FILE", help="the key log (default: [tls] keylog)")
    capture.set_defaults(func=lambda args: run(args, commands))


def run(args: argparse.Namespace, commands: Commands) -> int:
    data = commands.data(args)
    try:
        if args.action == "start":
            interface = args.interface or default_interface(data)
            found = start(data, interface, args.filter, Path(args.output) if args.output else None)
            print(f"capturing on {found.interface} into {found.file} (pid {found.pid}); "
                  "protolab capture stop ends it")
        elif args.action == "stop":
            found = stop(data)
            print(f"stopped; the capture is {found.file}")
        else:
            since, until = _when(args.since), _when(args.until)
            source = Path(args.source) if args.source else latest(data)
            keylog = Path(args.keylog) if args.keylog else (
                Path(commands.config(args).tls.keylog) if commands.config(args).tls.keylog else None)
            packets, secrets = export_for(data, source, Path(args.out), keylog, args.client or "",
                                          since, until)
            note = "" if keylog else " (no key log: set [tls] keylog to embed TLS secrets)"
            print(f"wrote {args.out}: {packets} packets, secrets of {secrets} TLS sessions{note}")
    except CaptureError as error:
        raise commands.Error(str(error)) from None
    return 0


def default_interface(data: Path) -> str:
    from .labnet import load_state
    from .running import find

    net = load_state()
    if net is not None:
        return net.bridge
    lab = find(data)
    return "lo" if lab is not None and lab.bind.startswith("127.") else "any"


def latest(data: Path) -> Path:
    found = running(data)
    if found is not None:
        return Path(found.file)
    captures = sorted((data / "captures").glob("*.pcap*"), key=lambda p: p.stat().st_mtime)
    if not captures:
        raise CaptureError(f"no capture in {data / 'captures'} (protolab capture start makes one)")
    return captures[-1]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise CaptureError(f"--since/--until: {text!r} is not an ISO time or epoch seconds") from None
