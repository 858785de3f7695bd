"""Exercises done on a lab host of the student's own (issue 16): a DHCP lease under the
student's name and its release with busybox udhcpc, then `dig +trace` through the lab's
fake root from the leased address; `protolab class grades` gives them exactly those. In
network namespaces (root only), as tests/dhcp/test_clients.py builds them."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, need, need_root
from tests.dhcp.test_clients import CLIENT_SCRIPT, fake_root_lab, start_server, stop_server, wait_line
from tests.netns import Network

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_lease_a_release_and_a_trace_are_the_student_the_lease_named(tmp_path):
    need_root()
    need("ip", "dig", "udhcpc")
    with Network() as net:
        server = net.host("srv", address="1")
        prefix = net.prefix()
        for extra in ("2", "3"):  # the fake root's and TLD's addresses
            server.run("ip", "addr", "add", f"{prefix}.{extra}/24", "dev", "eth0")
        config = tmp_path / "lab.toml"
        config.write_text(fake_root_lab(prefix))
        data = tmp_path / "data"
        process = start_server(server, config, data, tmp_path / "serve.stderr")
        try:
            def protolab(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run(
                    [sys.executable, "-m", "services", *args, "--data", str(data), "--config",
                     str(config)], capture_output=True, text=True, cwd=ROOT, timeout=60,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})

            roster = tmp_path / "roster.csv"
            roster.write_text("stu1,,pw-one-1\nstu2,,pw-two-2\n")
            assert protolab("class", "import", str(roster)).returncode == 0
            pc = net.host("pc")
            pc.etc("resolv.conf", f"nameserver {server.address}\nsearch lab.test\n")
            script = tmp_path / "udhcpc.sh"
            script.write_text(CLIENT_SCRIPT.format(out=tmp_path / "udhcpc"))
            script.chmod(0o755)
            daemon = pc.popen("udhcpc", "-f", "-i", "eth0", "-x", "hostname:stu1", "-t", "6",
                              "-T", "1", "-A", "1", "-s", str(script), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
            try:
                wait_line(daemon, "script: bound done")
                trace = pc.run("dig", "+trace", f"@{prefix}.2", "ns.lab.test", check=False)
                assert "ns.lab.test." in trace.stdout, trace.stdout + trace.stderr
                daemon.send_signal(signal.SIGUSR2)  # udhcpc's release
                wait_line(daemon, "released", "entering released state")
            finally:
                daemon.terminate()
                daemon.wait(10)
            want = {"stu1": {"dhcp-lease-release", "dns-trace"}, "stu2": set()}
            for _ in range(100):  # the server flushes its journal twice a second
                grades = protolab("class", "grades", "--csv")
                assert grades.returncode == 0, grades.stderr
                done = {row["student"]: {k for k, v in row.items() if v == "1"}
                        for row in csv.DictReader(io.StringIO(grades.stdout))}
                if done == want:
                    break
                pc.run("sleep", "0.1")
            assert done == want, protolab("journal", "--service", "dhcp").stdout[-3000:]
        finally:
            stop_server(process, tmp_path / "serve.stderr")
