"""The containers: compose.yaml and docker/lab.toml checked against each other and the
compose-spec schema, then, as root with podman (tests/containers/setup.sh prepares it),
the image built and run for real: the all-in-one container, and compose.yaml brought up
with a client container running a scripted session against every registered service
while the capture profile records the lab network for Wireshark.

Only the services registered in services/registry.py are brought up and exercised.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services import config as config_module
from services import registry
from tests.conftest import need, need_root
from tests.containers import engine, session

ROOT = engine.ROOT
LAB_TOML = ROOT / "docker" / "lab.toml"
SERVICES = list(registry.names())


def compose_address(compose: dict, service: str) -> str:
    return compose["services"][service]["networks"]["lab"]["ipv4_address"]


# --- the files, without an engine ------------------------------------------------------

def compose_schema() -> dict:
    """The compose-spec JSON schema, as check-jsonschema ships it (vendored from the
    compose-spec project, kept current by its releases)."""
    from importlib import resources

    pytest.importorskip("check_jsonschema", reason="pip install .[test] brings it")
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


@pytest.mark.parametrize("path", ["compose.yaml", "docker/compose.publish.yaml"])
def test_compose_files_follow_the_compose_spec(path):
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = engine.load_compose(ROOT / path)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    # The schema does reject mistakes (so the check above could fail):
    broken = json.loads(json.dumps(document))
    next(iter(broken["services"].values()))["helthcheck"] = {}
    assert list(validator.iter_errors(broken))


def test_one_container_per_service_from_one_image():
    compose = engine.load_compose()
    lab_services = {name for name, s in compose["services"].items() if "profiles" not in s}
    assert lab_services == {"http", "smtp", "pop3", "imap", "dns", "dhcp", "ftp", "smb"}
    for name in lab_services:
        service = compose["services"][name]
        assert service["image"] == compose["services"]["dns"]["image"]
        assert service["command"] == ["serve", "--only", name]
        assert service["environment"]["PROTOLAB_ONLY"] == name  # the health check's --only
        assert service["healthcheck"]["test"][1:3] == ["protolab", "check"]
        assert "start_interval" in service["healthcheck"]
        assert "data:/var/lib/protolab" in service["volumes"]
        assert "./docker/lab.toml:/etc/protolab/lab.toml:ro" in service["volumes"]
    assert compose["services"]["dhcp"]["cap_add"] == ["NET_ADMIN", "NET_RAW"]
    assert compose["services"]["client"]["dns"] == [compose_address(compose, "dns")]


def test_the_lab_zone_gives_each_service_its_container_address():
    """Every host name of every registered service resolves, in the lab zone that
    docker/lab.toml makes, to the fixed address of that service's container."""
    compose = engine.load_compose()
    lab = config_module.load(LAB_TOML, environ={})
    zone = lab.host_names()
    network = compose["networks"]["lab"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(network["subnet"])
    engine_range = ipaddress.ip_network(network["ip_range"])
    addresses = {}
    for name in ("http", "smtp", "pop3", "imap", "dns", "dhcp", "ftp", "smb"):
        address = ipaddress.ip_address(compose_address(compose, name))
        assert address in subnet and address not in engine_range, name
        addresses[name] = str(address)
    assert len(set(addresses.values())) == len(addresses)
    for name in SERVICES:
        settings = lab.service(name)
        for host in [settings.host, *settings.aliases]:
            assert zone.get(host) == addresses[name], (name, host, zone.get(host))
    assert not subnet.overlaps(ipaddress.ip_network("10.199.0.0/16"))  # the netns tests'


def test_dhcp_pool_lies_outside_what_the_engine_hands_out():
    if "dhcp" not in SERVICES:
        pytest.skip("dhcp is not registered yet")
    compose = engine.load_compose()
    network = compose["networks"]["lab"]["ipam"]["config"][0]
    engine_range = ipaddress.ip_network(network["ip_range"])
    fixed = {ipaddress.ip_address(compose_address(compose, s)) for s in SERVICES}
    pool = dhcp_pool(config_module.load(LAB_TOML, environ={}))
    assert pool and all(ip in ipaddress.ip_network(network["subnet"]) for ip in pool)
    assert not any(ip in engine_range or ip in fixed for ip in pool)


def test_the_image_exposes_every_port_the_lab_listens_on():
    """docker/Dockerfile's EXPOSE has each active listener of docker/lab.toml's lab (HTTP/3
    on UDP 443, DoT and DoH among them), with its transport; FTP's passive range too."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    exposed: set[tuple[int, str]] = set()
    for item in re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split():
        ports, _, transport = item.partition("/")
        low, _, high = ports.partition("-")
        exposed.update((n, transport or "tcp") for n in range(int(low), int(high or low) + 1))
    lab = config_module.load(LAB_TOML, environ={})
    wanted = {(li.port, li.transport) for li in registry.every_listener(lab)
              if li.active and not li.address}  # (the fake root's own addresses: not ports)
    assert wanted <= exposed, wanted - exposed
    assert {(443, "udp"), (853, "tcp"), (8443, "tcp")} <= wanted
    ftp = lab.service("ftp")
    assert {(n, "tcp") for n in range(ftp.passive_low_port, ftp.passive_high_port + 1)} <= exposed


def dhcp_pool(lab) -> list[ipaddress.IPv4Address]:
    from services.dhcp import parse_range

    start, end = map(ipaddress.ip_address, parse_range(lab.service("dhcp").range))
    return [ipaddress.ip_address(n) for n in range(int(start), int(end) + 1)]


@pytest.fixture(scope="module")
def podman() -> None:
    """podman and podman-compose on PATH: as root, setup.sh installs them first (on a fresh
    machine they are not there before the first container test asks)."""
    if shutil.which("podman") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        engine.prepare()
    need("podman-compose", "podman")


def test_publishing_override_announces_the_host_address_in_pasv(podman):
    """docker/compose.publish.yaml on top of compose.yaml (merged by podman-compose): the
    passive range published 1:1, and LAB_HOST_ADDRESS reaching FTP's masquerade address
    through the environment."""
    registered("ftp")
    merged = engine.run("podman-compose", "-f", "compose.yaml", "-f",
                        "docker/compose.publish.yaml", "config",
                        env={"LAB_HOST_ADDRESS": "192.0.2.10"})
    ftp = yaml.safe_load(merged.stdout)["services"]["ftp"]
    assert "30000-30099:30000-30099" in ftp["ports"]
    environ = {k: str(v) for k, v in ftp["environment"].items()}
    assert config_module.load(LAB_TOML, environ).service("ftp").masquerade_address \
        == "192.0.2.10"
    unset = engine.run("podman-compose", "-f", "compose.yaml", "-f",
                       "docker/compose.publish.yaml", "config", check=False,
                       env={"LAB_HOST_ADDRESS": ""})
    assert unset.returncode != 0 and "LAB_HOST_ADDRESS" in unset.stdout + unset.stderr


# --- for real, with podman -------------------------------------------------------------

@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    """podman ready (setup.sh) and both images built; the stand-in base image's name.
    Holds the machine's container-test lock for the whole module."""
    need_root()
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        need("podman")  # setup.sh installs it with apt-get: a failure in CI, else a skip
    with engine.exclusive():
        python_image = engine.prepare()
        engine.build(python_image)
        yield python_image


def test_all_in_one_container_serves_every_service(images, tmp_path):
    """`docker run IMAGE` with no arguments: every registered service in one container,
    as an unprivileged user on the standard ports, healthy; settings from the environment."""
    name = "protolab-test-allinone"
    engine.run("podman", "rm", "-f", name, check=False)
    engine.run("podman", "run", "-d", "--name", name,
               "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
               "-e", "PROTOLAB_DOMAIN=ci.test", "-e", "PROTOLAB_USERS=carol:c4rol",
               engine.IMAGE)
    try:
        output = wait_for_line(name, "protolab ready", timeout=60)
        ready = re.search(r"ready in [\d.]+ s: (.*) \(port offset 0\)", output)
        assert ready and ready.group(1).split() == SERVICES, output
        assert "the environment (PROTOLAB_DOMAIN, PROTOLAB_USERS)" in output
        assert engine.run("podman", "exec", name, "id", "-un").stdout.strip() == "protolab"
        health = engine.run("podman", "healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        if "smtp" in SERVICES:  # the domain from the environment, in a real greeting
            checked = engine.run("podman", "exec", name, "protolab", "check", "--only", "smtp")
            assert "220 mail.ci.test" in checked.stdout, checked.stdout
        users = engine.run("podman", "exec", name, "protolab", "user", "list", "--json")
        assert [u["name"] for u in json.loads(users.stdout)] == ["carol"]
    finally:
        engine.run("podman", "rm", "-f", "-t", "5", name, check=False)


def test_image_entry_point_routes_commands(images, tmp_path):
    """`docker run IMAGE check ...` runs protolab's commands, anything else runs as given,
    and a data folder the lab's user cannot write is one clear line, not a traceback."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return engine.run("podman", "run", "--rm", *args, check=False, timeout=60)

    check = run(engine.IMAGE, "check", "--only", SERVICES[0] if SERVICES else "", "--timeout", "1")
    assert check.returncode == (1 if SERVICES else 0), check.stderr
    assert "did not answer" in check.stderr or not SERVICES
    assert run(engine.IMAGE, "sh", "-c", "echo as given").stdout.strip() == "as given"
    tmp_path.chmod(0o755)  # root's: the lab's user may not write there
    refused = run("-v", f"{tmp_path}:/var/lib/protolab", engine.IMAGE)
    assert refused.returncode == 1
    assert "/var/lib/protolab is not writable by protolab" in refused.stderr


def wait_for_line(container: str, text: str, timeout: float) -> str:
    """The container's output once it holds `text` (podman logs --follow, read until)."""
    process = subprocess.Popen(["podman", "logs", "--follow", container],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while text.encode() not in output and time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            chunk = os.read(process.stdout.fileno(), 65536)  # unbuffered: select stays true
            if not chunk:
                break
            output += chunk
    finally:
        process.kill()
        process.wait()
    decoded = output.decode(errors="replace")
    assert text in decoded, decoded[-3000:]
    return decoded


# --- compose.yaml for real: one container per service, a client, a capture ---------------

CLIENT = "protolab-test-client"


class Lab:
    """The compose lab as the tests see it (a session.Lab): the client container and the
    lab's addresses."""

    def __init__(self, compose: engine.Compose, document: dict, captures: Path) -> None:
        self.compose = compose
        self.document = document
        self.captures = captures
        self.zone = config_module.load(LAB_TOML, environ={})
        self.services = SERVICES

    def address(self, service: str) -> str:
        return compose_address(self.document, service)

    def client(self, script: str, timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess:
        return session.in_client(CLIENT, script, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def lab(images, tmp_path_factory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("compose")
    captures = directory / "captures"
    captures.mkdir()
    env = {"PROTOLAB_IMAGE": engine.IMAGE, "PROTOLAB_CLIENT_IMAGE": engine.CLIENT_IMAGE,
           "CAPTURE_DIR": str(captures)}
    compose = engine.Compose(engine.compose_for_podman(directory), env)
    document = engine.load_compose()

    def down() -> None:
        engine.run("podman", "rm", "-f", "-t", "2", CLIENT, check=False)
        compose("--profile", "client", "--profile", "capture", "down", "-v", "-t", "5",
                check=False)
        engine.run("podman", "network", "rm", "-f", f"{engine.PROJECT}_lab", check=False)

    if not SERVICES:
        pytest.skip("no services registered")
    # dns first, as compose.yaml's depends_on has it; its `up` also makes the lab network
    first, *rest = sorted(SERVICES, key=lambda name: name != "dns")
    down()  # what a failed earlier run may have left
    try:
        compose("up", "-d", "--no-deps", first)
        compose("--profile", "capture", "up", "-d", "--no-deps", "capture")
        wait_for_line(compose.container("capture"), "listening on", timeout=30)  # tcpdump's
        compose.wait_healthy([first])
        if rest:
            compose("up", "-d", "--no-deps", *rest)
            compose.wait_healthy(rest)
        compose("--profile", "client", "run", "-d", "--name", CLIENT, "--no-deps", "client",
                "sleep", "infinity")
        yield Lab(compose, document, captures)
    finally:
        down()


def test_compose_lab_runs_each_service_alone_and_unprivileged(lab):
    for service in SERVICES:
        container = lab.compose.container(service)
        logs = lab.compose.logs(service)
        assert re.search(rf"protolab ready in [\d.]+ s: {service} \(port offset 0\)", logs), logs
        user = engine.run("podman", "exec", container, "id", "-un").stdout.strip()
        assert user == ("root" if service == "dhcp" else "protolab")
    resolv = lab.client("cat /etc/resolv.conf").stdout
    assert f"nameserver {lab.address('dns')}" in resolv and "lab.test" in resolv


def registered(*services: str) -> None:
    missing = [s for s in services if s not in SERVICES]
    if missing:
        pytest.skip(f"not registered yet: {', '.join(missing)}")


def test_client_gets_a_dhcp_lease_from_the_pool(lab):
    registered("dhcp")
    result = lab.client("udhcpc -i eth0 -f -q -n -t 5 -T 2 -x hostname:student1 "
                        "-s /usr/local/bin/lab-lease", timeout=60)
    lease = dict(re.findall(r"(\w+)=(\S*)", result.stdout.split("lease:", 1)[1]))
    pool = dhcp_pool(lab.zone)
    assert ipaddress.ip_address(lease["ip"]) in pool, result.stdout
    assert lease["server"] == lab.address("dhcp")
    if "dns" in SERVICES:
        assert lease["dns"] == lab.address("dns") and lease["domain"] == "lab.test"
        # The lease is written by the dhcp container; the dns container sees it on its next
        # poll of the shared store (promised within 1 s), so allow it a few seconds.
        deadline = time.monotonic() + 5
        while True:
            answer = lab.client("dig +short student1.lab.test").stdout.split()
            if answer == [lease["ip"]] or time.monotonic() > deadline:
                break
        assert answer == [lease["ip"]]


def test_client_resolves_the_lab_names(lab):
    registered("dns")
    session.resolves_the_lab_names(lab)


def test_client_fetches_a_page_over_http(lab):
    registered("http")
    session.fetches_a_page_over_http(lab)


def test_client_sends_mail_then_reads_it_over_imap_and_pop3(lab):
    registered("smtp")
    session.sends_mail_then_reads_it(lab)


def test_client_puts_a_file_over_ftp_and_gets_it_over_smb_and_http(lab):
    registered("ftp")
    session.puts_a_file_then_gets_it(lab)


def test_capture_profile_recorded_the_session_for_wireshark(lab):
    """Last: the capture container's pcap holds the session, and it dissects cleanly."""
    need("tshark")
    engine.run("podman", "stop", "-t", "5", lab.compose.container("capture"))
    pcaps = sorted(lab.captures.glob("lab-*.pcap*"))
    assert pcaps, list(lab.captures.iterdir())
    expected = {"http": "http", "smtp": "smtp", "imap": "imap", "pop3": "pop",
                "dns": "dns", "dhcp": "dhcp", "ftp": "ftp", "smb": "smb2 || smb"}
    for service in SERVICES:
        frames = engine.run("tshark", "-r", str(pcaps[0]), "-Y", expected[service]).stdout
        assert frames.strip(), (f"no {service} traffic in {pcaps[0]}: "
                                f"{lab.compose.logs('capture')}")
    bad = engine.run("tshark", "-r", str(pcaps[0]), "-Y",
                     "_ws.malformed || _ws.expert.severity == error").stdout
    assert not bad.strip(), bad
