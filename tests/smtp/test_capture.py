"""SMTP traffic that tshark dissects cleanly, and decrypts with the lab's key log."""

from __future__ import annotations

import base64
import smtplib

from tests.smtp.test_server import message, tls_context


def test_smtp_captures_dissect_and_decrypt(lab, capture, tmp_path):
    keylog = tmp_path / "keys.log"
    server = lab.start(only="smtp", config=f'[tls]\nkeylog = "{keylog}"\n')
    mx, sub, smtps = (server.port("smtp", n) for n in ("smtp", "submission", "smtps"))
    running = capture(f"tcp port {mx} or tcp port {sub} or tcp port {smtps}")
    with smtplib.SMTP("127.0.0.1", mx, timeout=10) as client:  # cleartext, AUTH in clear
        client.login("alice", "alice")
        client.send_message(message("clear"), "alice@lab.test", ["bob@lab.test"])
        client.docmd("VRFY bob")
        client.docmd("BOGUS")
    with smtplib.SMTP("127.0.0.1", sub, timeout=10) as client:
        client.starttls(context=tls_context(server))
        client.login("alice", "alice")
        client.send_message(message("starttls"), "alice@lab.test", ["bob@lab.test"])
    with smtplib.SMTP_SSL("127.0.0.1", smtps, timeout=10, context=tls_context(server)) as client:
        client.login("alice", "alice")
        client.send_message(message("smtps"), "alice@lab.test", ["bob@lab.test"])
    decode = (f"tcp.port=={mx},smtp", f"tcp.port=={sub},smtp", f"tcp.port=={smtps},tls",
              f"tls.port=={smtps},smtp")
    assert running.problems(decode_as=decode) == []
    assert running.problems(decode_as=decode, keylog=keylog) == []
    clear = running.read("lower(smtp.req.command) == \"mail\"", "tcp.dstport", decode_as=decode)
    assert clear == [str(mx)]  # the TLS sessions' MAIL is hidden without the key log
    decrypted = running.read("lower(smtp.req.command) == \"mail\"", "tcp.dstport", decode_as=decode,
                             keylog=keylog)
    assert sorted(decrypted) == sorted([str(mx), str(sub), str(smtps)])
    # what the lesson shows: AUTH PLAIN in clear gives the password away to Wireshark
    creds = running.read("smtp.auth.username_password", "smtp.auth.username_password",
                         decode_as=decode)
    assert [base64.b64decode(c) for c in creds] == [b"\0alice\0alice"]
    data = running.read("imf.subject", "imf.subject", decode_as=decode, keylog=keylog)
    assert sorted(data) == ["clear", "smtps", "starttls"]
