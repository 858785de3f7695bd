"""The protolab command as users run it: init, user, serve, check, and its one-line errors."""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services import registry
from services.config import load
from tests.conftest import ROOT, cli, need, need_root

ALL = ",".join(registry.names())
needs_services = pytest.mark.skipif(not registry.names(), reason="no protocol registered yet")


def assert_one_line_error(result, code, text):
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protolab: "), result.stderr
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_init_writes_a_config_that_loads(tmp_path):
    result = cli("init", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "lab.toml").lab.domain == "lab.test"
    assert_one_line_error(cli("init", str(tmp_path)), 1, "exists (use --force")
    assert cli("init", str(tmp_path), "--force").returncode == 0


def test_users_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    assert_one_line_error(cli("user", "list", data=data), 1, "no lab here yet")
    assert cli("user", "add", "carol", "--password", "c1", data=data).returncode == 0
    assert cli("user", "add", "dave", data=data, input="d1\n").returncode == 0  # stdin
    listed = cli("user", "list", data=data)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "alice", "bob", "carol", "dave"]  # the default lab's users are seeded too
    assert_one_line_error(cli("user", "add", "carol", "--password", "x", data=data), 1,
                          "already exists")
    assert_one_line_error(cli("user", "add", "Carol!", "--password", "x", data=data), 1,
                          "not a valid user name")
    assert cli("user", "passwd", "carol", "--password", "c2", data=data).returncode == 0
    from services.store import Store

    store = Store(data)
    assert store.users.check("carol", "c2") and not store.users.check("carol", "c1")
    assert store.users.check("dave", "d1")
    (data / "homes" / "carol" / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (data / "homes" / "carol" / "notes.txt").write_text("x")
    assert cli("user", "del", "carol", data=data).returncode == 0
    assert store.users.get("carol") is None and not (data / "homes" / "carol").exists()
    assert_one_line_error(cli("user", "del", "carol", data=data), 1, "no user 'carol'")


@pytest.mark.parametrize("config, message", [
    ("[lab]\nport_offset = 'x'\n", "port_offset: expected an integer"),
    ("[nosuch]\n", "unknown section"),
])
def test_serve_refuses_a_bad_config(tmp_path, config, message):
    path = tmp_path / "lab.toml"
    path.write_text(config)
    result = cli("serve", "--config", str(path), data=tmp_path / "data")
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "data").exists()  # nothing made for a lab that cannot start


def test_serve_refuses_a_foreign_data_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    assert_one_line_error(cli("serve", data=tmp_path), 1, "not a protolab data directory")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_serve_refuses_an_unknown_service(tmp_path):
    assert_one_line_error(cli("serve", "--only", "gopher", data=tmp_path / "d"), 2,
                          "unknown service gopher")


@needs_services
def test_serve_all_then_check_then_stop(lab):
    server = lab.start(only=ALL)
    table = "\n".join(server.output)
    for name in registry.names():
        assert f"\n{name} " in table
    assert f"port offset {server.offset} (as asked)" in table
    assert server.output[-1].startswith("protolab ready in ")
    checked = server.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(checked.stdout.splitlines()) == len(registry.names())
    assert server.stop() == 0


@needs_services
def test_check_fails_when_nothing_answers():
    offset = random.randrange(10000, 29000)
    result = cli("check", "--only", ALL, "--port-offset", str(offset), "--timeout", "1")
    active = [row for row in result.stdout.splitlines() if " off " not in row]
    assert result.returncode == 1 or not active, result.stdout
    assert all(" FAIL " in line for line in active), result.stdout


@needs_services
def test_strict_a_port_in_use_is_one_line_naming_service_and_address(lab, tmp_path):
    from services.config import default

    name = registry.names()[0]
    listener = next(one for one in registry.module(name).listeners(default()) if one.active)
    offset = random.randrange(10000, 29000)
    kind = socket.SOCK_STREAM if listener.transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as squatter:
        squatter.bind(("127.0.0.1", listener.port + offset))
        if kind == socket.SOCK_STREAM:
            squatter.listen()
        result = cli("serve", "--strict", "--only", name, "--bind", "127.0.0.1",
                     "--port-offset", str(offset), data=tmp_path / "data")
    assert_one_line_error(
        result, 1, f"{name}: cannot listen on {listener.transport} 127.0.0.1:"
                   f"{listener.port + offset} ({listener.name})")


@needs_services
def test_a_second_server_of_one_service_on_one_data_directory_is_refused(lab):
    name = registry.names()[0]
    server = lab.start(only=name)
    result = cli("serve", "--only", name, "--bind", "127.0.0.1", "--port-offset",
                 str(server.offset + 7), data=server.data)
    assert_one_line_error(result, 1, f"{name} is already served from")


@pytest.mark.skipif("imap" not in registry.names(), reason="needs the IMAP service")
def test_users_change_while_the_server_runs_and_sessions_are_journaled(lab):
    import imaplib

    server = lab.start(only="imap")
    port = server.port("imap", "imap")
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4("127.0.0.1", port).login("erin", "e1")
    assert server.cli("user", "add", "erin", "--password", "e1").returncode == 0
    client = imaplib.IMAP4("127.0.0.1", port)
    assert client.login("erin", "e1")[0] == "OK"  # no restart needed
    client.logout()
    assert server.cli("user", "passwd", "erin", "--password", "e2").returncode == 0
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4("127.0.0.1", port).login("erin", "e1")
    assert server.stop() == 0  # the journal is flushed at stop
    shown = server.cli("journal", "--service", "imap").stdout
    logins = [line for line in shown.splitlines() if "LOGIN erin" in line]
    assert logins and all(" e1" not in line and " e2" not in line for line in logins), shown


def test_a_mistyped_option_gets_its_commands_usage(tmp_path):
    typo = cli("serve", "--port-ofset", "3")
    assert typo.returncode == 2
    assert "usage: protolab serve" in typo.stderr and "--port-ofset" in typo.stderr
    nested = cli("user", "add", "x", "--pasword", "y")
    assert nested.returncode == 2 and "usage: protolab user add" in nested.stderr


def test_journal_names_an_unknown_service_and_ends_quietly_in_a_closed_pipe(lab):
    server = lab.start(only="dns")
    assert_one_line_error(server.cli("journal", "--service", "nosuch"), 2, "unknown service 'nosuch'")
    for _ in range(30):  # enough lines that `head -1` closes the pipe while journal writes
        subprocess.run(["dig", "+short", "+tries=1", "-p", str(server.port("dns", "dns")),
                        "@127.0.0.1", "www.lab.test"], capture_output=True, timeout=10)
    server.journal_until("dns", "www.lab.test")
    piped = subprocess.run(
        f"{shlex.join([sys.executable, '-m', 'services', 'journal', '--data', str(server.data)])}"
        " | head -1", shell=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert piped.stdout.count("\n") == 1
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_hosts_lines_resolve_through_a_real_resolver(lab, tmp_path):
    """`protolab hosts` as a hosts file, read by glibc (getent) in a namespace of our own
    (`ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts there)."""
    need_root()
    need("getent", "ip")
    data = tmp_path / "data"
    assert cli("dns", "add", "pc7", "A", "10.199.3.7", data=data).returncode == 0
    made = cli("hosts", "--address", "192.0.2.10", data=data)
    assert made.returncode == 0, made.stderr
    namespace = f"plhosts{random.getrandbits(24):06x}"
    etc = Path("/etc/netns") / namespace
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(made.stdout)
        for name, address in [("www.lab.test", "192.0.2.10"), ("mail.lab.test", "192.0.2.10"),
                              ("pc7.lab.test", "10.199.3.7")]:
            found = subprocess.run(["ip", "netns", "exec", namespace, "getent", "hosts", name],
                                   capture_output=True, text=True, timeout=10)
            assert found.stdout.split()[:2] == [address, name], (name, found.stdout)
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def test_commands_find_the_lab_that_runs(lab, tmp_path):
    """`protolab serve` records where it runs; `user add` and `check` without --data or
    --port-offset talk to that lab, and say which lab they tried when it does not answer."""
    server = lab.start(only="smtp")
    env = {"PROTOLAB_RUN_DIR": str(server.run_dir)}
    added = cli("user", "add", "frank", "--password", "f", env=env)
    assert added.returncode == 0 and "note:" not in added.stderr, added.stderr
    assert "frank" in server.cli("user", "list").stdout  # in the served store
    checked = cli("check", "--only", "smtp", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f":{server.port('smtp', 'smtp')}" in checked.stdout
    server.stop()
    assert not list(server.run_dir.glob("serve-*.json"))  # gone with the server
    alone = cli("user", "add", "gina", "--password", "g", data=tmp_path / "other", env=env)
    assert "note: no lab is running on" in alone.stderr
    missed = cli("check", "--only", "smtp", "--port-offset", str(server.offset), env=env)
    assert missed.returncode == 1
    # the default bind (::) is asked over both families where this host has ::1
    assert "asked 127.0.0.1" in missed.stderr
    assert f"at port offset {server.offset}; no lab runs on data" in missed.stderr


def test_a_record_of_a_process_that_is_gone_is_ignored(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / f"serve-{dead.pid}.json").write_text(json.dumps(
        {"pid": dead.pid, "data": "/nonexistent", "bind": "127.0.0.1", "offset": 7,
         "services": ["smtp"]}))
    listed = cli("user", "list", env={"PROTOLAB_RUN_DIR": str(run), "PROTOLAB_DATA": ""})
    assert "/nonexistent" not in listed.stderr
    assert not list(run.glob("serve-*.json"))
