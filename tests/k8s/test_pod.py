"""The Kubernetes lab's Pod for real, without a cluster: a team's lab (deploy/kubernetes/
labs/team-a) rendered by `kubectl kustomize` and run from that YAML by `podman kube play`
(as root; tests/containers/setup.sh prepares podman and the images, tests/k8s/kube.py says
what podman 4.3 lacks and how the test's copy makes up for it). Every container's readiness
probe, `protolab check`, passes; then the client container, on the Pod's network with the
lab DNS as its resolver, runs the container tests' scripted session (tests/containers/
session.py) against it. What the lab costs is measured by tests/bench/k8s.py.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import need, need_root
from tests.containers import engine, session

from . import kube


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[kube.PodLab]:
    need_root()
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        need("podman")  # setup.sh installs it with apt-get: a failure in CI, else a skip
    need("kubectl")  # tests/run installs it
    with kube.lab(tmp_path_factory.mktemp("k8s")) as pod_lab:
        if not pod_lab.services:
            pytest.skip("no services registered")
        yield pod_lab


def test_every_container_serves_its_service_unprivileged_on_a_read_only_root(lab):
    pod = lab.played
    for name in pod.names:
        assert re.search(rf"protolab ready in [\d.]+ s: {name} \(port offset 0\)",
                         pod.logs(name)), pod.logs(name)[-2000:]
        container = pod.container(name)
        assert engine.run("podman", "exec", container, "id", "-un").stdout.strip() == "protolab"
        written = engine.run("podman", "exec", container, "touch", "/etc/protolab-probe",
                             check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr
        ok, output = pod.probe(name, "livenessProbe")
        assert ok, output


def test_the_team_lab_has_its_domain_and_users(lab):
    """labs/team-a's domain and users reached the containers (ConfigMap, Secret)."""
    assert lab.zone.lab.domain == "team-a.lab.test"
    users = engine.run("podman", "exec", lab.played.container("dns"), "protolab", "user",
                       "list").stdout
    assert {"alice", "bob", "team-a"} <= {line.split()[0] for line in users.splitlines()}
    resolv = lab.client("cat /etc/resolv.conf").stdout
    assert f"nameserver {lab.played.ip}" in resolv and "team-a.lab.test" in resolv


def registered(lab: kube.PodLab, *services: str) -> None:
    missing = [s for s in services if s not in lab.services]
    if missing:
        pytest.skip(f"not registered yet: {', '.join(missing)}")


def test_client_resolves_the_lab_names(lab):
    registered(lab, "dns")
    session.resolves_the_lab_names(lab)


def test_client_fetches_a_page_over_http(lab):
    registered(lab, "http")
    session.fetches_a_page_over_http(lab)


def test_client_sends_mail_then_reads_it_over_imap_and_pop3(lab):
    registered(lab, "smtp")
    session.sends_mail_then_reads_it(lab)


def test_client_puts_a_file_over_ftp_and_gets_it_over_smb_and_http(lab):
    registered(lab, "ftp")
    session.puts_a_file_then_gets_it(lab)
