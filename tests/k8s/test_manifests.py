"""deploy/kubernetes without a cluster: every overlay rendered by `kubectl kustomize` (the
one in Debian's kubernetes-client, kustomize 2, or a newer kubectl) validates against the
Kubernetes JSON schemas that kubernetes-validate ships, and says what the lab needs:
compose.yaml's services in one Pod, unprivileged and read-only, probed by `protolab check`;
the publishing overlay's LoadBalancer with FTP's passive range and masquerade address; a
namespace, a domain and a NetworkPolicy per team; the CI recipes.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import config as config_module
from tests.conftest import need
from tests.containers import engine

from . import kube

# The oldest Kubernetes the manifests are for: 1.29 turned native sidecars (ci/job.yaml) on.
KUBERNETES = "1.29.0"
RENDERED = ["base", "publish", "multus", "ci/service", "labs/team-a", "labs/team-b", "labs"]
NOT_IN_THE_SCHEMAS = {"NetworkAttachmentDefinition"}  # Multus's CRD


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    need("kubectl")
    return {name: kube.render(kube.DEPLOY / name) for name in RENDERED}


def job() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((kube.DEPLOY / "ci" / "job.yaml").read_text()))


def schema_errors(document: dict[str, Any]) -> list[str]:
    kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                              reason="pip install .[test] brings it")
    try:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{document['kind']}/{document['metadata']['name']}: {error.message} "
                f"at {'/'.join(map(str, error.path))}"]
    return []


@pytest.mark.parametrize("name", [*RENDERED, "ci/job.yaml"])
def test_manifests_follow_the_kubernetes_schemas(rendered, name):
    documents = job() if name == "ci/job.yaml" else rendered[name]
    errors = [e for d in documents if d["kind"] not in NOT_IN_THE_SCHEMAS
              for e in schema_errors(d)]
    assert not errors, errors
    # The schemas do reject mistakes (strict: unknown fields too), so the check could fail:
    broken = copy.deepcopy(next(d for d in documents if d["kind"] in ("Deployment", "Job")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert schema_errors(broken)


def containers(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in kube.pod_spec(documents)["containers"]}


def published_ports(compose: dict[str, Any], service: str) -> set[tuple[int, str]]:
    """The container ports docker/compose.publish.yaml publishes for a service, with
    their protocols ("443:443/udp" is HTTP/3's)."""
    ports = compose["services"].get(service, {}).get("ports", [])
    numbers: set[tuple[int, str]] = set()
    for port in ports:
        target, _, protocol = port.split(":")[-1].partition("/")
        low, _, high = target.partition("-")
        numbers.update((number, (protocol or "tcp").upper())
                       for number in range(int(low), int(high or low) + 1))
    return numbers


def test_the_pod_holds_compose_services_but_dhcp_on_one_store(rendered):
    """One container per service, as compose.yaml has them (DHCP left out), each serving
    only its own, probed by `protolab check` for it, all on the store's volume; the ports
    those compose publishes (DNS's besides), and the Service has each."""
    documents = rendered["base"]
    compose = engine.load_compose()
    lab_services = {n for n, s in compose["services"].items() if "profiles" not in s}
    pod = containers(documents)
    assert set(pod) == lab_services - {"dhcp"}
    publish = engine.load_compose(engine.ROOT / "docker" / "compose.publish.yaml")
    service = kube.one(documents, "Service")
    service_ports = {(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]}
    for name, container in pod.items():
        assert container["args"] == ["serve", "--only", name]
        assert kube.environment(container, documents)["PROTOLAB_ONLY"] == name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"][:2] == ["protolab", "check"], probe
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/var/lib/protolab"]["name"] == "data"
        assert mounts["/etc/protolab"]["readOnly"] is True
        ports = {(p["containerPort"], p["protocol"]) for p in container["ports"]}
        expected = {(p, proto) for p, proto in published_ports(publish, name)
                    if not 30000 <= p < 30100}
        if name == "dns":  # 53 is not published on the host (its own resolver's)
            expected |= {(53, "UDP"), (53, "TCP")}
        assert ports == expected, name
        assert ports <= service_ports, name
    volumes = {v["name"]: v for v in kube.pod_spec(documents)["volumes"]}
    claim = kube.one(documents, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    deployment = kube.one(documents, "Deployment")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"


def dockerfile_uid() -> int:
    text = (engine.ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(r"useradd .*--uid (\d+) .*protolab", text)
    assert match, "the Dockerfile's useradd"
    return int(match[1])


@pytest.mark.parametrize("name", ["base", "multus", "labs/team-a"])
def test_the_lab_runs_unprivileged_on_a_read_only_root(rendered, name):
    documents = rendered[name]
    spec = kube.pod_spec(documents)
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == context["fsGroup"] == dockerfile_uid()
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in context["sysctls"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False  # no PROTOLAB_* variables from Services
    for container_name, container in containers(documents).items():
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container_name
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        if container_name == "dhcp":  # multus only: raw sockets on the lab switch
            assert security["runAsUser"] == 0
            assert security["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
        else:
            assert "runAsUser" not in security and "add" not in security["capabilities"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and resources["limits"]["memory"]
    assert "dhcp" in containers(documents) or name != "multus"


def lab_config(documents: list[dict[str, Any]], container: str, tmp_path: Path
               ) -> config_module.LabConfig:
    config: config_module.LabConfig = kube.zone(documents, tmp_path, container)
    return config


def test_the_lab_zone_answers_the_pods_ip(rendered):
    """In the base every name of the zone is the Pod's IP (the downward API), where every
    container listens."""
    for container in containers(rendered["base"]).values():
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["PROTOLAB__lab__address"]["value"] == "$(POD_IP)"
        names = [e["name"] for e in container["env"]]
        assert names.index("POD_IP") < names.index("PROTOLAB__lab__address")  # expansion


def test_publishing_overlay_gives_students_the_load_balancer(rendered, tmp_path):
    """As docker/compose.publish.yaml: the standard ports and FTP's passive range 1:1 at
    the LoadBalancer's address, which PASV replies announce (masquerade address) and every
    name of the zone answers; the students' network let in."""
    documents = rendered["publish"]
    public = kube.one(documents, "Service", "protolab-public")["spec"]
    assert public["type"] == "LoadBalancer"
    address = public["loadBalancerIP"]
    ftp = lab_config(documents, "ftp", tmp_path).service("ftp")
    assert ftp.masquerade_address == address
    passive = set(range(ftp.passive_low_port, ftp.passive_high_port + 1))
    ports = {p["port"]: p for p in public["ports"]}
    assert passive and passive <= set(ports)
    assert all(ports[p]["targetPort"] == p for p in passive)  # 1:1, or PASV breaks
    def pairs(spec: dict[str, Any]) -> set[tuple[int, str]]:
        return {(p["port"], p.get("protocol", "TCP")) for p in spec["ports"]
                if p["port"] not in passive}
    inside = kube.one(documents, "Service", "protolab")["spec"]
    assert pairs(public) == pairs(inside)
    assert {(443, "UDP"), (853, "TCP"), (8443, "TCP")} <= pairs(public)  # HTTP/3, DoT, DoH
    for name in containers(documents):
        assert lab_config(documents, name, tmp_path).lab.address == address, name
    policy = kube.one(documents, "NetworkPolicy")["spec"]["ingress"]
    assert {"podSelector": {}} in policy[0]["from"]
    assert any("ipBlock" in source for rule in policy for source in rule["from"])


def test_each_team_lab_has_its_namespace_domain_users_and_isolation(rendered, tmp_path):
    """labs/ renders every team's lab: each object in the team's namespace (made there
    too), a domain of its own, users of its own, and a NetworkPolicy admitting only Pods of
    that namespace, so labs cannot reach each other."""
    roster = rendered["labs"]
    namespaces = {d["metadata"]["name"] for d in roster if d["kind"] == "Namespace"}
    assert namespaces == {"lab-team-a", "lab-team-b"}
    domains = set()
    for namespace in namespaces:
        team = [d for d in roster if d["metadata"].get("namespace") == namespace]
        assert team == [d for d in rendered[f"labs/{namespace.removeprefix('lab-')}"]
                        if d["kind"] != "Namespace"]
        config = lab_config(team, "dns", tmp_path)
        assert config.lab.domain == f"{namespace.removeprefix('lab-')}.lab.test"
        domains.add(config.lab.domain)
        assert "alice" in {u.name for u in config.users}
        assert config.api.admin_password != "admin"
        policy = kube.one(team, "NetworkPolicy")["spec"]
        assert policy["podSelector"]["matchLabels"] == \
            kube.one(team, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert policy["policyTypes"] == ["Ingress"]
        assert policy["ingress"] == [{"from": [{"podSelector": {}}]}]  # no namespaceSelector
    assert len(domains) == len(namespaces)
    others = [d for d in roster if d["kind"] != "Namespace"
              and d["metadata"].get("namespace") not in namespaces]
    assert not others


def test_ci_recipes_wait_for_the_lab(rendered):
    """ci/job.yaml: the all-in-one lab as a native sidecar whose startup probe (`protolab
    check`) holds the tests back, on an emptyDir; ci/service: the base on an emptyDir."""
    spec = kube.one(job(), "Job")["spec"]["template"]["spec"]
    (lab,) = spec["initContainers"]
    assert lab["restartPolicy"] == "Always"
    assert lab["startupProbe"]["exec"]["command"][:2] == ["protolab", "check"]
    assert "dhcp" not in lab["env"][0]["value"].split(",")  # PROTOLAB_ONLY
    assert lab["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"name": "data", "emptyDir": {}} in spec["volumes"]
    service = rendered["ci/service"]
    assert not [d for d in service if d["kind"] == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in kube.pod_spec(service)["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
