"""DHCP and DNS in a network of real hosts: network namespaces on a private bridge.

A server host runs `protolab serve --only dns,dhcp` on the standard ports; client hosts
run busybox udhcpc and ISC dhclient (with their own scripts, lease and pid files: nothing
touches the machine's own network configuration), then look their names up with dig,
nslookup and glibc through the lab DNS, and release. tshark watches the server's wire.
Root only; everything is torn down, also when a step fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Capture, need, need_root, read_until
from tests.netns import Host, Network

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLIENT_SCRIPT = """#!/bin/sh
# udhcpc's events: record what the server said, configure the address, nothing else
# (the stock script would rewrite the machine's resolv.conf).
env | sort > "{out}.$1"
case "$1" in
    bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
    deconfig) ip addr flush dev "$interface" ;;
esac
echo "script: $1 done"
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient's events, likewise: the address only, and a record of the options
env | sort > "{out}.$reason"
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT) ip addr flush dev "$interface"
        ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
    RELEASE|EXPIRE|FAIL|STOP) ip addr flush dev "$interface" ;;
esac
"""


@dataclass
class LabNet:
    net: Network
    server: Host
    process: subprocess.Popen
    data: Path
    tmp: Path
    observer: Host  # a host with a fixed address that asks the lab DNS

    @property
    def address(self) -> str:
        return self.server.address

    def client(self, role: str) -> Host:
        host = self.net.host(role)
        host.etc("resolv.conf", f"nameserver {self.address}\nsearch lab.test\n")
        return host

    def cli(self, *args: str) -> str:
        """`protolab ARGS --data DATA` from the machine (the data directory is shared)."""
        return subprocess.run([sys.executable, "-m", "services", *args, "--data", str(self.data)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout

    def dig(self, host: Host, *args: str) -> str:
        result = host.run("dig", f"@{self.address}", "+time=2", "+tries=2", *args, check=False)
        return result.stdout + result.stderr

    def wait_name(self, host: Host, name: str, want: str, seconds: float = 5) -> str:
        """The lab DNS's answer for `name`, once it is `want` (the store reaches the DNS
        service by polling: no signal to wait on but the answer itself)."""
        deadline = time.monotonic() + seconds
        while True:
            got = self.dig(host, "+short", name).strip()
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)


def start_server(server: Host, config: Path, data: Path, errors: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "services", "serve", "--only", "dns,dhcp", "--config",
               str(config), "--data", str(data), "--bind", server.address, "--port-offset", "0"]
    with open(errors, "w") as stderr:
        process = server.popen(*command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen: list[str] = []
    if read_until(process, "protolab ready", 30, seen):
        return process
    process.kill()
    process.wait()
    raise AssertionError(f"server did not get ready: {seen} {errors.read_text()}")


def stop_server(process: subprocess.Popen, errors: Path) -> None:
    """SIGTERM, which must end the serve with 0 (its stderr says why not); killed if not."""
    process.terminate()
    try:
        assert process.wait(10) == 0, errors.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def fake_root_lab(prefix: str) -> str:
    """lab.toml for a server at PREFIX.1 with the fake root and TLD at .2 and .3 and DHCP
    on eth0 leasing .100-.150 (its host adds .2 and .3 to eth0)."""
    return f"""
[lab]
address = "{prefix}.1"
[dns]
fake_root = true
root_address = "{prefix}.2"
tld_address = "{prefix}.3"
[dhcp]
interface = "eth0"
range = "{prefix}.100-{prefix}.150"
"""


@pytest.fixture
def labnet(tmp_path: Path) -> Iterator[LabNet]:
    need_root()
    need("ip", "dig", "udhcpc", "dhclient", "tshark", "tcpdump", "nslookup")
    with Network() as net:
        server = net.host("srv", address="1")
        prefix = net.prefix()
        for extra in ("2", "3"):  # the fake root and TLD servers' addresses
            server.run("ip", "addr", "add", f"{prefix}.{extra}/24", "dev", "eth0")
        config = tmp_path / "lab.toml"
        config.write_text(fake_root_lab(prefix))
        observer = net.host("obs", address="9")
        observer.etc("resolv.conf", f"nameserver {server.address}\nsearch lab.test\n")
        process = start_server(server, config, tmp_path / "data", tmp_path / "serve.stderr")
        labnet = LabNet(net, server, process, tmp_path / "data", tmp_path, observer)
        try:
            yield labnet
        finally:
            stop_server(labnet.process, tmp_path / "serve.stderr")  # (a test may restart it)


def wait_line(process: subprocess.Popen, *markers: str) -> str:
    """Read the client's output up to a line with one of `markers` (its own ready signal)."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if any(marker in line for marker in markers):
            return line
    raise AssertionError(f"no {markers} from the client: {''.join(seen)}")


def parse_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def soa_serial(labnet: LabNet) -> int:
    return int(labnet.dig(labnet.observer, "+short", "lab.test", "SOA").split()[2])


def test_udhcpc_lease_name_and_release(labnet: LabNet):
    client = labnet.client("udhcpc")
    capture = Capture(labnet.tmp / "wire.pcap", "port 67 or port 68 or port 53",
                      interface="eth0", netns=labnet.server.name)
    script = labnet.tmp / "udhcpc.sh"
    script.write_text(CLIENT_SCRIPT.format(out=labnet.tmp / "udhcpc"))
    script.chmod(0o755)
    daemon = client.popen("udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1",
                          "-s", str(script), "-x", "hostname:pc-one", "-p",
                          str(labnet.tmp / "udhcpc.pid"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        bound = labnet.tmp / "udhcpc.bound"
        wait_line(daemon, "script: bound done")
        env = parse_env(bound)
        prefix = labnet.net.prefix()
        ip = env["ip"]
        assert re.fullmatch(rf"{re.escape(prefix)}\.1([0-4]\d|50)", ip), env
        assert env["subnet"] == "255.255.255.0" and env["router"] == labnet.address
        assert env["dns"] == labnet.address and env["domain"] == "lab.test"
        assert env["lease"] == "600" and env["serverid"] == labnet.address
        assert env["hostname"] == "pc-one"  # option 12 back: the name it has in the lab DNS
        assert ip in client.run("ip", "-4", "addr", "show", "eth0").stdout
        # the name the client sent (option 12) is in the lab DNS, both ways
        assert labnet.wait_name(client, "pc-one.lab.test", ip) == ip
        assert labnet.dig(client, "+short", "-x", ip).strip() == "pc-one.lab.test."
        # glibc's resolver (resolv.conf of this host) and nslookup find it too
        assert client.run("getent", "hosts", "pc-one").stdout.split()[0] == ip
        assert f"Address: {ip}" in client.run("nslookup", "pc-one.lab.test").stdout
        # renew: unicast to the server, same address, still named
        serial = soa_serial(labnet)
        daemon.send_signal(10)  # SIGUSR1: renew
        wait_line(daemon, "script: renew done")
        assert parse_env(labnet.tmp / "udhcpc.renew")["ip"] == ip
        # ...and no name changed, so the zone did not: same serial, no rebuild in the
        # journal between the lease's and a record added afterwards (the store's changes
        # reach DNS in order: once the marker resolves, the renewal's would have too)
        assert soa_serial(labnet) == serial
        assert labnet.cli("dns", "add", "marker", "A", "10.9.9.9")
        assert labnet.wait_name(labnet.observer, "marker.lab.test", "10.9.9.9") == "10.9.9.9"
        after = soa_serial(labnet)
        assert after > serial
        deadline = time.monotonic() + 5  # the journal is flushed twice a second
        # (the zone is made in the background: wait for it installed, not only begun)
        while not re.search(rf"serial {after}: \d+ records",
                            journal := labnet.cli("journal", "--service", "dns")):
            assert time.monotonic() < deadline, journal
            time.sleep(0.1)
        zones = re.findall(r"zone lab\.test serial (\d+): \d+ records", journal)  # installed
        assert zones[-2:] == [str(serial), str(after)], zones
        # release: the name goes
        daemon.send_signal(12)  # SIGUSR2: release
        wait_line(daemon, "released", "entering released state")
        assert labnet.wait_name(labnet.observer, "pc-one.lab.test", "") == ""
        assert "status: NXDOMAIN" in labnet.dig(labnet.observer, "pc-one.lab.test")
    finally:
        daemon.kill()
        daemon.wait()
        capture.stop()
    assert "pc-one" not in labnet.cli("dns", "list")
    deadline = time.monotonic() + 5  # the journal is flushed twice a second
    while "DHCPRELEASE" not in (journal := labnet.cli("journal", "--service", "dhcp")):
        assert time.monotonic() < deadline, journal
        time.sleep(0.1)
    for kind in ("DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"):
        assert kind in journal
    assert f"bound {ip} to" in journal and "as pc-one" in journal
    assert capture.problems() == []
    kinds = capture.read("dhcp", "dhcp.option.dhcp")
    assert {"1", "2", "3", "5", "7"} <= set(kinds), kinds  # DISCOVER OFFER REQUEST ACK RELEASE


def test_dhclient_lease_and_release(labnet: LabNet):
    client = labnet.client("dhclient")
    out = labnet.tmp / "dhclient"
    script = labnet.tmp / "dhclient.sh"
    script.write_text(DHCLIENT_SCRIPT.format(out=out))
    script.chmod(0o755)
    conf = labnet.tmp / "dhclient.conf"
    conf.write_text('send host-name "pc-two";\n'
                    "request subnet-mask, broadcast-address, routers, domain-name, "
                    "domain-name-servers, host-name;\n")
    files = ["-sf", str(script), "-lf", str(labnet.tmp / "dhclient.leases"), "-pf",
             str(labnet.tmp / "dhclient.pid"), "-cf", str(conf)]
    got = client.run("dhclient", "-4", "-1", "-v", *files, "eth0", timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    env = parse_env(Path(f"{out}.BOUND"))
    ip = env["new_ip_address"]
    assert env["new_routers"] == labnet.address and env["new_domain_name"] == "lab.test"
    assert env["new_domain_name_servers"] == labnet.address
    assert env["new_dhcp_lease_time"] == "600" and env["new_subnet_mask"] == "255.255.255.0"
    assert labnet.wait_name(client, "pc-two.lab.test", ip) == ip
    released = client.run("dhclient", "-4", "-r", "-v", *files, "eth0", timeout=60, check=False)
    assert released.returncode == 0, released.stderr
    assert labnet.wait_name(labnet.observer, "pc-two.lab.test", "") == ""


def test_dns_from_a_lab_host(labnet: LabNet):
    from services.store import Store

    client = labnet.observer
    store = Store(labnet.data)
    try:
        for n in range(40):  # 40 A records: over 512 bytes, so UDP answers come truncated
            store.net.add_record("many.lab.test", "A", f"10.199.250.{n + 1}")
    finally:
        store.close()
    assert labnet.wait_name(client, "ns.lab.test", labnet.address) == labnet.address
    deadline = time.monotonic() + 5
    while len(labnet.dig(client, "+short", "+tcp", "many.lab.test").split()) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # glibc retries over TCP only when the truncated answer keeps its question
    hosts = client.run("getent", "ahostsv4", "many.lab.test", timeout=20).stdout
    assert len({line.split()[0] for line in hosts.splitlines()}) == 40
    kdig = client.run("kdig", f"@{labnet.address}", "lab.test", "AXFR", check=False).stdout
    assert "ns.lab.test." in kdig and kdig.count("SOA") >= 2
    trace = client.run("dig", "+trace", f"@{labnet.net.prefix()}.2", "ns.lab.test",
                       check=False).stdout
    assert re.search(r"^test\.\s+\d+\s+IN\s+NS\s+tld\.lab\.test\.", trace, re.M), trace
    assert re.search(r"^lab\.test\.\s+\d+\s+IN\s+NS\s+ns\.lab\.test\.", trace, re.M), trace
    assert re.search(rf"^ns\.lab\.test\.\s+\d+\s+IN\s+A\s+{re.escape(labnet.address)}", trace, re.M), trace
    check = subprocess.run(
        ["ip", "netns", "exec", labnet.server.name, sys.executable, "-m", "services", "check",
         "--only", "dns,dhcp", "--host", labnet.address, "--port-offset", "0", "--config",
         str(labnet.tmp / "lab.toml")], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "DHCPACK to INFORM" in check.stdout and "SOA lab.test" in check.stdout


def test_udhcpc_declines_an_address_in_use(labnet: LabNet):
    prefix = labnet.net.prefix()
    squatter = labnet.net.host("squat", address="100")  # holds the pool's first address
    assert squatter.address == f"{prefix}.100"
    client = labnet.client("arp")
    script = labnet.tmp / "arp.sh"
    script.write_text(CLIENT_SCRIPT.format(out=labnet.tmp / "arp"))
    script.chmod(0o755)
    # -a: udhcpc ARP-probes the offered address and sends DHCPDECLINE when someone answers
    got = client.run("udhcpc", "-f", "-q", "-n", "-a", "-i", "eth0", "-t", "6", "-T", "1",
                     "-A", "1", "-s", str(script), timeout=90, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "declining" in got.stdout + got.stderr
    ip = parse_env(labnet.tmp / "arp.bound")["ip"]
    assert ip != squatter.address and ip.startswith(prefix + ".")
    deadline = time.monotonic() + 5
    while "DHCPDECLINE" not in (journal := labnet.cli("journal", "--service", "dhcp")):
        assert time.monotonic() < deadline, journal
        time.sleep(0.1)
    assert f"{squatter.address} declined" in journal


def test_leases_and_names_survive_a_server_restart(labnet: LabNet):
    client = labnet.client("again")
    script = labnet.tmp / "again.sh"
    script.write_text(CLIENT_SCRIPT.format(out=labnet.tmp / "again"))
    script.chmod(0o755)
    command = ["udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1",
               "-s", str(script), "-x", "hostname:pc-three"]
    assert client.run(*command, timeout=60, check=False).returncode == 0
    ip = parse_env(labnet.tmp / "again.bound")["ip"]
    assert labnet.wait_name(labnet.observer, "pc-three.lab.test", ip) == ip
    labnet.process.terminate()
    assert labnet.process.wait(10) == 0
    labnet.process = start_server(labnet.server, labnet.tmp / "lab.toml", labnet.data,
                                  labnet.tmp / "serve2.stderr")
    assert labnet.dig(labnet.observer, "+short", "pc-three.lab.test").strip() == ip
    # another client meanwhile does not get that address; the first one gets it back
    other = labnet.client("other")
    assert other.run(*command[:-2], "-s", str(script), timeout=60, check=False).returncode == 0
    assert parse_env(labnet.tmp / "again.bound")["ip"] != ip
    client.run("ip", "addr", "flush", "dev", "eth0")
    assert client.run(*command, "-r", ip, timeout=60, check=False).returncode == 0
    assert parse_env(labnet.tmp / "again.bound")["ip"] == ip


def test_faults_as_udhcpc_sees_them(labnet: LabNet):
    """`protolab fault` on the running lab: a NAK for one host name, a 30 s lease and a
    dead DNS server for another; a third client is untouched; cleared, all is well."""
    script = labnet.tmp / "faults.sh"
    script.write_text(CLIENT_SCRIPT.format(out=labnet.tmp / "faults"))
    script.chmod(0o755)

    hosts = {role: labnet.client(role) for role in ("nak", "short", "fine")}

    def lease(role: str, name: str) -> subprocess.CompletedProcess:
        # one lease and quit (-q), or fail after three tries (-n); -x hostname: the target
        return hosts[role].run(
            "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "3", "-T", "1", "-A", "1", "-s",
            str(script), "-x", f"hostname:{name}", timeout=60, check=False)

    assert "on: #1 dhcp.nak-everything for pc-nak" in labnet.cli(
        "fault", "add", "dhcp.nak-everything", "--target", "pc-nak")
    labnet.cli("fault", "add", "dhcp.short-lease", "--target", "pc-short")
    labnet.cli("fault", "add", "dhcp.wrong-dns", "--target", "pc-short")
    # NAKed, udhcpc starts over, for ever: its output says so each round
    daemon = hosts["nak"].popen(
        "udhcpc", "-f", "-i", "eth0", "-T", "1", "-A", "1", "-s", str(script), "-x",
        "hostname:pc-nak", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "NAK" in wait_line(daemon, "NAK", "nak")
    finally:
        daemon.kill()
        daemon.wait()
    short = lease("short", "pc-short")
    assert short.returncode == 0, short.stdout + short.stderr
    env = parse_env(labnet.tmp / "faults.bound")
    assert env["lease"] == "30" and env["dns"] != labnet.address
    assert lease("fine", "pc-fine").returncode == 0  # the rest of the class works on
    env = parse_env(labnet.tmp / "faults.bound")
    assert env["lease"] == "600" and env["dns"] == labnet.address
    deadline = time.monotonic() + 5  # the journal is flushed twice a second
    while "fault dhcp.short-lease" not in (journal := labnet.cli("journal", "--service", "dhcp")):
        assert time.monotonic() < deadline, journal
        time.sleep(0.1)
    assert "fault dhcp.nak-everything" in journal
    assert labnet.cli("fault", "clear").strip() == "cleared 3 faults"
    deadline = time.monotonic() + 5  # the lab sees the change at its next store poll
    while (again := lease("nak", "pc-nak")).returncode != 0:
        assert time.monotonic() < deadline, again.stdout + again.stderr
