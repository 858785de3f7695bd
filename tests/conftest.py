"""Shared fixtures: a real `protolab serve` in a subprocess, and tool/root requirements.

    def test_x(lab):                       # one lab per test, on a free port offset
        server = lab.start(only="smtp,imap", config='[smtp]\\nsize_limit = 1000')
        port = server.port("smtp", "submission")
        ...

Servers are started with --bind 127.0.0.1 and a port offset chosen at random and retried
on a clash, and waited for on their own ready line (no sleeps). Every server is stopped
with SIGTERM at teardown, and must exit 0.
"""

from __future__ import annotations

import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def need(*tools: str) -> None:
    """Skip the test when a client is missing here; in CI the test command installs them
    all, so a missing one there is a failure, never a silent skip."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"needs {', '.join(missing)} (tests/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, privileged ports); CI runs as root")


def cli(*args: str, data: Path | None = None, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `protolab ARGS` as a user would (python -m services, from this checkout)."""
    command = [sys.executable, "-m", "services", *args]
    if data is not None:
        command += ["--data", str(data)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, input=input,
                          env=full_env, timeout=timeout, cwd=ROOT)


def read_until(process: subprocess.Popen, prefix: str, timeout: float,
               lines: list[str]) -> bool:
    """Append `process`'s output lines to `lines` until one starts with `prefix` (True),
    the output ends or `timeout` passes (False). os.read, not readline: lines that arrive
    together (serve prints its table just before the ready line) would sit in the file
    object's buffer while select waits on an empty pipe."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    pending = b""
    while time.monotonic() < deadline and selector.select(deadline - time.monotonic()):
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            return False
        *done, pending = (pending + chunk).split(b"\n")
        for line in done:
            lines.append(line.decode(errors="replace"))
            if lines[-1].startswith(prefix):
                return True
    return False


@dataclass
class Server:
    process: subprocess.Popen
    data: Path
    offset: int
    only: list[str]
    config_path: Path | None
    errors: Path  # the server's stderr, in a file: a pipe nobody reads could block it
    output: list[str] = field(default_factory=list)

    def port(self, service: str, listener: str) -> int:
        """The real port of a service's listener (e.g. ("smtp", "submission"))."""
        from services import config as config_module
        from services import registry

        config = config_module.load(self.config_path)
        return registry.listener(config, service, listener, self.offset).port

    @property
    def run_dir(self) -> Path:
        """Where this server records that it runs (services.running): its own, so that
        tests running side by side never find each other's labs."""
        return self.data.parent / f"run-{self.offset}"

    def cli(self, *args: str, env: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        """`protolab ARGS --data DATA [--config FILE]` against this server's lab."""
        extra = ["--config", str(self.config_path)] if self.config_path else []
        return cli(*args, *extra, data=self.data,
                   env={"PROTOLAB_RUN_DIR": str(self.run_dir), **(env or {})}, **kwargs)

    def journal_until(self, service: str, text: str, timeout: float = 10) -> str:
        """`protolab journal --service SERVICE` once it shows `text`: a running server
        flushes its journal twice a second, and there is no signal when it has."""
        deadline = time.monotonic() + timeout
        while True:
            journal = self.cli("journal", "--service", service).stdout
            if text in journal or time.monotonic() > deadline:
                return journal
            time.sleep(0.1)

    def check(self, only: str | None = None) -> subprocess.CompletedProcess:
        extra = ["--config", str(self.config_path)] if self.config_path else []
        return cli("check", "--only", only or ",".join(self.only), "--port-offset",
                   str(self.offset), *extra, env={"PROTOLAB_RUN_DIR": str(self.run_dir)})

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("protolab serve did not stop within "
                                     f"{timeout} s of SIGTERM") from None
        return self.process.returncode

    def stderr(self) -> str:
        return self.errors.read_text(errors="replace")


class LabFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def start(self, only: str = "", config: str | None = None, data: Path | None = None,
              extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
              timeout: float = 30, offset: int | None = None) -> Server:
        """Start `protolab serve --only ONLY` with `config` (TOML text) on a free offset."""
        data = data or self.tmp_path / "data"
        config_path = None
        if config is not None:
            config_path = self.tmp_path / f"lab{len(self.servers)}.toml"
            config_path.write_text(config)
        last_error = ""
        for _ in range(8):
            chosen = offset if offset is not None else random.randrange(10000, 29000)
            server = self._spawn(only, data, config_path, chosen, extra, env)
            ready, last_error = self._wait_ready(server, timeout)
            if ready:
                self.servers.append(server)
                return server
            if offset is not None or "cannot listen" not in last_error:
                break
        raise AssertionError(f"protolab serve did not get ready: {last_error}")

    def _spawn(self, only: str, data: Path, config_path: Path | None, offset: int,
               extra: tuple[str, ...], env: dict[str, str] | None) -> Server:
        command = [sys.executable, "-m", "services", "serve", "--data", str(data),
                   "--bind", "127.0.0.1", "--port-offset", str(offset), *extra]
        if only:
            command += ["--only", only]
        if config_path:
            command += ["--config", str(config_path)]
        errors = self.tmp_path / f"serve{len(self.servers)}-{offset}.stderr"
        with open(errors, "w") as stderr:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT,
                # strict: a port another test holds is a failed start, retried above
                env={**os.environ, "PYTHONPATH": str(ROOT), "PROTOLAB_STRICT": "1",
                     "PROTOLAB_RUN_DIR": str(data.parent / f"run-{offset}"), **(env or {})})
        names = [n for n in only.split(",") if n]
        return Server(process, data, offset, names, config_path, errors)

    @staticmethod
    def _wait_ready(server: Server, timeout: float) -> tuple[bool, str]:
        ready = read_until(server.process, "protolab ready", timeout, server.output)
        if ready:
            return True, ""
        try:  # exited before getting ready? (its output ended: the exit follows at once)
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        else:
            return False, server.stderr().strip() or f"exit {server.process.returncode}"
        server.process.kill()
        server.process.wait()
        return False, f"no ready line within {timeout} s; output: {server.output}"

    def cleanup(self) -> list[str]:
        problems = []
        for server in self.servers:
            code = server.stop()
            if code != 0:
                problems.append(f"serve exited {code}: {server.stderr()[-2000:]}")
        return problems


@pytest.fixture(scope="session", autouse=True)
def no_running_labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Commands the tests run find no lab but the ones the tests name (services.running):
    never a lab that happens to run on this machine, nor another test's."""
    os.environ["PROTOLAB_RUN_DIR"] = str(tmp_path_factory.mktemp("no-running-labs"))
    yield
    os.environ.pop("PROTOLAB_RUN_DIR", None)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabFactory]:
    factory = LabFactory(tmp_path)
    yield factory
    problems = factory.cleanup()
    assert not problems, problems


MARKER_PORT = 9  # discard: nothing listens there, and tshark shows it as what it is


class Capture:
    """A capture on loopback (or an interface), running before the test's traffic starts.

    tcpdump captures and tshark dissects: dumpcap (tshark's capturer) ignores SIGTERM when
    its standard input is /dev/null, as it is in CI, so it never stops there. Immediate
    mode hands every packet to tcpdump as it comes, so none is lost in the kernel's
    buffer when the capture stops; -Z root keeps it writing into pytest's private dirs.
    """

    def __init__(self, path: Path, filter: str, interface: str = "lo",
                 netns: str | None = None) -> None:
        need("tcpdump", "tshark")
        self.path = path
        self.marker = f"protolab-capture-end-{random.getrandbits(64):016x}".encode()
        # On loopback the capture also takes one marker datagram, sent at stop(): the
        # kernel hands packets over in order, so once the marker is in the file, so is
        # every packet of the test (SIGTERM alone drops what is still in the ring).
        self.marks = interface == "lo" and netns is None
        if self.marks:
            filter = f"({filter}) or (udp and dst host 127.0.0.1 and dst port {MARKER_PORT})"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.process = subprocess.Popen(
            [*prefix, "tcpdump", "-i", interface, "--immediate-mode", "-U", "-Z", "root",
             "-w", str(path), filter],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        # "listening on IFACE" comes once the capture runs: the ready signal.
        for line in self.process.stderr:
            if "listening on" in line:
                break
        else:
            raise AssertionError(f"tcpdump did not start (exit {self.process.wait()})")

    def stop(self) -> Path:
        if self.process.poll() is None:
            if self.marks:
                self._mark()
            # SIGTERM, not SIGINT: a job started in the background inherits SIGINT ignored.
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        return self.path

    def _mark(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(self.marker, ("127.0.0.1", MARKER_PORT))
        deadline = time.monotonic() + 30
        while self.marker not in self.path.read_bytes():
            if time.monotonic() > deadline:
                raise AssertionError("the capture never wrote its end marker")
            time.sleep(0.01)  # polling a file tcpdump writes: it gives no other signal

    def read(self, display_filter: str = "", *fields: str, keylog: Path | None = None,
             decode_as: tuple[str, ...] = ()) -> list[str]:
        """Frames matching `display_filter`, one line each (the fields given, or summaries)."""
        self.stop()
        command = ["tshark", "-r", str(self.path)]
        if keylog:
            command += ["-o", f"tls.keylog_file:{keylog}"]
        for rule in decode_as:
            command += ["-d", rule]
        if display_filter:
            command += ["-Y", display_filter]
        if fields:
            command += ["-T", "fields", *(x for f in fields for x in ("-e", f))]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if line.strip()]

    def problems(self, **kwargs) -> list[str]:
        """Malformed frames and error-level expert items (tshark exits 0 even with them)."""
        return self.read("_ws.malformed || _ws.expert.severity == error", **kwargs)


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Callable[..., Capture]]:
    """capture("tcp port 25") -> a running Capture (tcpdump filter); stopped at teardown."""
    started: list[Capture] = []

    def start(filter: str, **kwargs) -> Capture:
        item = Capture(tmp_path / f"capture{len(started)}.pcap", filter, **kwargs)
        started.append(item)
        return item

    yield start
    for item in started:
        item.stop()


class SmallDisk:
    """A data directory on its own small tmpfs, so a test can fill the disk for real
    (ENOSPC from the kernel, SQLITE_FULL from SQLite) and free it again without a restart."""

    def __init__(self, mount: Path, size_mib: int) -> None:
        self.mount = mount
        mount.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755",
                        "protolab-test", str(mount)], check=True)
        self.data = mount / "data"
        self._filler = mount / "filler"

    def fill(self) -> None:
        """Take every free byte (the data directory is left as it is)."""
        # Unbuffered: a buffered file would raise ENOSPC again when it is closed.
        with open(self._filler, "ab", buffering=0) as out:
            for size in (1 << 20, 65536, 4096, 512, 1):  # down to the last partial block
                try:
                    while out.write(b"\0" * size):
                        pass
                except OSError:
                    pass

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """small_disk.data for lab.start(data=...); small_disk.fill() / .free() (needs root)."""
    need_root()
    disk = SmallDisk(tmp_path / "disk", 64)
    yield disk
    disk.unmount()
