"""The journal: sessions to JSON lines and to the store's bounded window, secrets masked."""

from __future__ import annotations

import json
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import journal as journal_module
from services.journal import MASK, Journal, format_event, recent
from services.store import Store
from tests.conftest import cli


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

    from tests.conftest import ROOT

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


def test_a_failed_write_keeps_the_events_for_the_next_flush(tmp_path):
    store = Store(tmp_path / "data")
    blocker = tmp_path / "data" / "journal"
    blocker.write_text("a file where the journal's directory belongs: every write fails")
    journal = Journal(blocker, store)
    session = journal.open("smtp", "peer")
    session.command("HELO one")
    with pytest.raises(OSError):
        journal.flush()
    session.command("HELO two")  # add() after a failure never raises, and never flushes
    assert journal.failing and not journal.flush_quietly()
    blocker.unlink()
    journal.flush()
    assert [e["text"] for e in events(blocker)] == ["", "HELO one", "HELO two"]
    assert [e["text"] for e in recent(store)] == ["", "HELO one", "HELO two"]
    assert not journal.failing


def test_a_short_write_leaves_no_half_line(tmp_path, monkeypatch):
    journal = Journal(tmp_path / "journal")
    journal.open("smtp", "peer").command("HELO first")
    journal.flush()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    journal.open("smtp", "peer").command("HELO second")
    with pytest.raises(OSError):
        journal.flush()
    monkeypatch.setattr(os, "write", real_write)
    journal.flush()
    texts = [e["text"] for e in events(tmp_path / "journal")]
    assert texts == ["", "HELO first", "", "HELO second"]


def test_what_cannot_be_kept_is_dropped_oldest_first_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "MAX_BUFFERED", 100)
    blocker = tmp_path / "journal"
    blocker.write_text("not a directory")
    journal = Journal(blocker)
    session = journal.open("dns", "peer")
    for i in range(60):
        session.packet(f"query {i}")
    assert not journal.flush_quietly()  # 61 events encoded, waiting
    for i in range(60, 160):
        session.packet(f"query {i}")
    assert journal.dropped_total == 61 and journal.waiting == 100  # the oldest batch went
    blocker.unlink()
    journal.flush()
    written = events(blocker)
    assert written[0]["service"] == "lab" and "61 events dropped" in written[0]["text"]
    assert [e["text"] for e in written[1:]] == [f"query {i}" for i in range(60, 160)]


# --- retention: the day files stay bounded over a long class -------------------------------

DAY = 86400.0
NOON = 1796212800.0  # 2026-12-02 12:00 UTC


def day_files(directory) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.jsonl"))


def test_old_day_files_go_at_the_first_flush_and_at_each_new_day(tmp_path, monkeypatch):
    directory = tmp_path / "journal"
    directory.mkdir()
    for day in ("2026-11-01", "2026-11-29", "2026-11-30", "2026-12-01"):
        (directory / f"{day}.jsonl").write_text('{"text": "old"}\n')
    (directory / "notes.jsonl").write_text('{"text": "not a day file: it stays"}\n')
    clock = [NOON]
    monkeypatch.setattr(journal_module.time, "time", lambda: clock[0])
    journal = Journal(directory, keep_days=3)
    journal.flush()  # the first flush (the lab's start): today and the two days before stay
    assert day_files(directory) == ["2026-11-30", "2026-12-01", "2026-12-02", "notes"]
    said = [e["text"] for e in events(directory) if e.get("service") == "lab"]
    assert said == ["journal: removed 2 old day files (2026-11-01 to 2026-11-29; keep_days 3, "
                    "max_mb 0)"]
    journal.open("smtp", "peer").command("EHLO pc")
    journal.flush()  # the same day: nothing more goes
    assert day_files(directory) == ["2026-11-30", "2026-12-01", "2026-12-02", "notes"]
    clock[0] += DAY  # the class goes on past midnight
    journal.open("smtp", "peer").command("EHLO pc")
    journal.flush()
    assert day_files(directory) == ["2026-12-01", "2026-12-02", "2026-12-03", "notes"]


def test_past_days_over_the_size_cap_go_oldest_first_and_today_stays(tmp_path, monkeypatch):
    directory = tmp_path / "journal"
    directory.mkdir()
    for day in ("2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"):
        (directory / f"{day}.jsonl").write_bytes(b"x" * 99 + b"\n")
    monkeypatch.setattr(journal_module.time, "time", lambda: NOON)
    (directory / "2026-12-02.jsonl").write_bytes(b"y" * 299 + b"\n")  # today's, over it all
    assert journal_module.prune(directory, "2026-12-02", 0, 500) == ["2026-11-28", "2026-11-29"]
    assert day_files(directory) == ["2026-11-30", "2026-12-01", "2026-12-02"]
    assert journal_module.prune(directory, "2026-12-02", 0, 100) == ["2026-11-30", "2026-12-01"]
    assert journal_module.prune(directory, "2026-12-02", 0, 1) == []  # today's is never removed
    assert day_files(directory) == ["2026-12-02"]


def test_a_lab_prunes_its_journal_as_its_config_says(lab, tmp_path):
    data = lab.start(only="dns").data
    assert lab.servers[-1].stop() == 0
    old = data / "journal" / "2020-01-01.jsonl"
    old.write_text('{"ts": 1577872800, "service": "lab", "text": "a class long ago"}\n')
    server = lab.start(only="dns", data=data, config="[journal]\nkeep_days = 30\n")
    assert "removed 1 old day files (2020-01-01" in server.journal_until("lab", "removed 1")
    assert not old.exists()


texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # surrogates too


@settings(max_examples=300, deadline=None)
@given(service=texts, peer=texts, user=texts, text=texts,
       kind=st.sampled_from(["open", "command", "reply", "event", "close"]),
       ts=st.floats(min_value=0, max_value=4e9),
       fields=st.none() | st.dictionaries(texts, texts | st.integers() | st.booleans(),
                                          min_size=1, max_size=3))
def test_a_line_is_what_json_dumps_writes(service, peer, user, text, kind, ts, fields):
    event = {"ts": ts, "service": service, "session": "ab0001", "peer": peer, "user": user,
             "kind": kind, "text": text}
    if fields:
        event["fields"] = fields
    encoder = journal_module.LineEncoder()
    expected = json.dumps(event, ensure_ascii=False) + "\n"
    assert encoder.line(event) == expected
    assert encoder.line(event) == expected  # again, from its kept middle
    assert encoder.line({**event, "extra": 1}) == json.dumps({**event, "extra": 1},
                                                              ensure_ascii=False) + "\n"


def test_an_undecodable_name_is_written_and_read_back(tmp_path):
    """A file name decoded with surrogateescape holds lone surrogates, which UTF-8 cannot
    hold: the line says them as JSON escapes, and every flush still works."""
    journal = Journal(tmp_path / "journal")
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    journal.open("ftp", "peer").event("transfer", f"RETR {name}")
    journal.flush()
    journal.open("ftp", "peer").event("transfer", "RETR b.txt")
    journal.flush()
    texts = [e["text"] for e in events(tmp_path / "journal")]
    assert texts == ["", f"transfer RETR {name}", "", "transfer RETR b.txt"]


def test_events_across_midnight_go_to_their_own_day_files_in_order(tmp_path, monkeypatch):
    clock = [NOON + DAY / 2 - 1.5]  # 1.5 s before midnight (UTC)
    monkeypatch.setattr(journal_module.time, "time", lambda: clock[0])
    journal = Journal(tmp_path / "journal")
    session = journal.open("smtp", "peer")
    for i in range(6):
        session.command(f"NOOP {i}")
        clock[0] += 0.5
    journal.flush()
    assert day_files(tmp_path / "journal") == ["2026-12-02", "2026-12-03"]
    first, second = (
        [json.loads(line)["text"] for line in (tmp_path / "journal" / f"{day}.jsonl").open()]
        for day in ("2026-12-02", "2026-12-03"))
    assert first == ["", "NOOP 0", "NOOP 1", "NOOP 2"] and second == ["NOOP 3", "NOOP 4", "NOOP 5"]


def test_a_floods_flush_writes_the_file_and_the_next_flush_the_window(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "FLUSH_AT", 10)
    store = Store(tmp_path / "data")
    journal = Journal(tmp_path / "data" / "journal", store, recent=5)
    session = journal.open("http", "peer")
    for i in range(24):
        session.command(f"GET /{i}")
    assert len(events(tmp_path / "data" / "journal")) == 20  # two floods, written at once
    assert recent(store) == []  # the window waits for the next (timed) flush
    journal.flush()
    assert len(events(tmp_path / "data" / "journal")) == 25
    assert [e["text"] for e in recent(store)] == [f"GET /{i}" for i in range(19, 24)]
