"""The README's set-up: its lines, as copied, on a fresh Debian whose python3 is externally
managed (PEP 668), as an unprivileged user and as root; and `pip install .` into a fresh
environment here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, need, need_root


def readme_setup_lines() -> list[str]:
    """The commands of the README's "Set up" block, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set up"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Set up section has no sh block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_readme_setup_block_is_what_the_container_test_runs():
    lines = readme_setup_lines()
    assert lines[0].startswith("sudo apt install "), lines  # the one system prerequisite
    assert lines[-1] == "protolab serve", lines


def test_pip_install_then_protolab_works(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # impacket puts an example script called services.py beside ours: the reason for
    # protolab.py. Without that entry point this command fails with "'services' is not a package".
    assert (venv / "bin" / "services.py").exists()

    def protolab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "protolab"), *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=60)

    assert protolab("--version").stdout.startswith("protolab ")
    assert protolab("init", str(tmp_path)).returncode == 0
    added = protolab("user", "add", "carol", "--password", "c", "--data", str(tmp_path / "d"))
    assert added.returncode == 0, added.stderr
    listed = protolab("user", "list", "--data", str(tmp_path / "d"), "--config",
                      str(tmp_path / "lab.toml"))
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["alice", "bob", "carol"]


# --- on a fresh Debian, in the container tests' debootstrap base image ------------------

CONTAINER = "protolab-test-setup"


def _checkout_tar(path: Path) -> Path:
    """The checkout as a user would have it: tracked and new files, nothing ignored (no
    .venv-tests, no caches)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    with tarfile.open(path, "w") as tar:
        for name in filter(None, listed):
            if (ROOT / name).exists():
                tar.add(ROOT / name, arcname=f"protolab/{name}", recursive=False)
    return path


@pytest.fixture(scope="module")
def debian(tmp_path_factory) -> Iterator[str]:
    """A running container of the base image (Debian 12's own python3), with the checkout
    in /root/protolab and /home/student/protolab; its name."""
    need_root()
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        need("podman")
    from tests.containers import engine

    with engine.exclusive():
        image = engine.prepare()  # localhost/protolab-python: the base, trusting the host CAs
        engine.run("podman", "rm", "-f", CONTAINER, check=False)
        engine.run("podman", "run", "-d", "--name", CONTAINER, image, "sleep", "infinity")
        try:
            tar = _checkout_tar(tmp_path_factory.mktemp("setup") / "checkout.tar")
            engine.run("podman", "cp", str(tar), f"{CONTAINER}:/tmp/checkout.tar")
            engine.run("podman", "exec", CONTAINER, "bash", "-euc",
                       "useradd -m student && tar -C /root -xf /tmp/checkout.tar"
                       " && tar -C /home/student -xf /tmp/checkout.tar"
                       " && chown -R student: /home/student/protolab")
            yield CONTAINER
        finally:
            engine.run("podman", "rm", "-f", "-t", "2", CONTAINER, check=False)


def _exec(container: str, user: str, script: str, timeout: float = 900
          ) -> subprocess.CompletedProcess:
    home = "/root" if user == "root" else f"/home/{user}"
    return subprocess.run(["podman", "exec", "--user", user, "-w", f"{home}/protolab",
                           container, "bash", "-euc", script],
                          capture_output=True, text=True, timeout=timeout)


def test_debian_python_is_externally_managed(debian):
    """The premise of the set-up lines: plain pip is refused there, and python3-venv (the
    README's one apt line) is what the image has."""
    refused = _exec(debian, "student", "python3 -m pip install --user .", timeout=120)
    assert refused.returncode != 0
    assert "externally-managed-environment" in refused.stdout + refused.stderr
    assert _exec(debian, "root", "dpkg -s python3-venv", timeout=60).returncode == 0


@pytest.mark.parametrize("user", ["student", "root"])
def test_readme_setup_lines_work_as_copied_on_debian(debian, user):
    """Every line of the README's Set up block, verbatim in one shell (the apt line's
    package is already there), ending in `protolab serve` reaching its ready line and
    stopping on Ctrl-C (SIGINT) with exit 0."""
    lines = readme_setup_lines()[1:]
    pidfile = f"/tmp/serve-{user}.pid"  # exec makes the shell's pid protolab's
    script = " && ".join(lines[:-1]) + f" && echo $$ > {pidfile} && exec " + lines[-1]
    home = "/root" if user == "root" else f"/home/{user}"
    process = subprocess.Popen(
        ["podman", "exec", "--user", user, "-w", f"{home}/protolab", debian,
         "bash", "-euc", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output = []
        for line in process.stdout:
            output.append(line)
            if line.startswith("protolab ready"):
                break
        else:
            raise AssertionError("".join(output) + process.stderr.read()[-3000:])
        offset = "0" if user == "root" else "3000"
        assert f"(port offset {offset})" in output[-1], output[-1]
        stopped = _exec(debian, "root", f"kill -INT $(cat {pidfile})", timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        assert process.wait(30) == 0, process.stderr.read()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_tests_run_installs_into_its_own_environment_on_debian(debian):
    """`tests/run` as an unprivileged user on an externally managed python3: it makes
    .venv-tests, installs there and runs pytest (a quick file), touching no other Python."""
    ran = _exec(debian, "student", "tests/run tests/lab/test_paths.py -q -p no:cacheprovider")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert re.search(r"\d+ passed", ran.stdout), ran.stdout[-2000:]
    assert _exec(debian, "student", "test -x .venv-tests/bin/pytest", timeout=30).returncode == 0
    user_site = _exec(debian, "student", "python3 -m pip list --user 2>/dev/null | wc -l",
                      timeout=60)
    assert user_site.stdout.strip() in ("0", ""), user_site.stdout
