"""deploy/kubernetes rendered with `kubectl kustomize`, and the lab's Pod run from the
rendered YAML by `podman kube play` (there is no cluster here: tests/k8s, tests/bench/k8s.py).

podman 4.3 (Debian 12) plays a Deployment's Pod, its ConfigMaps and its PersistentVolumeClaim
as a cluster would, but lacks some of what the manifests use and adds what they do not say;
`for_podman` and `played` adapt the test's copy only, as tests/containers/engine.py does
for compose.yaml:
  - the downward API's status.podIP: the Pod is given a fixed IP (`--ip`) and POD_IP that
    value; nor does it expand $(NAME) in env values (the kubelet does), so the copy has them
    expanded;
  - Secrets: kube play stores a Secret document in a form its own envFrom cannot read back
    ("is not valid JSON"), so the Secret is made a podman secret first, as the JSON object of
    its base64 `data` (the form kube play reads), and left out of the YAML;
  - every containerPort is published on the host at the same port (Kubernetes publishes
    none): the copy has no ports, which in a Pod only inform (Services name them, and
    podman ignores Services), so the test binds nothing on the host;
  - the Pod's securityContext.sysctls are ignored: the lab's Pod gets
    net.ipv4.ip_unprivileged_port_start=0 from a containers.conf of the test's own
    (CONTAINERS_CONF: the machine's, plus default_sysctls).
Probes are not run by podman (only the liveness probe becomes a health check, and no systemd
times it): `Played.wait_ready` runs each container's readiness probe command itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.containers import engine, session

DEPLOY = engine.ROOT / "deploy" / "kubernetes"
PREFIX = "protolab-k8s-test-"  # every name the test makes: never a user's own lab's
NETWORK = "protolab-k8s-test"
SUBNET = "172.29.55.0/24"  # beside compose.yaml's 172.29.53.0/24
POD_IP = "172.29.55.10"
CLIENT = "protolab-k8s-test-client"


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY`: the documents it renders."""
    result = engine.run("kubectl", "kustomize", str(directory))
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def overlay(directory: Path, base: Path, **fields: Any) -> Path:
    """A kustomization in `directory` on top of `base` (kustomize 2 takes only relative
    bases), with the given fields (images, namePrefix, patches...)."""
    kustomization = {"bases": [os.path.relpath(base, directory)], **fields}
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None
        ) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(documents, "Deployment")["spec"]["template"]["spec"]
    return spec


def environment(container: dict[str, Any], documents: list[dict[str, Any]],
                ip: str = POD_IP) -> dict[str, str]:
    """A container's environment as the kubelet makes it: envFrom's ConfigMaps and Secrets,
    then env in order, `ip` for the downward API's status.podIP and $(NAME) expanded."""
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environ.update(one(documents, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            data = one(documents, "Secret", source["secretRef"]["name"])["data"]
            environ.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    for variable in container.get("env", []):
        field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        value = ip if field == "status.podIP" else variable.get("value")
        if value is not None:
            environ[variable["name"]] = re.sub(r"\$\((\w+)\)",
                                               lambda m: environ.get(m[1], m[0]), value)
    return environ


def for_podman(documents: list[dict[str, Any]], ip: str
               ) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """The rendered documents as podman 4.3's kube play runs them (module doc), and the
    podman secrets to create first (name -> the JSON object kube play reads)."""
    original = documents
    documents = json.loads(json.dumps(documents))
    secrets = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "Secret"}
    for container in pod_spec(documents)["containers"]:
        container.pop("ports", None)
        environ = environment(container, original, ip)
        for variable in container.get("env", []):
            variable.pop("valueFrom", None)
            variable["value"] = environ[variable["name"]]
    return [d for d in documents if d["kind"] != "Secret"], secrets


def containers_conf(directory: Path) -> Path:
    """The machine's containers.conf (tests/containers/setup.sh wrote it) plus the low-ports
    sysctl for every container, which the lab's Pod asks for and podman 4.3 ignores."""
    machine = Path("/etc/containers/containers.conf")
    text = machine.read_text() if machine.exists() else ""
    line = 'default_sysctls = ["net.ipv4.ip_unprivileged_port_start=0"]\n'
    if "[containers]\n" in text:
        text = text.replace("[containers]\n", f"[containers]\n{line}", 1)
    else:
        text += f"\n[containers]\n{line}"
    path = directory / "containers.conf"
    path.write_text(text)
    return path


def go_seconds(duration: str) -> float:
    """A Go duration as podman prints it (1m2.5s, 350ms, 2.1µs) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([\d.]+)(h|ms|m|s|us|µs|ns)", duration)
    assert parts, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@dataclass
class Sample:
    cpu_seconds: float  # since the container started
    memory_bytes: int


@dataclass
class Played:
    """The lab's Pod under podman, as kube play made it from `documents`."""

    documents: list[dict[str, Any]]
    pod: str
    ip: str

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in pod_spec(self.documents)["containers"]]

    def container(self, name: str) -> str:
        return f"{self.pod}-{name}"

    def probe(self, name: str, kind: str = "readinessProbe") -> tuple[bool, str]:
        """Run a container's probe command in it, as the kubelet's exec probe does."""
        spec = next(c for c in pod_spec(self.documents)["containers"] if c["name"] == name)
        result = engine.run("podman", "exec", self.container(name),
                            *spec[kind]["exec"]["command"], check=False, timeout=60)
        return result.returncode == 0, (result.stdout + result.stderr).strip()

    def wait_ready(self, timeout: float = 180) -> None:
        """Every container's readiness probe, until each has passed once."""
        deadline = time.monotonic() + timeout
        pending = self.names
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                ok, last[name] = self.probe(name)
                if ok:
                    pending.remove(name)
            if pending:
                time.sleep(1)  # the next probe, as a startupProbe's period
        if pending:
            logs = {name: self.logs(name)[-1500:] for name in pending}
            raise engine.EngineError(f"not ready within {timeout} s: {pending}; "
                                     f"last probe: {last}; logs: {logs}")

    def logs(self, name: str) -> str:
        result = engine.run("podman", "logs", self.container(name), check=False)
        return result.stdout + result.stderr

    def stats(self) -> dict[str, Sample]:
        """Each container's CPU time and memory now."""
        samples = stats(*map(self.container, self.names))
        return {name.removeprefix(f"{self.pod}-"): s for name, s in samples.items()}

    def peak_memory(self, name: str) -> int:
        """The most memory the container's cgroup has held (cgroup v1's max_usage_in_bytes;
        v2's memory.peak), in bytes."""
        path = engine.run("podman", "inspect", "--format", "{{.State.CgroupPath}}",
                          self.container(name)).stdout.strip()
        relative = path.lstrip("/")
        for candidate in (Path("/sys/fs/cgroup/memory", relative, "memory.max_usage_in_bytes"),
                          Path("/sys/fs/cgroup", relative, "memory.peak")):
            if candidate.exists():
                return int(candidate.read_text())
        raise engine.EngineError(f"no memory peak for {name} under {path}")


def stats(*containers: str) -> dict[str, Sample]:
    """Containers' CPU time and memory now (podman stats: the cgroups' figures), by name."""
    output = engine.run("podman", "stats", "--no-stream", "--format", "json", *containers)
    samples = {}
    for entry in json.loads(output.stdout):
        used = entry["mem_usage"].split("/")[0].strip()
        samples[entry["name"]] = Sample(go_seconds(entry["cpu_time"]), size_bytes(used))
    return samples


def size_bytes(size: str) -> int:
    """podman's sizes (32.88MB, 1.2GB, 830kB: powers of 1000)."""
    match = re.fullmatch(r"([\d.]+)\s*([kMG]?B)", size)
    assert match, size
    number, unit = match.groups()
    return int(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


@contextlib.contextmanager
def played(documents: list[dict[str, Any]], directory: Path, ip: str = POD_IP
           ) -> Iterator[Played]:
    """`podman kube play` of the rendered documents on a network of the test's own, the Pod
    at `ip`; everything it made (Pod, volumes, secrets, network) removed afterwards."""
    adapted, secrets = for_podman(documents, ip)
    manifest = directory / "lab.yaml"
    manifest.write_text(yaml.safe_dump_all(adapted, sort_keys=False))
    deployment = one(documents, "Deployment")["metadata"]["name"]
    pod = f"{deployment}-pod-0"  # how kube play names a Deployment's Pod
    volumes = [d["metadata"]["name"] for d in adapted
               if d["kind"] in ("PersistentVolumeClaim", "ConfigMap")]
    env = {"CONTAINERS_CONF": str(containers_conf(directory))}

    def down() -> None:
        engine.run("podman", "pod", "rm", "-f", "-t", "5", pod, check=False)
        for volume in volumes:
            engine.run("podman", "volume", "rm", "-f", volume, check=False)
        for secret in secrets:
            engine.run("podman", "secret", "rm", secret, check=False)
        engine.run("podman", "network", "rm", "-f", NETWORK, check=False)

    down()  # what a failed earlier run may have left
    try:
        engine.run("podman", "network", "create", "--subnet", SUBNET, NETWORK)
        for name, data in secrets.items():
            source = directory / f"{name}.json"
            source.write_text(json.dumps(data))
            engine.run("podman", "secret", "create", name, str(source))
            source.unlink()
        engine.run("podman", "kube", "play", "--network", NETWORK, "--ip", ip, str(manifest),
                   env=env, timeout=300)
        yield Played(documents, pod, ip)
    finally:
        down()


@contextlib.contextmanager
def client(domain: str, ip: str = POD_IP) -> Iterator[str]:
    """The client container (docker/client.Dockerfile) on the Pod's network, its resolver
    the lab DNS at the Pod's IP, as a student's Pod in the lab's namespace would have."""
    engine.run("podman", "rm", "-f", "-t", "2", CLIENT, check=False)
    try:
        engine.run("podman", "run", "-d", "--name", CLIENT, "--network", NETWORK,
                   "--dns", ip, "--dns-search", domain, engine.CLIENT_IMAGE,
                   "sleep", "infinity")
        yield CLIENT
    finally:
        engine.run("podman", "rm", "-f", "-t", "2", CLIENT, check=False)


@dataclass
class PodLab:
    """The lab's Pod as the client session sees it (a tests.containers.session.Lab): every
    service at the Pod's IP, the zone as the lab's containers read it."""

    played: Played
    zone: Any
    services: list[str]
    client_container: str

    def address(self, service: str) -> str:
        return self.played.ip

    def client(self, script: str, timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess:
        return session.in_client(self.client_container, script, timeout=timeout, check=check)


def zone(documents: list[dict[str, Any]], directory: Path, container: str | None = None,
         ip: str = POD_IP) -> Any:
    """The lab config as a container of the Pod (the first unless named) loads it: the
    ConfigMap's lab.toml, then the PROTOLAB variables of its environment."""
    from services import config as config_module

    spec = pod_spec(documents)
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    lab_toml = directory / "lab.toml"
    lab_toml.write_text(one(documents, "ConfigMap", volume["configMap"]["name"])
                        ["data"]["lab.toml"])
    chosen = next(c for c in spec["containers"] if container in (None, c["name"]))
    environ = environment(chosen, documents, ip)
    return config_module.load(lab_toml, {k: v for k, v in environ.items()
                                         if k.startswith("PROTOLAB")})


def overlay_for_tests(directory: Path, base: Path = DEPLOY / "labs" / "team-a") -> Path:
    """The overlay the tests play: a team's lab (its domain and users), the image the
    container tests build, and names of the test's own."""
    return overlay(directory, base, namePrefix=PREFIX,
                   images=[{"name": "protolab", "newName": engine.IMAGE.rsplit(":", 1)[0],
                            "newTag": engine.IMAGE.rsplit(":", 1)[1]}])


@contextlib.contextmanager
def lab(directory: Path) -> Iterator[PodLab]:
    """The whole set-up, as root with podman: the images built (tests/containers), the test
    overlay rendered and played, every container ready, the client beside it. Holds the
    container tests' machine lock throughout (same image tags)."""
    from services import registry

    with engine.exclusive():
        engine.build(engine.prepare())
        documents = render(overlay_for_tests(directory))
        config = zone(documents, directory)
        with played(documents, directory) as pod:
            pod.wait_ready()
            with client(config.lab.domain) as container:
                services = [n for n in registry.names() if n in pod.names]
                yield PodLab(pod, config, services, container)
