"""Several sessions changing one mailbox at once, each checking that what it was told
(EXISTS, EXPUNGE, FETCH) always matches what the server says its sequence numbers are."""

from __future__ import annotations

import random
import re
import threading

from tests.imap.test_dialogue import Raw

EXISTS = re.compile(rb"\* (\d+) EXISTS")
EXPUNGE = re.compile(rb"\* (\d+) EXPUNGE")
FETCH_UID = re.compile(rb"\* (\d+) FETCH \(.*?UID (\d+)")
SEARCH = re.compile(rb"\* SEARCH((?: \d+)*)")


class Tracker:
    """A client's idea of its sequence numbers, kept only from the server's responses."""

    def __init__(self, conn: Raw) -> None:
        self.conn = conn
        self.uids: list[int | None] = []  # None: announced by EXISTS, UID not fetched yet

    def run(self, command: str) -> list[bytes]:
        lines = self.conn.cmd(command)
        self.apply(lines, command)
        assert not lines[-1].startswith(b"t BAD"), (command, lines[-1])
        self.catch_up()
        return lines

    def apply(self, lines: list[bytes], command: str) -> None:
        for line in lines:
            if m := EXPUNGE.match(line):
                seq = int(m.group(1))
                assert 1 <= seq <= len(self.uids), (command, line, len(self.uids))
                del self.uids[seq - 1]
            elif m := EXISTS.match(line):
                count = int(m.group(1))
                assert count >= len(self.uids), (command, line, len(self.uids))
                self.uids += [None] * (count - len(self.uids))
            elif m := FETCH_UID.match(line):
                seq, uid = int(m.group(1)), int(m.group(2))
                assert seq <= len(self.uids), (command, line, len(self.uids))
                assert self.uids[seq - 1] in (None, uid), (command, line, self.uids)
                self.uids[seq - 1] = uid
            elif m := SEARCH.match(line):
                found = [int(x) for x in m.group(1).split()]
                assert len(found) == len(self.uids), (command, found, self.uids)
                assert all(k in (None, f) for k, f in zip(self.uids, found, strict=True)), \
                    (command, found, self.uids)
                assert found == sorted(found)

    def catch_up(self) -> None:
        while None in self.uids:
            command = f"FETCH {self.uids.index(None) + 1}:* (UID)"
            self.apply(self.conn.cmd(command), command)


def worker(port: int, seed: int, failures: list) -> None:
    rng = random.Random(seed)
    try:
        conn = Raw(port)
        conn.cmd("LOGIN alice alice")
        tracker = Tracker(conn)
        tracker.run("SELECT INBOX")
        for _ in range(80):
            n = len(tracker.uids)
            op = rng.choice(["append", "delete", "expunge", "move", "noop", "fetch", "check",
                             "uidexpunge", "copy"])
            seq = rng.randint(1, n) if n else None  # catch_up() left no unknown UID
            if op == "append":
                data = b"Subject: s%d\r\n\r\nbody\r\n" % rng.randint(0, 9999)
                tracker.run(f"APPEND INBOX {{{len(data)}+}}\r\n{data.decode()}")
            elif op == "delete" and seq:
                tracker.run(f"STORE {seq} +FLAGS (\\Deleted)")
            elif op == "expunge":
                tracker.run("EXPUNGE")
            elif op == "uidexpunge" and seq:
                tracker.run(f"UID EXPUNGE {tracker.uids[seq - 1]}")
            elif op == "move" and seq:
                tracker.run(f"UID MOVE {tracker.uids[seq - 1]} Archive")
            elif op == "copy" and seq:
                tracker.run(f"COPY {seq} INBOX")
            elif op == "fetch" and seq:
                tracker.run(f"FETCH {seq}:* (UID FLAGS)")
            else:
                tracker.run("NOOP")
            tracker.run("UID SEARCH ALL")
        tracker.run("NOOP")
        tracker.run("UID SEARCH ALL")
        failures.append(None)
    except BaseException as error:  # reported by the main thread
        failures.append(error)


def test_concurrent_sessions_keep_consistent_sequence_numbers(lab):
    server = lab.start(only="imap")
    port = server.port("imap", "imap")
    setup = Raw(port)
    setup.cmd("LOGIN alice alice")
    for i in range(10):
        data = b"Subject: seed %d\r\n\r\nbody\r\n" % i
        setup.cmd(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
    results: list = []
    threads = [threading.Thread(target=worker, args=(port, seed, results)) for seed in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [r for r in results if r is not None]
    assert len(results) == 5 and not errors, errors
