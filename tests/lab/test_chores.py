"""The lab's own periodic chores (journal flush, store poll and prune) survive their
failures: a full disk or too many open files is said once, and everything journaled
meanwhile reaches the journal once the trouble is gone."""

from __future__ import annotations

import json
import os
import resource
import time

import pytest

from services import registry
from services.config import default
from services.lab import Lab
from services.serving import Chore

needs_dns = pytest.mark.skipif("dns" not in registry.names(), reason="needs the DNS service")


def test_a_failing_chore_says_so_once_then_once_more_when_it_works(tmp_path, capsys):
    lab = Lab(default(), tmp_path / "data")
    outcomes = iter([OSError(28, "No space left on device")] * 5 + [None] * 3)

    def call():
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    chore = Chore(lab, "journal flush", call, 0.5)
    for _ in range(8):
        chore.run()  # never raises: a LoopingCall whose call raises stops for good
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["protolab: journal flush failing (OSError: [Errno 28] No space left on "
                     "device); retrying every 0.5 s",
                     "protolab: journal flush works again after 5 failed attempts"]
    lab.journal.flush()
    written = (tmp_path / "data" / "journal").glob("*.jsonl")
    said = [json.loads(line) for path in written for line in path.read_text().splitlines()]
    assert [(e["service"], e["text"]) for e in said] == [
        ("lab", line.removeprefix("protolab: ")) for line in lines]


def query(server, name: str) -> None:
    from services.dns.client import query as dns_query

    dns_query("127.0.0.1", server.port("dns", "dns"), f"{name}.lab.test", "A", 5)


def wait_for(predicate, what: str, timeout: float = 20) -> None:
    """Poll a server's stderr: it gives no other signal that a chore has failed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def journal_shows(server, names: list[str]) -> str:
    shown = server.journal_until("dns", names[-1])
    missing = [name for name in names if name not in shown]
    assert not missing, (missing, shown[-2000:])
    return shown


@needs_dns
def test_the_journal_survives_a_full_disk(lab, small_disk):
    server = lab.start(only="dns", data=small_disk.data)
    query(server, "before-full")
    server.journal_until("dns", "before-full")
    small_disk.fill()
    during = [f"during-full-{i}" for i in range(20)]
    for name in during:
        query(server, name)  # the server answers; its journal cannot be written
    wait_for(lambda: "journal flush failing" in server.stderr(), "no failure said")
    small_disk.free()
    after = [f"after-free-{i}" for i in range(5)]
    for name in after:
        query(server, name)
    journal_shows(server, ["before-full", *during, *after])
    wait_for(lambda: "journal flush works again" in server.stderr(), "no recovery said")
    # The lab's own lines reach the journal too (the failure's once it can be written).
    said = server.journal_until("lab", "works again")
    assert said.count("journal flush failing") == 1 and "works again" in said, said
    errors = server.stderr()
    assert errors.count("journal flush failing") == 1, errors
    assert errors.count("works again") == 1, errors
    assert "Traceback" not in errors and "Unhandled" not in errors, errors


@needs_dns
def test_the_journal_survives_running_out_of_file_descriptors(lab):
    server = lab.start(only="dns")
    pid = server.process.pid
    query(server, "before-emfile")
    server.journal_until("dns", "before-emfile")
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use, limits[1]))  # no fd to spare
    try:
        during = [f"during-emfile-{i}" for i in range(10)]
        for name in during:
            query(server, name)  # UDP needs no new descriptor: DNS answers
        wait_for(lambda: "journal flush failing" in server.stderr(), "no failure said")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    query(server, "after-emfile")
    journal_shows(server, ["before-emfile", *during, "after-emfile"])
    wait_for(lambda: "works again" in server.stderr(), "no recovery said")
    errors = server.stderr()
    assert errors.count("failing") == 1 and "Too many open files" in errors, errors
