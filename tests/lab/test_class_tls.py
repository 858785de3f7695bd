"""The key-log exercise: every TLS handshake journaled with its SNI, ALPN, version, cipher
and whether its secrets went to the key log (services/tls.py), the exercise checked from
those fields, and the student's instructions true: tshark decrypts a capture of the
session with the lab's key log."""

from __future__ import annotations

import csv
import io
import subprocess

from services.classroom.exercises import catalogue, evaluate
from services.journal import read
from tests.conftest import need
from tests.lab.test_class import event

EXERCISE = "tls-key-log"


def handshake(session: str, user: str, service: str, keylog: bool) -> dict:
    fields = {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "sni": "www.lab.test",
              "alpn": "http/1.1", "keylog": keylog}
    return {**event(session, "10.0.0.7:4000", user, service, "event",
                    "tls handshake TLSv1.3 TLS_AES_256_GCM_SHA384"), "fields": fields}


def test_the_exercise_needs_a_key_logged_handshake_then_a_request_in_that_session():
    request = event("a", "10.0.0.7:4000", "stu1", "http", "command", "GET /~stu1/ HTTP/1.1")
    done = evaluate(catalogue(), [handshake("a", "stu1", "http", True), request], {"stu1"})
    assert done.sessions("stu1", EXERCISE) == ["a"]
    imaps = [handshake("b", "stu1", "imap", True),
             event("b", "10.0.0.7:4000", "stu1", "imap", "command", "A001 CAPABILITY")]
    assert evaluate(catalogue(), imaps, {"stu1"}).sessions("stu1", EXERCISE) == ["b"]
    for events in (
            [handshake("a", "stu1", "http", False), request],  # no key log: nothing to decrypt
            [request, handshake("a", "stu1", "http", True)],  # the request before the handshake
            [handshake("a", "stu1", "http", True)],  # a handshake and nothing in it
            [handshake("c", "stu1", "smtp", True),  # neither HTTPS nor IMAPS
             event("c", "10.0.0.7:4000", "stu1", "smtp", "command", "EHLO pc")],
            [{**e, "fields": {}} for e in (handshake("a", "stu1", "http", True), request)]):
        assert evaluate(catalogue(), events, {"stu1"}).done["stu1"].get(EXERCISE) is None


def test_handshakes_are_journaled_with_their_fields_graded_and_decrypted(lab, capture, tmp_path):
    need("curl", "swaks", "tshark")
    keylog = tmp_path / "keys.log"
    server = lab.start(only="http,imap,smtp", config=f'[tls]\nkeylog = "{keylog}"\n')
    https, imaps = server.port("http", "https"), server.port("imap", "imaps")
    running = capture(f"tcp port {https} or tcp port {imaps}")
    roster = tmp_path / "roster.csv"
    roster.write_text("stu1,,pw-one-1\nstu2,,pw-two-2\nstu3,,pw-three\n")
    assert server.cli("class", "import", str(roster)).returncode == 0
    ca = str(server.data / "tls" / "ca.crt")

    def curl(address: str, *args: str) -> None:
        done = subprocess.run(["curl", "-sS", "-f", "--interface", address, "--cacert", ca, *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    # stu1: a file put into the web space over HTTPS (HTTP/1.1: ALPN says so)
    curl("127.0.0.2", "--http1.1", "-u", "stu1:pw-one-1", "-T", "-",
         f"https://localhost:{https}/~stu1/secret.txt")
    # stu2: mail read over IMAPS (no ALPN: curl offers none for IMAP)
    curl("127.0.0.3", "-u", "stu2:pw-two-2", f"imaps://localhost:{imaps}/INBOX")
    # stu3: SMTP with STARTTLS: a key-logged handshake, but not the exercise's protocols
    sent = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.port('smtp', 'smtp')}",
                           "--tls", "--local-interface", "127.0.0.4", "--to", "stu3@lab.test",
                           "--auth-user", "stu3", "--auth-password", "pw-three"],
                          capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    server.journal_until("smtp", "tls handshake")
    events = [e for e in read(server.data / "journal") if e["text"].startswith("tls handshake")]
    by_service = {e["service"]: e["fields"] for e in events}
    assert by_service["http"] == {"version": "TLSv1.3", "cipher": by_service["http"]["cipher"],
                                  "sni": "localhost", "alpn": "http/1.1", "keylog": True}
    assert by_service["imap"]["alpn"] == "" and by_service["imap"]["sni"] == "localhost"
    assert by_service["smtp"]["keylog"] is True and len(events) == 3  # one per handshake
    grades = server.cli("class", "grades", "--csv")
    rows = {row["student"]: row[EXERCISE] for row in csv.DictReader(io.StringIO(grades.stdout))}
    assert rows == {"stu1": "1", "stu2": "1", "stu3": "0"}
    # what the instructions promise: the lab's key log decrypts both in tshark
    decode = (f"tcp.port=={https},tls", f"tcp.port=={imaps},tls", f"tls.port=={imaps},imap")
    assert running.read("http.request.method == \"PUT\"", "http.request.uri", keylog=keylog,
                        decode_as=decode) == ["/~stu1/secret.txt"]
    assert any("LOGIN" in line.upper() or "AUTHENTICATE" in line.upper() for line in running.read(
        "imap.request", "imap.request", keylog=keylog, decode_as=decode))
    assert running.read("imap", keylog=None, decode_as=decode) == []  # not without it
