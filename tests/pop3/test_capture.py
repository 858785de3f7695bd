"""POP3 traffic that tshark dissects cleanly, and decrypts with the lab's key log."""

from __future__ import annotations

import poplib

from tests.pop3.test_server import deliver, tls_context


def session(client: poplib.POP3) -> None:
    client.capa()
    client.user("alice")
    client.pass_("alice")
    client.stat()
    client.list()
    client.uidl()
    client.retr(1)
    client.top(1, 0)
    client.quit()


def test_pop3_captures_dissect_and_decrypt(lab, capture, tmp_path):
    keylog = tmp_path / "keys.log"
    server = lab.start(only="pop3", config=f'[tls]\nkeylog = "{keylog}"\n')
    deliver(server, "alice", b"Subject: cap\r\n\r\n.dotted\r\nline\r\n")
    plain, secure = server.port("pop3", "pop3"), server.port("pop3", "pop3s")
    running = capture(f"tcp port {plain} or tcp port {secure}")
    session(poplib.POP3("127.0.0.1", plain, timeout=10))
    stls = poplib.POP3("127.0.0.1", plain, timeout=10)
    stls.stls(context=tls_context(server))
    session(stls)
    session(poplib.POP3_SSL("127.0.0.1", secure, timeout=10, context=tls_context(server)))
    decode = (f"tcp.port=={plain},pop", f"tcp.port=={secure},tls", f"tls.port=={secure},pop")
    assert running.problems(decode_as=decode) == []
    assert running.problems(decode_as=decode, keylog=keylog) == []
    retr = 'pop.request.command == "RETR"'
    assert running.read(retr, "tcp.dstport", decode_as=decode) == [str(plain)]
    decrypted = running.read(retr, "tcp.dstport", decode_as=decode, keylog=keylog)
    assert sorted(decrypted) == sorted([str(plain)] * 2 + [str(secure)])
    # RETR and TOP of each of the three sessions, readable once decrypted
    shown = 'pop contains "Subject: cap"'
    assert len(running.read(shown, decode_as=decode)) == 2
    assert len(running.read(shown, decode_as=decode, keylog=keylog)) == 6
