"""The shared store: users, mail, change log, locks, and several processes at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from services.store import Store, StoreError, UserError
from services.store.mail import HasChildren, MailboxExists, MailError, NoMailbox
from services.store.users import verify_hash
from tests.conftest import ROOT


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    s.users.add("alice", "wonder")
    yield s
    s.close()


def inbox(store, user="alice"):
    return store.mail.mailbox(user, "INBOX")


# --- users ------------------------------------------------------------------------------

def test_password_check_and_change(store):
    assert store.users.check("alice", "wonder")
    assert store.users.check("alice", "wonder")  # the cached path says the same
    assert not store.users.check("alice", "Wonder")
    assert not store.users.check("nobody", "wonder")
    store.users.set_password("alice", "land")
    assert not store.users.check("alice", "wonder")  # the cache does not outlive a change
    assert store.users.check("alice", "land")


def test_secrets_kept(store, tmp_path):
    from impacket.ntlm import compute_nthash

    user = store.users.get("alice")
    assert user.nt_hash == compute_nthash("wonder")
    assert user.plaintext is None
    row = store.db.one("SELECT pw_hash FROM users WHERE name = 'alice'")[0]
    assert "wonder" not in row and verify_hash("wonder", row)
    keeping = Store(tmp_path / "data", keep_plaintext=True)
    keeping.users.add("bob", "builder")
    assert keeping.users.get("bob").plaintext == "builder"


def test_user_errors(store):
    with pytest.raises(UserError, match="already exists"):
        store.users.add("alice", "x")
    with pytest.raises(UserError, match="not a valid user name"):
        store.users.add("../etc", "x")
    with pytest.raises(UserError, match="not a valid user name"):
        store.users.add("public", "x")
    with pytest.raises(UserError, match="must not be empty"):
        store.users.add("carol", "")
    with pytest.raises(UserError, match="no user"):
        store.users.delete("carol")


def test_new_user_has_special_use_mailboxes(store):
    boxes = {b.name: b.special_use for b in store.mail.mailboxes("alice")}
    assert boxes == {"INBOX": "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                     "Junk": "\\Junk", "Archive": "\\Archive"}
    assert set(store.mail.subscriptions("alice")) == set(boxes)


def test_deleting_a_user_deletes_its_mail(store):
    store.mail.append("alice", "INBOX", b"Subject: x\r\n\r\nhi\r\n")
    store.users.delete("alice")
    assert store.mail.mailboxes("alice") == []
    assert store.db.one("SELECT count(*) FROM bodies")[0] == 0


# --- mail -------------------------------------------------------------------------------

def test_uids_ascend_and_are_never_reused(store):
    box = inbox(store)
    uids = [store.mail.append("alice", "inbox", b"m%d" % i)[1] for i in range(3)]
    assert uids == [1, 2, 3]
    assert store.mail.expunge(box.id, [3]) == [3]
    assert store.mail.append("alice", "INBOX", b"m")[1] == 4
    assert [m.uid for m in store.mail.messages(box.id)] == [1, 2, 4]
    assert store.mail.data(box.id, 2) == b"m1"
    assert store.mail.data(box.id, 3) is None


def test_uidvalidity_changes_when_a_mailbox_is_made_anew(store):
    first = store.mail.create_mailbox("alice", "Lists").uidvalidity
    store.mail.delete_mailbox("alice", "Lists")
    assert store.mail.create_mailbox("alice", "Lists").uidvalidity > first
    with pytest.raises(MailboxExists):
        store.mail.create_mailbox("alice", "Lists")


def test_flags_modes_and_modseq(store):
    box = inbox(store)
    store.mail.append("alice", "INBOX", b"a", flags=["\\seen", "$Label1"])
    store.mail.append("alice", "INBOX", b"b")
    (first, second) = store.mail.messages(box.id)
    assert first.flags == {"\\Seen", "$Label1"}  # system flags in canonical spelling
    changed, failed = store.mail.set_flags(box.id, [1, 2], ["\\Flagged"], "add")
    assert [m.uid for m in changed] == [1, 2] and not failed
    assert changed[0].modseq == changed[1].modseq > second.modseq
    changed, _ = store.mail.set_flags(box.id, [1], ["\\Seen"], "remove")
    assert changed[0].flags == {"$Label1", "\\Flagged"}
    changed, _ = store.mail.set_flags(box.id, [2], ["\\Deleted"], "set")
    assert changed[0].flags == {"\\Deleted"}
    assert store.mail.set_flags(box.id, [2], ["\\Deleted"], "add") == ([], [])  # no change
    stale = first.modseq
    changed, failed = store.mail.set_flags(box.id, [1, 2], ["x"], "add", unchanged_since=stale)
    assert changed == [] and failed == [1, 2]
    assert [m.uid for m in store.mail.messages(box.id, changed_since=changed_since(store))] == []


def test_flags_of_many_messages_in_one_write(store):
    """set_flags reads the messages in chunks of UIDs (SQLite's bound-parameter limit)
    and answers with what it wrote, without reading it back."""
    box = inbox(store)
    store.mail.append_many([("alice", "INBOX", b"m%d" % i) for i in range(1200)])
    changed, failed = store.mail.set_flags(box.id, range(1, 1301), ["\\Seen"], "add")
    assert [m.uid for m in changed] == list(range(1, 1201)) and not failed
    assert store.mail.messages(box.id) == changed  # what it answered is what is stored
    assert store.mail.status(box.id).unseen == 0


def wal_fsyncs(monkeypatch, takes: float = 0.0):
    """The fsyncs of the store's WAL from now on, as a list that grows; each takes
    `takes` seconds more (a slow disk)."""
    import os
    import time

    from services.store import db

    synced = []
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("lab.db-wal"):
            synced.append(fd)
            time.sleep(takes)
        real(fd)

    monkeypatch.setattr(db.os, "fsync", fsync)
    return synced


def test_durable_writes_fsync_and_flag_changes_ride_along(store, monkeypatch):
    """A message is on disk when append returns (its own fsync of the WAL); a flag change
    or a \\Recent claim is not fsync'd, and the next durable commit covers it."""
    synced = wal_fsyncs(monkeypatch)
    box = inbox(store)
    store.mail.append("alice", "INBOX", b"a")
    assert len(synced) == 1
    store.mail.set_flags(box.id, [1], ["\\Seen"], "add")
    store.mail.claim_recent(box.id, 1)
    assert len(synced) == 1
    store.mail.append("alice", "INBOX", b"b")
    assert len(synced) == 2
    assert store.db._synced == store.db._committed  # every commit so far is covered


def test_concurrent_durable_writes_share_fsyncs(store, monkeypatch):
    """Group commit: writers that commit while another's fsync runs share the next one,
    so eight threads' appends on a slow disk need fewer fsyncs than appends, and none
    is lost."""
    import threading

    synced = wal_fsyncs(monkeypatch, takes=0.02)

    def writer(n):
        for i in range(5):
            store.mail.append("alice", "INBOX", b"%d-%d" % (n, i))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.mail.messages(inbox(store).id)) == 40
    assert 0 < len(synced) < 40
    assert store.db._synced == store.db._committed


def test_later_puts_a_threads_fsyncs_off_until_sync(store, monkeypatch):
    """Inside later() a durable commit is not fsync'd but named; sync() makes it (and
    every commit before it) durable, from another thread too, and only once. Another
    thread's durable commit meanwhile is fsync'd as ever (and covers only what came before)."""
    import threading

    synced = wal_fsyncs(monkeypatch)
    with store.db.later() as later:
        other = threading.Thread(target=store.mail.append, args=("alice", "INBOX", b"a"))
        other.start()
        other.join()
        store.mail.append("alice", "INBOX", b"b")
        store.mail.append("alice", "INBOX", b"c")
    assert len(synced) == 1  # the other thread's only
    assert later.commit and store.db._synced < later.commit
    worker = threading.Thread(target=store.db.sync, args=(later.commit,))
    worker.start()
    worker.join()
    assert len(synced) == 2 and store.db._synced == store.db._committed
    store.db.sync(later.commit)  # covered already: no second fsync
    assert len(synced) == 2
    store.mail.append("alice", "INBOX", b"d")  # the block is over: fsync'd at once
    assert len(synced) == 3


def changed_since(store):
    return store.mail.mailbox("alice", "INBOX").modseq


def test_copy_move_and_vanished(store):
    box = inbox(store)
    archive = store.mail.mailbox("alice", "Archive")
    for i in range(3):
        store.mail.append("alice", "INBOX", b"m%d" % i, flags=["\\Seen"])
    before = store.mail.mailbox_by_id(box.id).modseq
    assert store.mail.copy(box.id, [1, 3], archive.id) == [(1, 1), (3, 2)]
    assert store.mail.copy(box.id, [2], archive.id, move=True) == [(2, 3)]
    assert [m.uid for m in store.mail.messages(box.id)] == [1, 3]
    assert store.mail.vanished(box.id, before) == [2]
    moved = store.mail.messages(archive.id)
    assert [m.flags for m in moved] == [{"\\Seen"}] * 3
    assert store.mail.data(archive.id, 3) == b"m1"


def test_rename_takes_children_and_keeps_uidvalidity(store):
    parent = store.mail.create_mailbox("alice", "Work")
    store.mail.create_mailbox("alice", "Work/2026")
    store.mail.create_mailbox("alice", "Workshop")
    store.mail.rename_mailbox("alice", "Work", "Jobs")
    names = {b.name for b in store.mail.mailboxes("alice")}
    assert {"Jobs", "Jobs/2026", "Workshop"} <= names and "Work" not in names
    assert store.mail.mailbox("alice", "Jobs").uidvalidity == parent.uidvalidity
    with pytest.raises(NoMailbox):
        store.mail.rename_mailbox("alice", "Work", "X")
    with pytest.raises(MailError):
        store.mail.delete_mailbox("alice", "INBOX")


def test_delete_keeps_a_noselect_name_while_it_has_inferiors(store):
    parent = store.mail.create_mailbox("alice", "A")
    store.mail.create_mailbox("alice", "A/B/C")  # A/B is not created: C's only ancestor is A
    store.mail.append("alice", "A", b"gone")
    store.mail.delete_mailbox("alice", "A")
    kept = store.mail.mailbox("alice", "A")
    assert kept.noselect and kept.id != parent.id and kept.uidvalidity > parent.uidvalidity
    assert store.mail.messages(kept.id) == [] and store.mail.status(kept.id).messages == 0
    assert store.mail.messages(parent.id) == []
    with pytest.raises(NoMailbox):  # nothing is stored into a placeholder
        store.mail.append("alice", "A", b"x")
    assert store.mail.append_many([("alice", "A", b"x")]) == [None]
    with pytest.raises(HasChildren):
        store.mail.delete_mailbox("alice", "A")
    store.mail.delete_mailbox("alice", "A/B/C")  # the last inferior: the placeholder goes
    assert store.mail.mailbox("alice", "A") is None
    store.mail.create_mailbox("alice", "P")
    store.mail.create_mailbox("alice", "P/Q")
    store.mail.delete_mailbox("alice", "P")
    assert not store.mail.create_mailbox("alice", "P").noselect  # CREATE makes it real again
    store.mail.delete_mailbox("alice", "P")
    store.mail.rename_mailbox("alice", "P/Q", "R")  # renamed away: the placeholder goes
    assert store.mail.mailbox("alice", "P") is None


def test_rename_moves_subscriptions(store):
    store.mail.create_mailbox("alice", "Work")
    store.mail.create_mailbox("alice", "Work/2026")
    for name in ("Work", "Work/2026", "Workshop", "Jobs"):
        store.mail.subscribe("alice", name)
    store.mail.rename_mailbox("alice", "Work", "Jobs")  # "Jobs" was already subscribed
    assert [s for s in store.mail.subscriptions("alice") if s.startswith(("Jobs", "Work"))] == \
        ["Jobs", "Jobs/2026", "Workshop"]


def test_status_counts(store):
    box = inbox(store)
    store.mail.append("alice", "INBOX", b"12345", flags=["\\Seen"])
    store.mail.append("alice", "INBOX", b"123")
    status = store.mail.status(box.id)
    assert (status.messages, status.unseen, status.uidnext, status.size) == (2, 1, 3, 8)


# --- change log, locks, data directory --------------------------------------------------

def test_another_store_sees_changes_through_poll(store, tmp_path):
    other = Store(tmp_path / "data")
    seen = []
    other.subscribe("mailbox:", seen.append)
    assert other.poll() == set()
    box_id, _ = store.mail.append("alice", "INBOX", b"x")
    assert f"mailbox:{box_id}" in other.poll()
    assert seen == [{f"mailbox:{box_id}"}]
    store.users.add("carol", "c")
    assert "users" in other.poll()
    assert len(seen) == 1  # not a mailbox topic


def test_two_processes_append_at_once_and_lose_nothing(store, tmp_path):
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from services.store import Store
        s = Store(__import__("pathlib").Path({str(tmp_path / "data")!r}))
        print("go", flush=True)
        sys.stdin.readline()
        for i in range(200):
            s.mail.append("alice", "INBOX", f"{{sys.argv[1]}} {{i}}".encode())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, tag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for tag in "ab"]
    for proc in procs:
        assert proc.stdout.readline() == "go\n"
    for proc in procs:  # release both together
        proc.stdin.write("\n")
        proc.stdin.flush()
    for proc in procs:
        assert proc.wait(60) == 0
    box = inbox(store)
    messages = store.mail.messages(box.id)
    assert [m.uid for m in messages] == list(range(1, 401))
    bodies = {store.mail.data(box.id, m.uid) for m in messages}
    assert bodies == {f"{tag} {i}".encode() for tag in "ab" for i in range(200)}


def test_one_server_per_service_per_data_directory(store, tmp_path):
    store.lock("smtp")
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
              f"from services.store import Store; s = Store(Path({str(tmp_path / 'data')!r})); "
              "s.lock('imap'); s.lock('smtp')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "smtp is already served from" in result.stderr
    assert "pid" in result.stderr


def test_foreign_data_directories(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a protolab data directory"):
        Store(foreign)
    assert (foreign / "thesis.txt").read_text() == "mine"
    other_db = tmp_path / "otherdb"
    other_db.mkdir()
    sqlite3.connect(other_db / "lab.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a protolab database"):
        Store(other_db)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "lab.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a protolab database"):
        Store(garbage)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store(a_file)


def test_a_newer_schema_is_refused(store, tmp_path):
    with store.db.write() as tx:
        tx.execute("UPDATE meta SET value = '99' WHERE key = 'schema:mail'")
    with pytest.raises(StoreError, match="newer protolab"):
        Store(tmp_path / "data")


def test_a_new_user_has_a_home_with_web_space(store):
    assert store.files.homes.joinpath("alice", "public_html").is_dir()


@pytest.mark.parametrize("name", ["..", "../alice", "a/b", "", ".", "alice/../..", "/etc",
                                  "\uff0e\uff0e", "Alice\0"])
def test_a_home_is_only_ever_a_user_name_under_homes(store, name):
    """Homes are the roots of the path rule: a name a protocol failed to check must not
    make (or serve) a directory anywhere else."""
    before = sorted(p.name for p in store.data.iterdir())
    with pytest.raises(StoreError):
        store.files.home(name)
    with pytest.raises(StoreError):
        store.files.web(name)
    assert sorted(p.name for p in store.data.iterdir()) == before


def test_a_home_that_links_out_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.files.homes / "mallory").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="leads out"):
        store.files.home("mallory")
    # A link inside homes/ to another home is refused too: it would hand over that user's files.
    (store.files.homes / "eve").symlink_to(store.files.homes / "alice")
    assert store.files.home("alice") == store.files.homes / "alice"
    with pytest.raises(StoreError, match="leads out"):
        store.files.home("eve")


def test_homes_may_live_on_another_volume(tmp_path):
    """homes/ itself may be a link (a volume mounted elsewhere): only a home leading out of
    it is refused."""
    data = tmp_path / "data"
    Store(data).close()
    volume = tmp_path / "volume"
    (data / "homes").rename(volume)
    (data / "homes").symlink_to(volume)
    store = Store(data)
    try:
        store.users.add("carol", "pw")
        assert (volume / "carol/public_html").is_dir()
        assert store.files.web("carol") == data / "homes/carol/public_html"
    finally:
        store.close()


def test_many_records_in_one_transaction(store):
    store.net.add_records([("h1.lab.test.", "a", "10.0.0.1"), ("H2.lab.test", "A", "10.0.0.2")])
    assert {(r.name, r.type) for r in store.net.records()} >= {("h1.lab.test", "A"),
                                                              ("h2.lab.test", "A")}


def test_upload_temporaries_left_by_a_kill_go_and_live_ones_stay(tmp_path):
    import os

    from services.store.files import STALE_SECONDS, TEMP_PREFIX, Files

    files = Files(tmp_path)
    files.ensure()
    web = files.web("alice")
    stale, live, kept = web / f"{TEMP_PREFIX}1", files.home("alice") / f"{TEMP_PREFIX}2", web / "page.html"
    for path in (stale, live, kept):
        path.write_bytes(b"x")
    old = os.stat(stale).st_mtime - STALE_SECONDS - 5
    os.utime(stale, (old, old))
    os.utime(kept, (old, old))
    assert files.sweep_temporaries() == 1
    assert not stale.exists() and live.exists() and kept.exists()
