"""The README's set-up: `pip install .` into a fresh environment, then the protolab command."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


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
