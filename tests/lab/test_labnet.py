"""`protolab net up|down`: a bridge and client hosts pc1..pcN on this machine.

The real test (root) makes the network with the command a student types, serves the lab on
the bridge's address beside it, leases addresses with udhcpc and dhclient as they are
installed (no scripts or files of ours: the hosts' /etc/netns files must do), looks names
up through each host's resolv.conf, fetches the portal with curl, and takes it all down,
also after `net up` was killed halfway. Its state file is the test's own
(PROTOLAB_NET_STATE), so labs of other tests on this machine never see this network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import labnet
from services.config import ConfigError, load
from services.dhcp import codec
from services.dhcp.core import DHCPCore, MemoryBackend, Pool
from tests.conftest import ROOT, need, need_root
from tests.dhcp.test_clients import stop_server
from tests.netns import Host, run

HOSTS = ("pc1", "pc2")
BRIDGE_ADDRESS = "10.203.0.1"


# --- without root ----------------------------------------------------------------------

def test_plan_is_the_documented_network(tmp_path: Path):
    net = labnet.plan(load(None, environ={}), 3)
    assert (net.bridge, net.network, net.address) == ("protolab0", "10.203.0.0/24", "10.203.0.1")
    assert net.hosts == ["pc1", "pc2", "pc3"] and net.domain == "lab.test"
    config = tmp_path / "lab.toml"
    config.write_text('[lab]\ndomain = "net.test"\n[dhcp]\nnetwork = "198.18.7.0/24"\n')
    net = labnet.plan(load(config, environ={}), 1)
    assert (net.network, net.address, net.domain) == ("198.18.7.0/24", "198.18.7.1", "net.test")


@pytest.mark.parametrize("value", ['"10.203.0.1/24"', '"10.203.0.0/30"', '"fd00::/64"', '"lab"'])
def test_network_must_be_an_ipv4_network_with_room(tmp_path: Path, value: str):
    config = tmp_path / "lab.toml"
    config.write_text(f"[dhcp]\nnetwork = {value}\n")
    with pytest.raises(ConfigError, match=r"\[dhcp\] network"):
        load(config, environ={})


def test_a_pool_without_router_offers_no_router():
    pool = Pool(server="10.203.0.1", first="10.203.0.100", last="10.203.0.199",
                netmask="255.255.255.0", router="", dns=("10.203.0.1",), domain="lab.test",
                lease_time=600)
    core = DHCPCore(pool, MemoryBackend())
    discover = codec.pack(codec.Packet(op=1, xid=7, chaddr=bytes.fromhex("525400000001"), options={
        codec.MESSAGE_TYPE: bytes([codec.DISCOVER]), codec.PARAMETER_LIST: bytes([1, 3, 6, 15])}))
    (offer,) = core.handle(discover, ("0.0.0.0", 68), 1000.0).replies
    assert codec.ROUTER not in offer.packet.options
    assert offer.packet.options[codec.DNS_SERVERS] == codec.ip_option("10.203.0.1")


def write_state(path: Path, bridge: str) -> None:
    path.write_text(json.dumps({"bridge": bridge, "network": "10.203.0.0/24", "address":
                                BRIDGE_ADDRESS, "domain": "lab.test", "hosts": ["pc1"]}))


def test_serve_adopts_a_network_that_is_up(tmp_path: Path, monkeypatch):
    state = tmp_path / "net.json"
    monkeypatch.setenv("PROTOLAB_NET_STATE", str(state))
    assert labnet.adopt(load(None, environ={})) is None  # no state file: nothing changes
    write_state(state, "protolab0")
    monkeypatch.setattr(labnet, "link_exists", lambda name: name == "protolab0")
    config = load(None, environ={})
    assert labnet.adopt(config) is not None
    dhcp = config.service("dhcp")
    assert (dhcp.interface, dhcp.router, config.lab.address) == ("protolab0", "none", BRIDGE_ADDRESS)
    assert config.host_names()["www"] == BRIDGE_ADDRESS  # what the zone gives a pc
    # what the config says itself is kept
    toml = tmp_path / "lab.toml"
    toml.write_text('[lab]\naddress = "127.0.0.9"\n[dhcp]\ninterface = "eth7"\n')
    config = load(toml, environ={})
    labnet.adopt(config)
    assert (config.service("dhcp").interface, config.lab.address) == ("eth7", "127.0.0.9")
    # a state file whose bridge is gone (a reboot cleared it; /run too, normally) is ignored
    write_state(state, "protolab7")
    config = load(None, environ={})
    assert labnet.adopt(config) is None and config.service("dhcp").interface == ""


def test_a_state_file_naming_other_interfaces_is_refused(tmp_path: Path, monkeypatch):
    state = tmp_path / "net.json"
    monkeypatch.setenv("PROTOLAB_NET_STATE", str(state))
    write_state(state, "eth0")  # down would delete what the file names
    with pytest.raises(labnet.NetError, match="not a lab network's"):
        labnet.load_state()
    assert labnet.adopt(load(None, environ={})) is None


def test_net_needs_root(monkeypatch, capsys):
    from services.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for action in ("up", "down"):
        assert main(["net", action]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"protolab: net {action} needs root") and err.count("\n") == 1


# --- as root, for real -----------------------------------------------------------------

def protolab(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def leftovers() -> list[str]:
    """What of a lab network exists on this machine (nothing, when none is up)."""
    links = run("ip", "-o", "link").stdout
    found = [name for name in ("protolab0", *(f"veth-{h}" for h in HOSTS)) if f" {name}" in links]
    spaces = run("ip", "netns", "list").stdout.split()
    found += [h for h in HOSTS if h in spaces]
    found += [str(Path("/etc/netns") / h) for h in HOSTS if (Path("/etc/netns") / h).exists()]
    return found


def machine() -> set[str]:
    """The machine's routes, addresses (without lifetimes) and resolver."""
    routes = run("ip", "-4", "route").stdout.splitlines()
    addresses = [line.split("\\")[0] for line in run("ip", "-o", "-4", "addr").stdout.splitlines()]
    return {*routes, *addresses, hashlib.sha256(Path("/etc/resolv.conf").read_bytes()).hexdigest()}


def untouched(before: set[str], up: bool) -> None:
    """Nothing of the machine changed; all that is new is the bridge's own address and route
    (other tests may add interfaces of their own meanwhile: not ours to judge)."""
    now = machine()
    assert before <= now, before - now
    ours = sorted(" ".join(line.split()) for line in now - before if "protolab0" in line)
    if not up:
        assert ours == []
        return
    route, address = ours  # sorted: the route's line starts with 10., the address's with its index
    assert route == "10.203.0.0/24 dev protolab0 proto kernel scope link src 10.203.0.1"
    assert address.endswith("protolab0 inet 10.203.0.1/24 brd 10.203.0.255 scope global protolab0")


def wait_ready(process: subprocess.Popen, errors: Path) -> str:
    """serve's table, once its ready line came (a watchdog ends a serve that never gets
    there, which ends the output)."""
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("protolab ready"):
                return "".join(seen)
    finally:
        watchdog.cancel()
    raise AssertionError(f"serve did not get ready: {''.join(seen)} {errors.read_text()}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    need_root()
    need("ip", "dig", "host", "udhcpc", "dhclient", "curl", "getent")
    if leftovers():
        pytest.fail(f"a lab network exists already (not this test's): {leftovers()}")
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PROTOLAB_NET_STATE": str(tmp_path / "net.json")}
    try:
        yield environ
    finally:
        protolab("net", "down", env=environ)
        for name in leftovers():  # only if down failed: leave the machine clean all the same
            if name.startswith("/etc/netns"):
                subprocess.run(["rm", "-rf", name])
            else:
                run("ip", "netns" if name in HOSTS else "link", "del", name, check=False)


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """`net up --hosts 2`, and the lab served on the bridge's address only (standard ports
    there clash with nobody: the other tests' labs are on 127.0.0.1)."""
    before = machine()
    made = protolab("net", "up", "--hosts", "2", env=env)
    assert made.returncode == 0, made.stderr
    assert "protolab0 10.203.0.1 on 10.203.0.0/24, hosts pc1..pc2" in made.stdout
    errors = tmp_path / "serve.stderr"
    with open(errors, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "serve", "--only", "dns,dhcp,http,smb", "--bind",
             BRIDGE_ADDRESS, "--port-offset", "0", "--data", str(tmp_path / "data")],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env)
    try:
        table = wait_ready(process, errors)
        assert "on protolab0 only" in table  # DHCP found the bridge in the state file
        untouched(before, up=True)
        yield env
    finally:
        stop_server(process, errors)
        protolab("net", "down", env=env)
    untouched(before, up=False)


def test_net_up_serve_lease_resolve_fetch_down(served: dict[str, str], tmp_path: Path, capture):
    env = served
    wire = capture("port 67 or port 68 or port 53 or port 80 or port 445 or icmp6 or port 546 "
                   "or port 547", interface="protolab0")
    pc1, pc2 = (Host(None, name, "eth0", "") for name in HOSTS)  # type: ignore[arg-type]
    links = run("ip", "-o", "link").stdout
    assert all(f"veth-{h}" in links and "master protolab0" in links for h in HOSTS)
    assert run("cat", "/proc/sys/net/ipv4/conf/protolab0/forwarding").stdout.strip() == "0"
    assert "inet " not in pc1.run("ip", "-4", "addr", "show", "eth0").stdout  # until DHCP
    again = protolab("net", "up", "--hosts", "2", env=env)
    assert again.returncode == 0 and again.stdout.startswith("already up"), again.stderr
    other = protolab("net", "up", "--hosts", "3", env=env)
    assert other.returncode == 1 and "already up" in other.stderr and "net down" in other.stderr

    # pc1: busybox udhcpc with the script Debian installs (the host's /etc/udhcpc is ours)
    got = pc1.run("udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1",
                  "-x", "hostname:pc1", timeout=60, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    # pc2: ISC dhclient as a student types it (its name comes from the host's dhclient.conf);
    # the lease and pid files are the test's, the daemon it leaves is for `net down` to end
    got = pc2.run("dhclient", "-v", "-1", "-lf", str(tmp_path / "leases"), "-pf",
                  str(tmp_path / "dhclient.pid"), "eth0", timeout=90, check=False)
    assert got.returncode == 0, got.stderr
    leased = {}
    for host in (pc1, pc2):
        line = host.run("ip", "-o", "-4", "addr", "show", "eth0").stdout
        leased[host.name] = line.split("inet ")[1].split("/")[0]
        assert ipaddress.IPv4Address(leased[host.name]) in ipaddress.IPv4Network("10.203.0.0/24")
        # no default route: nothing beyond the bridge is reachable
        assert "default" not in host.run("ip", "-4", "route").stdout
        assert host.run("ip", "route", "get", "192.0.2.1", check=False).returncode != 0
        resolv = host.run("cat", "/etc/resolv.conf").stdout
        assert f"nameserver {BRIDGE_ADDRESS}" in resolv and "search lab.test" in resolv

    for host in (pc1, pc2):  # the resolver is resolv.conf's: no @server anywhere
        assert host.run("dig", "+short", "+search", "www").stdout.strip() == BRIDGE_ADDRESS
        assert host.run("dig", "+short", "www.lab.test").stdout.strip() == BRIDGE_ADDRESS
        assert f"has address {BRIDGE_ADDRESS}" in host.run("host", "www").stdout
    # the lease names, in the lab DNS: glibc finds them by full name and by search domain
    for name, address in leased.items():
        deadline = time.monotonic() + 10  # the store reaches DNS by polling: no signal
        while (found := pc1.run("getent", "hosts", f"{name}.lab.test", check=False).stdout) == "":
            assert time.monotonic() < deadline, f"{name}.lab.test not in DNS"
            time.sleep(0.2)
        assert found.split()[0] == address
        assert pc2.run("getent", "hosts", name).stdout.split()[0] == address
    page = pc1.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://www/")
    assert page.stdout == "200"
    files = pc2.run("smbclient", "//files/public", "-U", "alice%alice", "-c", "ls", check=False)
    assert files.returncode == 0 and "blocks available" in files.stdout, files.stdout + files.stderr

    # IPv6: the bridge has the prefix's first address; pc1 takes a SLAAC address from the
    # lab's router advertisements by itself, pc2 leases one with dhclient -6 as a student
    # types it (its name from the host's dhclient.conf); the AAAA names are in the lab DNS
    assert "inet6 fd00:203::1/64" in run("ip", "-6", "addr", "show", "protolab0").stdout

    def wait_past_dad(host: Host) -> None:
        # rdisc6 and dhclient -6 bind the link-local address: they cannot while duplicate
        # address detection holds it tentative ("Cannot assign requested address")
        deadline = time.monotonic() + 30  # the kernel gives no signal to wait on
        while "tentative" in host.run("ip", "-6", "addr", "show", "eth0").stdout:
            assert time.monotonic() < deadline, f"{host.name}'s address stays tentative"
            time.sleep(0.2)

    wait_past_dad(pc1)
    shown = pc1.run("rdisc6", "-1", "eth0", timeout=30).stdout  # a solicitation, its answer
    assert "fd00:203::/64" in shown and "fd00:203::1" in shown and "lab.test" in shown
    assert re.search(r"Router lifetime\s*:\s*0 ", shown), shown  # the bridge routes nowhere
    prefix6 = ipaddress.IPv6Network("fd00:203::/64")

    def global6(host: Host) -> list[str]:
        lines = host.run("ip", "-o", "-6", "addr", "show", "eth0", "scope", "global").stdout
        return [line.split("inet6 ")[1].split("/")[0] for line in lines.splitlines()]

    deadline = time.monotonic() + 30  # the kernel's SLAAC gives no signal to wait on
    while not global6(pc1):
        assert time.monotonic() < deadline, "no SLAAC address on pc1"
        time.sleep(0.2)
    assert all(ipaddress.IPv6Address(a) in prefix6 for a in global6(pc1))
    wait_past_dad(pc2)  # SLAAC may have added an address since the first wait
    got = pc2.run("dhclient", "-6", "-v", "-1", "-lf", str(tmp_path / "leases6"), "-pf",
                  str(tmp_path / "dhclient6.pid"), "eth0", timeout=90, check=False)
    assert got.returncode == 0, got.stderr
    leased6 = [a for a in global6(pc2) if int(ipaddress.IPv6Address(a)) & 0xFFFF >= 0x1000
               and int(ipaddress.IPv6Address(a)) & 0xFFFFFFFFFFFF0000 == 0]  # PREFIX::1xxx
    assert len(leased6) == 1, global6(pc2)
    deadline = time.monotonic() + 10  # the store reaches DNS by polling: no signal
    while pc1.run("dig", "+short", "pc2.lab.test", "AAAA").stdout.strip() != leased6[0]:
        assert time.monotonic() < deadline, "pc2.lab.test has no AAAA"
        time.sleep(0.2)
    assert pc1.run("dig", "+short", "-x", leased6[0]).stdout.strip() == "pc2.lab.test."
    # the zone's AAAA is the bridge's (serve adopted it), where a lab bound to :: answers;
    # this lab is bound to the bridge's IPv4 address alone (tests/lab/test_ipv6.py covers
    # the services over IPv6)
    assert pc1.run("dig", "+short", "www.lab.test", "AAAA").stdout.strip() == "fd00:203::1"

    # the whole exchange, as Wireshark on the bridge sees it
    kinds = set(wire.read("dhcp", "dhcp.option.dhcp"))
    assert {"1", "2", "3", "5"} <= kinds, kinds  # DISCOVER OFFER REQUEST ACK
    assert wire.read('dns.qry.name == "www.lab.test" && dns.a == 10.203.0.1')
    assert wire.read('http.request.uri == "/"') and wire.read("smb2.cmd == 3")  # TREE_CONNECT
    assert {"2", "7"} <= set(wire.read("dhcpv6", "dhcpv6.msgtype"))  # ADVERTISE, REPLY
    assert wire.read("icmpv6.type == 134 && icmpv6.opt.rdnss == fd00:203::1")
    # (dhclient's own RELEASE carries a Client FQDN option RFC 4704 forbids: not ours)
    assert wire.read("(_ws.malformed || _ws.expert.severity == error) && !smb2 && "
                     "!(dhcpv6.msgtype == 8)") == []

    gone = protolab("net", "down", env=env)
    assert gone.returncode == 0 and gone.stdout.startswith("removed"), gone.stderr
    assert leftovers() == [] and not Path(env["PROTOLAB_NET_STATE"]).exists()
    assert protolab("net", "down", env=env).stdout.startswith("no lab network is up")


def test_down_after_up_was_killed_halfway(env: dict[str, str]):
    state = Path(env["PROTOLAB_NET_STATE"])
    process = subprocess.Popen([sys.executable, "-m", "services", "net", "up", "--hosts", "2"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not state.exists() and process.poll() is None:  # written before anything is made
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists()  # whatever it got to make, nothing remembers it but this file
    gone = protolab("net", "down", env=env)
    assert gone.returncode == 0, gone.stderr
    assert leftovers() == [] and not state.exists()
