"""IPv6 on the DHCP interface with real hosts: network namespaces on a private bridge.

A server host runs `protolab serve --only dns,dhcp` with [dhcp] ipv6_prefix; client hosts
take SLAAC addresses from its router advertisements (the kernel's own, with rdisc6 showing
the RA's options), lease with ISC dhclient -6 (stateful, and -S stateless), and the lease's
name is looked up (AAAA and its ip6.arpa PTR) in the lab DNS, over IPv4 (the lab's
dual-stack listening is not this part's). tshark on the server's wire dissects it all.
Root only; everything is torn down, also when a step fails.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Capture, need, need_root
from tests.dhcp.test_clients import parse_env, start_server, stop_server
from tests.netns import Host, Network

pytestmark = [pytest.mark.root, pytest.mark.slow]

DHCLIENT6_SCRIPT = """#!/bin/sh
# dhclient -6's events: a record of what the server said, the address on the interface
env | sort > "{out}.$reason"
case "$reason" in
    BOUND6|RENEW6|REBIND6|REBOOT6) [ -n "$new_ip6_address" ] &&
        ip -6 addr replace "$new_ip6_address/128" dev "$interface" nodad ;;
    RELEASE6|EXPIRE6|STOP6) [ -n "$old_ip6_address" ] &&
        ip -6 addr del "$old_ip6_address/128" dev "$interface" ;;
esac
exit 0
"""


@dataclass
class Lab6:
    net: Network
    server: Host
    process: subprocess.Popen
    data: Path
    tmp: Path
    prefix: str  # "fd00:199:N::/64"

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def address6(self) -> str:
        return str(ipaddress.IPv6Network(self.prefix).network_address + 1)

    def client(self, role: str) -> Host:
        host = self.net.host(role)
        # the link-local address must be past duplicate address detection before dhclient
        # -6 can bind to it: nothing else on a new bridge has it
        host.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        wait_for(lambda: "tentative" not in host.run("ip", "-6", "addr", "show", "eth0").stdout
                 and "fe80::" in host.run("ip", "-6", "addr", "show", "eth0").stdout,
                 f"{role}'s link-local address")
        return host

    def dig(self, *args: str) -> str:
        """The lab DNS over IPv4, from the server's host (the clients have no IPv4)."""
        result = self.server.run("dig", f"@{self.address}", "+time=2", "+tries=2", *args,
                                 check=False)
        return result.stdout + result.stderr

    def wait_name(self, name: str, want: str, *args: str) -> str:
        got = ""

        def answered() -> bool:
            nonlocal got
            got = self.dig("+short", *args, name).strip()
            return got == want

        wait_for(answered, f"{name} to be {want!r}", fail=False)
        return got

    def dhclient(self, host: Host, name: str, *args: str) -> subprocess.CompletedProcess:
        """dhclient -6 with the test's own script, lease, pid and config files."""
        out = self.tmp / name
        script = self.tmp / f"{name}.sh"
        script.write_text(DHCLIENT6_SCRIPT.format(out=out))
        script.chmod(0o755)
        conf = self.tmp / f"{name}.conf"
        conf.write_text(f'send fqdn.fqdn "{name}";\n')
        return host.run("dhclient", "-6", "-v", *args, "-sf", str(script), "-lf",
                        str(self.tmp / f"{name}.leases"), "-pf", str(self.tmp / f"{name}.pid"),
                        "-cf", str(conf), "eth0", timeout=60, check=False)

    def journal(self) -> str:
        import os
        import sys

        from tests.conftest import ROOT

        return subprocess.run([sys.executable, "-m", "services", "journal", "--service", "dhcp",
                               "--data", str(self.data)], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=60).stdout


def wait_for(check, what: str, seconds: float = 10, fail: bool = True) -> bool:
    """Poll `check` (the kernel's SLAAC and the store's poll give no signal to wait on)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            if fail:
                raise AssertionError(f"no {what} after {seconds} s")
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def lab6(tmp_path: Path) -> Iterator[Lab6]:
    need_root()
    need("ip", "dig", "dhclient", "rdisc6", "tshark", "tcpdump")
    if not Path("/proc/sys/net/ipv6").exists():
        pytest.skip("IPv6 is off on this machine (no /proc/sys/net/ipv6)")
    with Network() as net:
        server = net.host("srv", address="1")
        prefix = f"fd00:199:{net.subnet:x}::/64"
        server.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0")
        server.run("ip", "addr", "add", f"fd00:199:{net.subnet:x}::1/64", "dev", "eth0", "nodad")
        config = tmp_path / "lab.toml"
        config.write_text(f"""
[lab]
address = "{net.prefix()}.1"
[dhcp]
interface = "eth0"
range = "{net.prefix()}.100-{net.prefix()}.150"
ipv6_prefix = "{prefix}"
""")
        process = start_server(server, config, tmp_path / "data", tmp_path / "serve.stderr")
        lab = Lab6(net, server, process, tmp_path / "data", tmp_path, prefix)
        try:
            yield lab
        finally:
            stop_server(lab.process, tmp_path / "serve.stderr")  # (a test may restart it)


def global_addresses(host: Host, prefix: str) -> list[str]:
    found = []
    for line in host.run("ip", "-o", "-6", "addr", "show", "eth0", "scope", "global").stdout.splitlines():
        address = line.split("inet6 ")[1].split("/")[0]
        if ipaddress.IPv6Address(address) in ipaddress.IPv6Network(prefix):
            found.append(address)
    return found


def test_slaac_from_the_router_advertisement_and_rdisc6(lab6: Lab6):
    client = lab6.client("slaac")
    shown = client.run("rdisc6", "-1", "eth0", timeout=30).stdout  # one RS, the first RA
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
             for line in shown.splitlines() if ":" in line and not line.startswith(" from")}
    assert lines["Prefix"] == lab6.prefix
    assert lines["Stateful address conf."] == "Yes" and lines["Stateful other conf."] == "Yes"
    assert lines["On-link"] == "Yes" and lines["Autonomous address conf."] == "Yes"
    assert lines["Recursive DNS server"] == lab6.address6
    assert lines["DNS search list"] == "lab.test"
    assert lines["Hop limit"].split()[0] == "64"
    assert " from fe80::" in shown  # from the server's link-local address, as RFC 4861 says
    # the kernel's SLAAC (accept_ra=1 in a new namespace) made an address in the prefix
    wait_for(lambda: global_addresses(client, lab6.prefix), "SLAAC address")
    (address,) = global_addresses(client, lab6.prefix)
    assert address != lab6.address6
    # and it answers for it on the link: the server's host finds it by neighbour discovery
    assert lab6.server.run("ndisc6", "-1", "-q", address, "eth0", check=False).returncode == 0


def test_dhclient6_stateful_lease_name_and_release(lab6: Lab6):
    client = lab6.client("pc-six")
    capture = Capture(lab6.tmp / "wire.pcap", "icmp6 or udp port 546 or udp port 547",
                      interface="eth0", netns=lab6.server.name)
    try:
        client.run("rdisc6", "-1", "eth0", timeout=30)  # a solicitation and its answer, on the wire
        got = lab6.dhclient(client, "pc-six", "-1")
        assert got.returncode == 0, got.stderr
        env = parse_env(lab6.tmp / "pc-six.BOUND6")
        ip = env["new_ip6_address"]
        assert ipaddress.IPv6Address(ip) in ipaddress.IPv6Network(lab6.prefix)
        assert env["new_dhcp6_name_servers"] == lab6.address6
        assert env["new_dhcp6_domain_search"] == "lab.test."
        assert env["new_fqdn_fqdn"] == "pc-six.lab.test" and env["new_fqdn_server_update"] == "true"
        assert ip in client.run("ip", "-6", "addr", "show", "eth0").stdout
        # the name the client sent is in the lab DNS, both ways, while the lease lasts
        assert lab6.wait_name("pc-six.lab.test", ip, "AAAA") == ip
        reverse = ipaddress.IPv6Address(ip).reverse_pointer
        assert lab6.dig("+short", reverse, "PTR").strip() == "pc-six.lab.test."
        assert lab6.dig("+short", "-x", ip).strip() == "pc-six.lab.test."
        # the client answers for the leased address on the link (neighbour discovery)
        assert lab6.server.run("ndisc6", "-1", "-q", ip, "eth0", check=False).returncode == 0
        released = lab6.dhclient(client, "pc-six", "-r")
        assert released.returncode == 0, released.stderr
        assert lab6.wait_name("pc-six.lab.test", "", "AAAA") == ""
        assert lab6.dig("+short", reverse, "PTR").strip() == ""
    finally:
        capture.stop()
    wait_for(lambda: "released" in lab6.journal(), "RELEASE in the journal")
    journal = lab6.journal()
    for kind in ("DHCPv6 SOLICIT", "DHCPv6 ADVERTISE", "DHCPv6 REQUEST", "DHCPv6 REPLY",
                 "DHCPv6 RELEASE", "router solicitation", "router advertisement (solicited)"):
        assert kind in journal, kind
    assert f"bound {ip} as pc-six" in journal
    assert capture.read("_ws.malformed") == []
    # no error in what the lab sends (dhclient 4.4's own RELEASE carries a Client FQDN
    # option, which RFC 4704 5 forbids there: tshark flags that one, not ours)
    assert capture.read("_ws.expert.severity == error && (icmpv6.type == 134 || "
                        "dhcpv6.msgtype == 2 || dhcpv6.msgtype == 7)") == []
    assert capture.read("_ws.expert.severity == error && !(dhcpv6.msgtype == 8)") == []
    kinds = set(capture.read("dhcpv6", "dhcpv6.msgtype"))
    assert {"1", "2", "3", "7", "8"} <= kinds, kinds  # SOLICIT ADVERTISE REQUEST REPLY RELEASE
    ra = capture.read("icmpv6.type == 134", "icmpv6.nd.ra.flag.m", "icmpv6.opt.rdnss",
                      "icmpv6.opt.dnssl", "ipv6.hlim")
    assert ra and all(line.split("\t") == ["1", lab6.address6, "lab.test", "255"] for line in ra), ra
    assert capture.read("icmpv6.type == 133")


FLOOD = """
import os, socket, sys
from services.dhcp import codec6
index = socket.if_nametoindex("eth0")
with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
    for n in range(300):  # garbage, then SOLICITs from made-up DUIDs (rapid commit: none)
        sock.sendto(os.urandom(n % 90), ("ff02::1:2", 547, 0, index))
        ia = (codec6.IA_NA, codec6.IANA(n).pack())
        solicit = codec6.Message(codec6.SOLICIT, n, [(codec6.CLIENTID, b"\\0\\4" + os.urandom(16)), ia])
        sock.sendto(codec6.pack(solicit), ("ff02::1:2", 547, 0, index))
with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as raw:
    raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    for n in range(50):  # router solicitations with broken options
        raw.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0, 1, 0]) + os.urandom(n), ("ff02::2", 0, 0, index))
"""


def test_a_flood_leaves_nothing_and_stateless_dhclient6_is_answered(lab6: Lab6):
    import os
    import sys

    from services.store import Store
    from tests.conftest import ROOT

    client = lab6.client("stateless")
    flood = client.run(sys.executable, "-c", FLOOD, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert flood.returncode == 0, flood.stderr
    got = lab6.dhclient(client, "stateless", "-S", "-1")
    assert got.returncode == 0, got.stderr
    envs = [parse_env(path) for path in lab6.tmp.glob("stateless.*6")]
    informed = [env for env in envs if "new_dhcp6_name_servers" in env]
    assert informed, [sorted(env) for env in envs]
    assert informed[0]["new_dhcp6_name_servers"] == lab6.address6
    assert informed[0]["new_dhcp6_domain_search"] == "lab.test."
    assert all("new_ip6_address" not in env for env in envs)  # no address: stateless
    wait_for(lambda: "INFORMATION-REQUEST" in lab6.journal(), "INFORMATION-REQUEST in the journal")
    # the flood was answered (what the socket's buffer held of it), and kept nothing
    assert "DHCPv6 ADVERTISE" in lab6.journal()
    store = Store(lab6.data)
    try:
        assert store.net.leases6(include_expired=True) == []
    finally:
        store.close()
    assert "Traceback" not in (lab6.tmp / "serve.stderr").read_text()


def test_leases6_survive_a_restart_and_never_collide(lab6: Lab6):
    first = lab6.client("again")
    assert lab6.dhclient(first, "again", "-1").returncode == 0
    ip = parse_env(lab6.tmp / "again.BOUND6")["new_ip6_address"]
    assert lab6.wait_name("again.lab.test", ip, "AAAA") == ip
    lab6.process.terminate()
    assert lab6.process.wait(10) == 0
    lab6.process = start_server(lab6.server, lab6.tmp / "lab.toml", lab6.data,
                                lab6.tmp / "serve2.stderr")
    assert lab6.dig("+short", "again.lab.test", "AAAA").strip() == ip  # from the store at once
    other = lab6.client("other")
    assert lab6.dhclient(other, "other", "-1").returncode == 0
    assert parse_env(lab6.tmp / "other.BOUND6")["new_ip6_address"] != ip
    # the first client, back with its lease file, has the same address confirmed or renewed
    (lab6.tmp / "again.BOUND6").unlink()
    kill = first.run("sh", "-c", f"kill $(cat {lab6.tmp / 'again.pid'})", check=False)
    assert kill.returncode == 0
    assert lab6.dhclient(first, "again", "-1").returncode == 0
    after = [parse_env(p).get("new_ip6_address") for p in lab6.tmp.glob("again.*6")]
    assert ip in after, after
