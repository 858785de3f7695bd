"""The journal: sessions to JSON lines and to the store's bounded window, secrets masked."""

from __future__ import annotations

import json
import threading

from services.journal import MASK, Journal, format_event, recent
from services.store import Store

from .conftest import cli


def events(directory):
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_a_session_is_written_to_file_and_store(tmp_path):
    store = Store(tmp_path / "data")
    journal = Journal(tmp_path / "data" / "journal", store)
    session = journal.open("smtp", "127.0.0.1:4000")
    session.command("EHLO pc1")
    session.reply("250 mail.lab.test")
    session.auth("alice", ok=True, mechanism="PLAIN", secret="alice")
    session.close("QUIT")
    journal.flush()
    written = events(tmp_path / "data" / "journal")
    assert [e["kind"] for e in written] == ["open", "command", "reply", "auth", "close"]
    assert {e["session"] for e in written} == {session.id}
    assert written[3]["text"] == f"PLAIN alice ok secret={MASK}"
    assert written[4]["user"] == "alice"  # known once authenticated
    assert "alice" not in written[3]["text"].replace("PLAIN alice ok", "")
    assert [e["kind"] for e in recent(store, service="smtp")] == [e["kind"] for e in written]
    assert recent(store, service="imap") == []


def test_secrets_shown_when_asked(tmp_path):
    journal = Journal(tmp_path / "journal", show_secrets=True)
    session = journal.open("pop3", "peer")
    session.auth("bob", ok=False, mechanism="USER/PASS", secret="bob")
    journal.flush()
    assert events(tmp_path / "journal")[-1]["text"] == "USER/PASS bob failed secret=bob"
    assert session.user == ""  # a failed login names nobody


def test_the_store_window_is_bounded(tmp_path):
    store = Store(tmp_path / "data")
    journal = Journal(tmp_path / "data" / "journal", store, recent=10)
    session = journal.open("dns", "peer")
    for i in range(25):
        session.packet(f"query {i}")
        if i % 7 == 0:
            journal.flush()
    journal.flush()
    window = recent(store)
    assert len(window) == 10 and window[-1]["text"] == "query 24"
    assert len(events(tmp_path / "data" / "journal")) == 26  # the file keeps everything


def test_threads_lose_no_event(tmp_path):
    journal = Journal(tmp_path / "journal")

    def work(n):
        session = journal.open("smb", f"peer{n}")
        for i in range(500):
            session.event("op", str(i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.flush()
    assert len(events(tmp_path / "journal")) == 8 * 501


def test_protolab_journal_prints_and_filters(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    journal = Journal(data / "journal", store)
    journal.open("smtp", "10.0.0.5:1").command("HELO x")
    journal.open("imap", "10.0.0.6:2").command("a1 LOGIN alice ••••")
    journal.flush()
    shown = cli("journal", "--service", "imap", data=data)
    assert shown.returncode == 0, shown.stderr
    assert "a1 LOGIN alice" in shown.stdout and "HELO" not in shown.stdout
    line = format_event(events(data / "journal")[1])
    assert " smtp " in line and "C: HELO x" in line


def test_protolab_journal_follow_prints_new_events_as_they_come(tmp_path):
    import os
    import selectors
    import subprocess
    import sys

    from .conftest import ROOT

    data = tmp_path / "data"
    journal = Journal(data / "journal", Store(data))
    journal.open("smtp", "10.0.0.5:1").command("HELO before")
    journal.flush()
    follower = subprocess.Popen(
        [sys.executable, "-m", "services", "journal", "--follow", "--service", "smtp",
         "--data", str(data)], stdout=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)
        pending = b""

        def next_line() -> str:
            # Raw reads: a buffered readline() would take several lines from the pipe at
            # once and leave select() waiting for bytes already read.
            nonlocal pending
            while b"\n" not in pending:
                assert selector.select(30), "journal --follow printed nothing"
                pending += os.read(follower.stdout.fileno(), 65536)
            line, pending = pending.split(b"\n", 1)
            return line.decode()

        before = [next_line() for _ in range(2)]  # what was there: the open, then the command
        assert " open:" in before[0] and "C: HELO before" in before[1], before
        journal.open("imap", "10.0.0.6:2").command("a1 NOOP")  # filtered out
        journal.open("smtp", "10.0.0.7:3").command("HELO after")
        journal.flush()
        after = [next_line() for _ in range(2)]  # the new session's open, then its command
        assert "C: HELO after" in after[1] and not any("NOOP" in line for line in after), after
    finally:
        follower.terminate()
        follower.wait(10)
