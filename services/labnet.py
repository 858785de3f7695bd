"""`protolab net up|down`: a network of hosts on one Linux machine, for DHCP and the rest.

`up` makes a private bridge on this machine with the lab on it (the bridge takes the first
address of [dhcp] network, 10.203.0.0/24 by default) and N client hosts: network namespaces
pc1..pcN, each with a veth on the bridge and no address until DHCP gives one. Each host's
/etc/resolv.conf (and /etc/dhcp, for dhclient) comes from /etc/netns/pcN/, which `ip netns
exec` mounts over /etc: the lab DNS is their resolver, the lab's domain their search domain.
IPv6 too: the bridge takes PREFIX::1 of [dhcp] ipv6_prefix (fd00:203::/64 by default), the
lab's router advertisements give the hosts SLAAC addresses, and dhclient -6 leases more.

Nothing of the machine's own interfaces, routes or resolver changes: the only routes added
are the bridge's own networks, forwarding is off on the bridge, and DHCP gives no router
(the RAs say router lifetime 0), so the hosts reach the bridge and nothing beyond it.

What `up` makes is written to the state file *before* it is made, so `down` removes it from
that file alone, also after a crash halfway. `protolab serve` reads the same file (adopt()):
with no [dhcp] interface it serves DHCP on the bridge, and a lab whose address is the
default 127.0.0.1 (useless inside a namespace) gives its hosts the bridge's address.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import LabConfig, LabSettings

if TYPE_CHECKING:
    from .cli import Commands

BRIDGE = "protolab0"
NET_PREFIX6 = "fd00:203::/64"  # the bridge's IPv6 prefix when [dhcp] ipv6_prefix is unset (a ULA)
STATE = Path("/run/protolab/net.json")  # /run: gone at reboot, like the bridge itself
NETNS_ETC = Path("/etc/netns")
MAX_HOSTS = 50


class NetError(Exception):
    """Why the network cannot be made or taken down, in one line."""


@dataclass
class Net:
    bridge: str
    network: str  # "10.203.0.0/24"
    address: str  # the bridge's address: where the lab serves the hosts
    domain: str
    hosts: list[str]  # namespace names, pc1..pcN
    prefix6: str = ""  # "fd00:203::/64": the bridge has PREFIX::1 ("": a state file from before IPv6)

    @property
    def address6(self) -> str:
        return str(ipaddress.IPv6Network(self.prefix6).network_address + 1) if self.prefix6 else ""

    @staticmethod
    def veth(host: str) -> str:
        """The bridge-side end of a host's cable (the host's own end is its eth0)."""
        return f"veth-{host}"


def state_path() -> Path:
    """PROTOLAB_NET_STATE overrides the path, so a test's network is nobody else's."""
    return Path(os.environ.get("PROTOLAB_NET_STATE") or STATE)


def load_state(path: Path | None = None) -> Net | None:
    path = path or state_path()
    try:
        net = Net(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        raise NetError(f"{path}: unreadable network state ({error}); remove it by hand") from None
    # down deletes what the file names: never anything but a lab bridge and lab hosts
    if not (re.fullmatch(r"protolab\d+", net.bridge) and all(re.fullmatch(r"pc\d+", h) for h in net.hosts)):
        raise NetError(f"{path}: names {net.bridge} and {net.hosts}, not a lab network's; "
                       f"remove it by hand")
    return net


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetError("the ip command is missing (apt install iproute2)") from None
    if check and result.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(_ip("-j", "link", "show").stdout or "[]")}


def _namespaces() -> set[str]:
    return {ns["name"] for ns in json.loads(_ip("-j", "netns", "list").stdout or "[]")}


def _clashes(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """This machine's addresses and routes inside `network`: never touched, so refused."""
    found = []
    family = f"-{network.version}"
    for link in json.loads(_ip("-j", family, "addr", "show").stdout or "[]"):
        for info in link.get("addr_info", []):
            mine = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if mine.overlaps(network):
                found.append(f"{link['ifname']} has {info['local']}/{info['prefixlen']}")
    for route in json.loads(_ip("-j", family, "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("type") in ("local", "broadcast", "multicast", "anycast") \
                or dst.startswith(("fe80:", "ff00:")):
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(network):
            found.append(f"a route to {dst} via {route.get('dev', '?')}")
    return found


def plan(config: LabConfig, hosts: int) -> Net:
    from .dhcp import ipv6_prefix, net_network

    dhcp = config.service("dhcp")
    network = net_network(dhcp.network)
    return Net(bridge=BRIDGE, network=str(network), address=str(network.network_address + 1),
               domain=config.lab.domain, hosts=[f"pc{n}" for n in range(1, hosts + 1)],
               # no IPv6 on a machine that has it off (ipv6.disable=1): IPv4 alone, as before
               prefix6=str(ipv6_prefix(dhcp.ipv6_prefix or NET_PREFIX6))
               if Path("/proc/sys/net/ipv6").exists() else "")


def need_root(action: str) -> None:
    if os.geteuid() != 0:
        raise NetError(f"net {action} needs root (it makes a bridge and network namespaces): "
                       f"run it with sudo")


def up(config: LabConfig, hosts: int) -> tuple[Net, bool]:
    """The network, made now (True) or found already up as asked (False)."""
    need_root("up")
    if not 1 <= hosts <= MAX_HOSTS:
        raise NetError(f"--hosts must be 1..{MAX_HOSTS}")
    net = plan(config, hosts)
    current = load_state()
    if current is not None:
        missing = _missing(current)
        if current.hosts == net.hosts and current.network == net.network and not missing:
            return current, False
        raise NetError(f"a lab network is already up ({describe(current)}"
                       f"{', partly: ' + ', '.join(missing) + ' missing' if missing else ''}): "
                       f"run 'protolab net down' first")
    clashes = _clashes(ipaddress.IPv4Network(net.network))
    if clashes:
        raise NetError(f"{net.network} is in use on this machine ({'; '.join(clashes)}): "
                       f"choose another [dhcp] network")
    clashes = _clashes(ipaddress.IPv6Network(net.prefix6)) if net.prefix6 else []
    if clashes:
        raise NetError(f"{net.prefix6} is in use on this machine ({'; '.join(clashes)}): "
                       f"choose another [dhcp] ipv6_prefix")
    taken = sorted(({net.bridge} | {net.veth(h) for h in net.hosts}) & _links()) + \
        sorted(set(net.hosts) & _namespaces())
    taken += [str(NETNS_ETC / h) for h in net.hosts if (NETNS_ETC / h).exists()]
    if taken:
        raise NetError(f"{', '.join(taken)} exist already and protolab did not make them "
                       f"(no {state_path()})")
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(net), indent=2) + "\n")  # first: down works from here on
    try:
        _make(net)
    except BaseException:
        down()
        raise
    return net, True


def _make(net: Net) -> None:
    prefix = ipaddress.IPv4Network(net.network).prefixlen
    _ip("link", "add", net.bridge, "type", "bridge")
    # the machine may forward (ip_forward=1, as on container hosts): not from this bridge
    Path(f"/proc/sys/net/ipv4/conf/{net.bridge}/forwarding").write_text("0\n")
    _ip("addr", "add", f"{net.address}/{prefix}", "broadcast", "+", "dev", net.bridge)
    if net.prefix6:
        # nor IPv6; the bridge advertises the prefix (the lab's RAs), it takes none itself,
        # and its address is usable at once (nodad: nothing else on a new bridge has it)
        for key, value in (("forwarding", "0"), ("accept_ra", "0"), ("autoconf", "0")):
            Path(f"/proc/sys/net/ipv6/conf/{net.bridge}/{key}").write_text(value + "\n")
        _ip("addr", "add", f"{net.address6}/64", "dev", net.bridge, "nodad")
    _ip("link", "set", net.bridge, "up")
    for host in net.hosts:
        _etc(net, host)
        _ip("netns", "add", host)
        _ip("link", "add", net.veth(host), "type", "veth", "peer", "name", "eth0", "netns", host)
        _ip("link", "set", net.veth(host), "master", net.bridge)
        _ip("link", "set", net.veth(host), "up")
        _ip("-n", host, "link", "set", "lo", "up")
        _ip("-n", host, "link", "set", "eth0", "up")


DHCLIENT_CONF = """\
# protolab net: dhclient in {host} sends its name, which becomes {host}.{domain} in the lab
# DNS. This directory replaces /etc/dhcp inside {host} only, so the machine's own dhclient
# hooks (timesyncd, samba, resolved...) do not run for the lab's hosts.
send host-name "{host}";
# ...and its FQDN option (RFC 4702 for DHCPv4, RFC 4704 for dhclient -6): {host}'s AAAA too
send fqdn.fqdn "{host}";
# the name the server gives back is not this machine's name (dhclient-script would set it
# as the hostname, which a namespace shares with the machine, on a machine named localhost)
supersede host-name "";
request subnet-mask, broadcast-address, domain-name, domain-name-servers, domain-search;
"""


UDHCPC_SCRIPT = """\
#!/bin/sh
# protolab net: udhcpc's events in {host}. This directory replaces /etc/udhcpc inside {host}
# only: Debian's script would call resolvconf when installed, which changes the machine's
# own resolver. This one sets the address and this host's resolv.conf, nothing else.
case "$1" in
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/$mask" ${{broadcast:+broadcast $broadcast}} dev "$interface"
        [ -n "$router" ] && ip -4 route replace default via "${{router%% *}}" dev "$interface"
        {{ [ -n "$domain" ] && echo "search $domain"
          for server in $dns; do echo "nameserver $server"; done; }} > /etc/resolv.conf
        echo "$interface: $ip/$mask from $serverid for $lease s, dns $dns, domain $domain" ;;
    deconfig)
        ip link set "$interface" up
        ip -4 addr flush dev "$interface" ;;
    leasefail|nak)
        echo "$interface: $1 $message" >&2 ;;
esac
"""


def _etc(net: Net, host: str) -> None:
    """Files `ip netns exec HOST` mounts over /etc/NAME: the lab DNS as resolver, and the DHCP
    clients' own configuration (a directory replaces the machine's whole /etc/NAME)."""
    etc = NETNS_ETC / host
    (etc / "dhcp").mkdir(parents=True)
    (etc / "udhcpc").mkdir()
    nameservers = "".join(f"nameserver {a}\n" for a in (net.address, net.address6) if a)
    (etc / "resolv.conf").write_text(
        f"# protolab net: the lab DNS on the bridge\n{nameservers}search {net.domain}\n")
    (etc / "dhcp" / "dhclient.conf").write_text(DHCLIENT_CONF.format(host=host, domain=net.domain))
    script = etc / "udhcpc" / "default.script"
    script.write_text(UDHCPC_SCRIPT.format(host=host))
    script.chmod(0o755)


def _missing(net: Net) -> list[str]:
    links, spaces = _links(), _namespaces()
    return [name for name in [net.bridge, *map(net.veth, net.hosts)] if name not in links] + \
        [host for host in net.hosts if host not in spaces]


def down() -> Net | None:
    """Remove everything the state file says `up` made (what exists of it); None if no net."""
    need_root("down")
    net = load_state()
    if net is None:
        return None
    for host in net.hosts:
        # a client left running (dhclient's daemon) would keep the namespace and its veth alive
        for pid in _ip("netns", "pids", host, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", host, check=False)
        _ip("link", "del", net.veth(host), check=False)
        shutil.rmtree(NETNS_ETC / host, ignore_errors=True)
    _ip("link", "del", net.bridge, check=False)
    gone = _missing(net)
    stuck = [name for name in [net.bridge, *map(net.veth, net.hosts), *net.hosts] if name not in gone]
    if stuck:
        raise NetError(f"could not remove {', '.join(stuck)}; {state_path()} kept for a retry")
    state_path().unlink(missing_ok=True)
    for directory in (NETNS_ETC, state_path().parent):  # made by `up` if it was the first
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty: someone else's too
    return net


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def adopt(config: LabConfig) -> Net | None:
    """Serve the hosts of a network that is up: DHCP on its bridge when [dhcp] interface is
    unset (without a router: the hosts reach only the bridge), and the bridge's addresses as
    the lab's when [lab] address is the default 127.0.0.1 (and address6 the default ::1),
    which mean nothing to a host in a namespace. Also correct on the machine itself: the
    bridge's addresses are local."""
    try:
        net = load_state()
    except NetError:
        return None
    if net is None or "dhcp" not in config.services or not link_exists(net.bridge):
        return None
    dhcp = config.service("dhcp")
    if not dhcp.interface:
        dhcp.interface = net.bridge
        dhcp.router = dhcp.router or "none"
        dhcp.ipv6_prefix = dhcp.ipv6_prefix or net.prefix6
    if config.lab.address == LabSettings().address:
        config.lab.address = net.address
        # likewise the AAAA records: the bridge's IPv6 address, where the hosts reach us
        if net.address6 and config.lab.address6 == LabSettings().address6:
            config.lab.address6 = net.address6
    return net


def describe(net: Net) -> str:
    hosts = net.hosts[0] if len(net.hosts) == 1 else f"{net.hosts[0]}..{net.hosts[-1]}"
    v6 = f", IPv6 {net.address6} on {net.prefix6}" if net.prefix6 else ""
    return f"bridge {net.bridge} {net.address} on {net.network}, hosts {hosts}{v6}"


# --- the commands ----------------------------------------------------------------------

def add_commands(commands: Commands) -> None:
    net = commands.add("net", help="a network of client hosts (namespaces) on a bridge")
    sub = net.add_subparsers(dest="action", required=True, metavar="ACTION")
    make = sub.add_parser("up", help="make the bridge and hosts pc1..pcN (root)")
    commands.common(make, data=False)
    make.add_argument("--hosts", type=int, default=2, metavar="N", help="how many hosts (default 2)")
    sub.add_parser("down", help="remove everything 'net up' made, also after a crash (root)")
    net.set_defaults(func=lambda args: run(args, commands))


def run(args: argparse.Namespace, commands: Commands) -> int:
    try:
        if args.action == "up":
            net, made = up(commands.config(args), args.hosts)
            print(f"{'made' if made else 'already up:'} {describe(net)}")
            print(f"next: sudo protolab serve, then: sudo ip netns exec {net.hosts[0]} dhclient -v eth0"
                  f" (IPv6: the host's SLAAC address comes by itself; dhclient -6 -v eth0 leases one)")
        else:
            removed = down()
            print(f"removed {describe(removed)}" if removed
                  else f"no lab network is up (no {state_path()})")
    except NetError as error:
        raise commands.Error(str(error)) from None
    return 0
