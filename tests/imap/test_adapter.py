"""The Twisted adapter without sockets: a StringTransport and a fake clock."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from services import config
from services.imap.server import IMAPProtocol
from services.lab import Lab


class Transport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


def make(tmp_path: Path) -> tuple[IMAPProtocol, Transport, Clock, Lab]:
    lab = Lab(config.default(), tmp_path / "data", offset=0, bind="127.0.0.1")
    lab.store.seed_users(lab.config.users)
    clock = Clock()
    protocol = IMAPProtocol(lab, lab.settings("imap"), implicit_tls=False, clock=clock)
    transport = Transport()
    protocol.makeConnection(transport)
    return protocol, transport, clock, lab


def test_autologout_after_thirty_minutes_of_silence(tmp_path):
    protocol, transport, clock, lab = make(tmp_path)
    assert transport.value().startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    protocol.dataReceived(b"a LOGIN alice alice\r\n")
    clock.advance(1799)
    protocol.dataReceived(b"b NOOP\r\n")  # any input restarts the timer
    clock.advance(1799)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.value().endswith(b"* BYE Autologout; idle for too long\r\n")
    assert transport.disconnecting
    protocol.connectionLost(None)
    lab.close()


def test_logout_closes_and_a_bug_costs_only_the_session(tmp_path, monkeypatch):
    protocol, transport, _clock, lab = make(tmp_path)
    protocol.dataReceived(b"a LOGOUT\r\nb NOOP\r\n")
    assert transport.value().endswith(b"* BYE protolab IMAP server logging out\r\na OK LOGOUT completed\r\n")
    assert transport.disconnecting
    protocol, transport, _clock, lab2 = make(tmp_path / "second")

    def broken(command):
        raise RuntimeError("boom")

    monkeypatch.setattr(protocol.session, "run", broken)
    protocol.dataReceived(b"a NOOP\r\n")  # must not raise into the reactor
    assert transport.value().endswith(b"* BYE Internal server error\r\n")
    assert transport.disconnecting
    lab.close()
    lab2.close()


def test_open_sessions_hear_bye_when_the_lab_stops(tmp_path):
    from services.imap.server import IMAPFactory, IMAPService

    lab = Lab(config.default(), tmp_path / "data", offset=0, bind="127.0.0.1")
    lab.store.seed_users(lab.config.users)
    service = IMAPService()
    factory = IMAPFactory(lab, implicit_tls=False)
    service.factories.append(factory)
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"a LOGIN alice alice\r\n")
    service.startService()
    service.stopService()
    assert transport.value().endswith(b"* BYE [UNAVAILABLE] Server shutting down\r\n")
    assert transport.disconnecting
    protocol.connectionLost(None)
    assert not factory.live


def test_a_small_append_runs_on_the_reactor_and_its_ok_waits_for_the_fsync(tmp_path,
                                                                           monkeypatch):
    """The message is stored on the reactor (no worker for the command), only the WAL's
    fsync is handed to a thread, and the tagged OK (and a pipelined NOOP's) waits for it:
    no client hears OK before its message is on disk."""
    from twisted.internet.defer import Deferred

    from services.imap import server
    from tests.store.test_store import wal_fsyncs

    handed: list[tuple] = []

    def defer(function, *args):
        handed.append((function, args, Deferred()))
        return handed[-1][2]

    monkeypatch.setattr(server, "deferToThread", defer)
    protocol, transport, _clock, lab = make(tmp_path)
    protocol.dataReceived(b"a LOGIN alice alice\r\n")
    synced = wal_fsyncs(monkeypatch)
    transport.clear()
    protocol.dataReceived(b"b APPEND INBOX {5+}\r\nhello\r\nc NOOP\r\n")
    box = lab.store.mail.mailbox("alice", "INBOX")
    assert len(lab.store.mail.messages(box.id)) == 1  # stored already, on the reactor
    assert transport.value() == b"" and not synced  # but not yet on disk, nor answered
    (function, args, done), = handed
    assert function == lab.store.mail.db.sync
    function(*args)
    assert len(synced) == 1
    done.callback(None)
    assert transport.value().startswith(b"b OK [APPENDUID ")
    assert transport.value().endswith(b"c OK NOOP completed\r\n")
    protocol.connectionLost(None)
    lab.close()


def test_the_first_fetch_of_a_big_message_parses_it_in_a_worker(tmp_path, monkeypatch):
    """A FETCH of one message is answered on the reactor, unless it must parse a big
    message first (thousands of MIME parts took the reactor 0.1-0.3 s): that goes to a
    worker; its FLAGS alone, or once it is parsed, need none."""
    from twisted.internet.defer import Deferred

    from services.imap import server, session

    handed: list = []

    def defer(function, *args):
        handed.append(function)
        return Deferred()

    monkeypatch.setattr(server, "deferToThread", defer)
    protocol, transport, _clock, lab = make(tmp_path)
    parts = "".join(f"--b\r\n\r\npart {n}\r\n" for n in range(6000))
    big = (f"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{parts}--b--\r\n"
           ).encode()
    assert len(big) > 64 * 1024  # session.QUICK_PARSE
    lab.store.mail.append("alice", "INBOX", big)
    lab.store.mail.append("alice", "INBOX", b"Subject: small\r\n\r\nhi\r\n")
    protocol.dataReceived(b"a LOGIN alice alice\r\nb SELECT INBOX\r\n"
                          b"c FETCH 1 FLAGS\r\nd FETCH 2 BODYSTRUCTURE\r\n")
    assert b"c OK" in transport.value() and b"d OK" in transport.value() and not handed
    session.ENTITIES.discard((protocol.session.view.id, protocol.session.view.mailbox.uidvalidity, 1))
    protocol.dataReceived(b"e FETCH 1 BODYSTRUCTURE\r\n")
    assert handed == [protocol.session.command] and b"e OK" not in transport.value()
    protocol.connectionLost(None)
    lab.close()
