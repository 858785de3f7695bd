"""The Twisted line adapter shared by SMTP and POP3, on an in-memory transport: line
splitting, over-long lines cut across TCP segments, bulk message text, STARTTLS."""

from __future__ import annotations

import socket
import ssl

from twisted.internet.testing import StringTransport

from services.credentials import Credentials
from services.journal import Journal
from services.smtp.adapter import LineFactory
from services.smtp.core import COMMAND_LIMIT, Options, SMTPConversation
from services.smtp.delivery import MailDrop
from services.store import Store


def connect(tmp_path):
    store = Store(tmp_path / "data")
    store.users.add("bob", "bob")
    options = Options(hostname="mail.lab.test", size_limit=10**6, plaintext_auth=True,
                      auth_required=False, cram=False, starttls=False)
    drop = MailDrop(store, "mail.lab.test", {"lab.test"}, {}, "")
    credentials = Credentials(store.users, {"lab.test"})

    def make(journal, secure, peer):
        return SMTPConversation(journal, options, drop, credentials, secure, peer)

    factory = LineFactory("smtp", Journal(tmp_path / "journal"), None, make, "smtp", False)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, store


def replies(transport: StringTransport) -> list[str]:
    lines = transport.value().decode().split("\r\n")[:-1]
    transport.clear()
    return lines


def test_overlong_line_cut_across_segments_then_the_session_goes_on(tmp_path):
    protocol, transport, _ = connect(tmp_path)
    replies(transport)
    for chunk in (b"NOOP ", b"x" * COMMAND_LIMIT, b"y" * COMMAND_LIMIT, b"z\r\nNOOP\r\n"):
        protocol.dataReceived(chunk)
    assert replies(transport) == [f"500 5.5.2 Line too long (limit {COMMAND_LIMIT} bytes)",
                                  "250 2.0.0 Ok"]
    assert len(protocol.buffer) == 0


def test_message_text_byte_by_byte_and_in_one_piece(tmp_path):
    protocol, transport, store = connect(tmp_path)
    session = (b"HELO pc\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@lab.test>\r\nDATA\r\n"
               b"Subject: s\r\n\r\n..dot\nbare lf\r\n.\r\nQUIT\r\n")
    for i in range(len(session)):  # the worst a TCP stack could do
        protocol.dataReceived(session[i:i + 1])
    protocol.dataReceived(session.replace(b"QUIT\r\n", b""))  # a second session's worth
    codes = [line[:3] for line in replies(transport)]
    assert codes == ["220", "250", "250", "250", "354", "250", "221"]
    box = store.mail.mailbox("bob", "INBOX")
    messages = store.mail.messages(box.id)
    assert len(messages) == 1  # nothing read after QUIT
    assert store.mail.data(box.id, messages[0].uid).endswith(b"Subject: s\r\n\r\n.dot\r\n"
                                                             b"bare lf\r\n")


def test_commands_sent_before_tls_are_not_run_after_it(lab):
    # CVE-2011-0411: "STARTTLS\r\nHELP\r\n" in one segment must not run HELP inside TLS.
    server = lab.start(only="smtp")
    port = server.port("smtp", "smtp")
    context = ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO pc\r\n")
        while f.readline()[3:4] == b"-":
            pass
        raw.sendall(b"STARTTLS\r\nHELP\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"NOOP\r\n")
            answer = tls.recv(1000)
            assert answer == b"250 2.0.0 Ok\r\n"  # not 214: the injected HELP was dropped
            tls.sendall(b"QUIT\r\n")
            assert tls.recv(1000).startswith(b"221")


def test_our_own_failure_is_a_421_not_a_dropped_reactor(tmp_path):
    protocol, transport, store = connect(tmp_path)
    replies(transport)

    def broken(address: str):
        raise RuntimeError("simulated bug")

    protocol.core.drop.resolve = broken
    protocol.dataReceived(b"HELO pc\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@lab.test>\r\nNOOP\r\n")
    assert replies(transport) == ["250 mail.lab.test Hello pc [192.168.1.1]", "250 2.1.0 Ok",
                                  "421 4.3.0 Internal server error, closing the connection"]
    assert transport.disconnecting
