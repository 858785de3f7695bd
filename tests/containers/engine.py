"""Driving podman and podman-compose for the container tests (tests/lab/test_containers.py).

This machine has no Docker engine and reaches no registry: setup.sh prepares podman and a
stand-in for the official Python base image once per machine; here we build the project's
images on it and bring compose.yaml up under a project name of its own, adapted to what
podman 4.3 lacks (see `compose_for_podman`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "tests" / "containers" / "setup.sh"
IMAGE = "localhost/protolab:test"
CLIENT_IMAGE = "localhost/protolab-client:test"
PROJECT = "protolab-test"  # never a user's own "protolab" project
ENV = {**os.environ, "BUILDAH_ISOLATION": "chroot"}


class EngineError(AssertionError):
    pass


def run(*command: str, timeout: float = 120, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a podman (or other) command; on failure raise with its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**ENV, **(env or {})}, cwd=ROOT)
    if check and result.returncode != 0:
        raise EngineError(f"{' '.join(command)} exited {result.returncode}:\n"
                          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One container test run at a time on this machine: runs share the image tags, the
    project name and compose.yaml's fixed subnet."""
    with open("/run/protolab-container-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare() -> str:
    """Run setup.sh (idempotent): podman ready, the stand-in Python base image's name."""
    return run("bash", str(SETUP), timeout=900).stdout.strip().splitlines()[-1]


def build(python_image: str) -> None:
    """Build the service image and the client image on the stand-in base (layer cache: a
    rebuild with unchanged sources takes seconds)."""
    run("podman", "build", "-q", "--format", "docker", "-f", "docker/Dockerfile",
        "--build-arg", f"PYTHON_IMAGE={python_image}", "-t", IMAGE, ".", timeout=900)
    base = python_image.replace("protolab-python", "protolab-base")
    run("podman", "build", "-q", "--format", "docker", "-f", "docker/client.Dockerfile",
        "--build-arg", f"DEBIAN_IMAGE={base}", "-t", CLIENT_IMAGE, ".", timeout=900)


def image_size(image: str) -> int:
    return int(run("podman", "image", "inspect", "--format", "{{.Size}}", image).stdout)


def load_compose(path: Path = ROOT / "compose.yaml") -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def compose_for_podman(directory: Path) -> Path:
    """compose.yaml as podman 4.3 and podman-compose 1.6 can run it, written to directory:
    relative paths made absolute (the copy lives elsewhere); healthcheck start_interval
    dropped (podman 4.3 has no --health-startup-interval; 4.6+ and Docker 25+ have it); the
    network's ip_range dropped (podman 4.3's CNI host-local IPAM refuses fixed addresses
    outside it, which Docker accepts: the engine then hands the client any free address)."""
    compose = load_compose()
    for network in compose["networks"].values():
        for pool in network.get("ipam", {}).get("config", []):
            pool.pop("ip_range", None)
    for service in compose["services"].values():
        if "build" in service:
            service["build"]["context"] = str(ROOT)
        service.get("healthcheck", {}).pop("start_interval", None)
        volumes = service.get("volumes", [])
        for index, volume in enumerate(volumes):
            if volume.startswith("./"):
                volumes[index] = str(ROOT / volume[2:])
    path = directory / "compose.yaml"
    path.write_text(yaml.safe_dump(compose, sort_keys=False))
    return path


@dataclass
class Compose:
    """podman-compose on one compose file under the test's project name."""

    file: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 180, check: bool = True
                 ) -> subprocess.CompletedProcess:
        return run("podman-compose", "-p", PROJECT, "-f", str(self.file), *args,
                   timeout=timeout, check=check, env=self.env)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def wait_healthy(self, services: list[str], timeout: float = 90) -> None:
        """Run each container's health check (`protolab check`) until it passes. podman
        runs health checks from systemd timers, and there is no systemd here, so the test
        runs them itself: `podman healthcheck run` is the check Docker would run."""
        deadline = time.monotonic() + timeout
        pending = list(services)
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            for service in list(pending):
                result = run("podman", "healthcheck", "run", self.container(service),
                             check=False, timeout=60)
                if result.returncode == 0:
                    pending.remove(service)
                else:
                    last[service] = (result.stdout + result.stderr).strip()
            if pending:
                time.sleep(1)  # the next health check, like the engine's start_interval
        if pending:
            logs = {s: self.logs(s)[-1500:] for s in pending}
            raise EngineError(f"not healthy within {timeout} s: {pending}; last check: "
                              f"{last}; logs: {logs}")

    def logs(self, service: str) -> str:
        result = run("podman", "logs", self.container(service), check=False)
        return result.stdout + result.stderr

    def exec(self, container: str, *command: str, timeout: float = 60,
             check: bool = True) -> subprocess.CompletedProcess:
        return run("podman", "exec", container, *command, timeout=timeout, check=check)
