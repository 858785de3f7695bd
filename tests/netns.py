"""Test networks of real hosts: network namespaces on a private bridge.

    with Network() as net:                     # root only: call need_root() first
        server = net.host("srv")               # a namespace with a veth on the bridge
        server.run("ip", "addr")               # commands inside it
    # everything is deleted on exit, also when the body or the set-up failed

Names are unique per run (a random tag), addresses come from 10.199.0.0/16 only, and no
route leaves the bridge: nothing a test sends can reach another network.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def run(*command: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}: "
                             f"{result.stderr.strip() or result.stdout.strip()}")
    return result


@dataclass
class Host:
    network: Network
    name: str  # namespace name
    veth: str  # the interface inside the namespace
    address: str  # "" until given one

    def run(self, *command: str, **kw) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.name, *command, **kw)

    def popen(self, *command: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *command], **kw)

    def etc(self, filename: str, text: str) -> None:
        """A file `ip netns exec` mounts over /etc/FILENAME in this host (resolv.conf...)."""
        directory = Path("/etc/netns") / self.name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / filename).write_text(text)


class Network:
    """A bridge in its own namespace, and hosts (namespaces) wired to it by veth pairs."""

    def __init__(self, subnet: int | None = None) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = subnet if subnet is not None else secrets.randbelow(250) + 1  # 10.199.N.0/24
        self.hub = f"pl{self.tag}br"
        self.hosts: list[Host] = []

    def prefix(self) -> str:
        return f"10.199.{self.subnet}"

    def __enter__(self) -> Network:
        try:
            run("ip", "netns", "add", self.hub)
            self._hub("ip", "link", "add", "br0", "type", "bridge")
            self._hub("ip", "link", "set", "br0", "up")
            self._hub("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hub(self, *command: str) -> None:
        run("ip", "netns", "exec", self.hub, *command)

    def host(self, role: str, address: str | None = None) -> Host:
        """A new namespace on the bridge; `address` is the last octet(s) in the subnet, or
        None for a host that gets its address by DHCP."""
        index = len(self.hosts)
        name = f"pl{self.tag}{role}"
        outer = f"pl{self.tag}{index}"
        host = Host(self, name, "eth0", "")
        self.hosts.append(host)  # before making it: close() deletes what exists
        run("ip", "netns", "add", name)
        run("ip", "link", "add", outer, "netns", self.hub, "type", "veth", "peer", "name",
            "eth0", "netns", name)
        self._hub("ip", "link", "set", outer, "master", "br0")
        self._hub("ip", "link", "set", outer, "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "link", "set", "eth0", "up")
        if address is not None:
            host.address = f"{self.prefix()}.{address}"
            host.run("ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        return host

    def close(self) -> None:
        for host in self.hosts:
            # processes left in the namespace (a client daemon) would keep it alive
            pids = run("ip", "netns", "pids", host.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", host.name, check=False)
            shutil.rmtree(Path("/etc/netns") / host.name, ignore_errors=True)
        run("ip", "netns", "del", self.hub, check=False)
