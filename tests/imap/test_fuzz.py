"""Fuzzing the IMAP parser and session in every state: any line a client sends gets a tagged
OK, NO or BAD and the session goes on; nothing raises.

Seeded (derandomised) and a few thousand inputs by default; PROTOLAB_FUZZ_EXAMPLES=N runs N
per test instead (the long mode).
"""

from __future__ import annotations

import os
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.imap.parser import ParseError, parse_command
from tests.imap.test_dialogue import Raw
from tests.imap.test_session import COMMANDS, Harness, make_store

EXAMPLES = int(os.environ.get("PROTOLAB_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 1000, derandomize=True, deadline=None,
                suppress_health_check=list(HealthCheck))

NAMES = [b"FETCH", b"UID FETCH", b"STORE", b"UID STORE", b"SEARCH", b"UID SEARCH", b"COPY",
         b"MOVE", b"SELECT", b"EXAMINE", b"STATUS", b"LIST", b"LSUB", b"APPEND", b"LOGIN",
         b"AUTHENTICATE", b"CREATE", b"RENAME", b"ENABLE", b"ID", b"UID EXPUNGE", b"NOOP"]
ARG_BYTES = st.sampled_from([b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b":", b",", b"*",
                             b'"', b"\\", b"{", b"}", b"+", b"-", b"~", b"1", b"0", b"9" * 30,
                             b"\xff", b"\x00", b"\x7f", b"\xc3\xa9", b"NIL", b"BODY", b"PEEK",
                             b"HEADER.FIELDS", b"MIME", b"TEXT", b"FLAGS", b"\\Seen", b"OR",
                             b"NOT", b"UID", b"CHARSET", b"RETURN", b"INBOX", b"1-Jan-2020"])


def _one_line(data: bytes) -> bytes:
    """One command line: no CR/LF inside, and not ending in a literal announcement (the
    reader would then wait for the literal's bytes)."""
    data = data.replace(b"\r", b"").replace(b"\n", b"")
    return data + b" x" if data.endswith(b"}") else data


keyword_soup = st.builds(lambda name, args: name + b" " + b"".join(args),
                         st.sampled_from(NAMES), st.lists(ARG_BYTES, max_size=12))


@st.composite
def mutated(draw) -> bytes:
    """A real command (from the session tests' table) with a few bytes changed."""
    template = draw(st.sampled_from([c for c in COMMANDS if "\r\n" not in c]))
    data = bytearray(template.format(n=draw(st.integers(0, 5)), m=draw(st.integers(0, 5))).encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos + draw(st.integers(0, 2))] = draw(st.binary(min_size=0, max_size=3))
    return bytes(data)


lines = st.one_of(keyword_soup, mutated(), st.binary(max_size=60)).map(_one_line)


@FUZZ
@given(lines)
def test_parser_raises_only_parse_errors(line):
    try:
        parse_command(b"t " + line)
    except ParseError:
        pass


TAGGED = re.compile(rb"^t1 (OK|NO|BAD) ", re.M)


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    store, journal = make_store(tmp_path_factory.mktemp("imapfuzz"))
    yield store, journal
    store.close()


def _session_in(state: str, store, journal) -> Harness:
    h = Harness(store, journal)
    if state != "not authenticated":
        assert b"a OK" in h.feed(b"a LOGIN alice alice\r\n")
    if state == "selected":
        assert b"b OK" in h.feed(b"b SELECT INBOX\r\n")
    return h


def _answered_and_alive(h: Harness, line: bytes) -> None:
    out = h.feed(b"t1 " + line + b"\r\n")
    if h.session.wants_line:  # AUTHENTICATE or IDLE began: the client may end them
        out += h.feed(b"*\r\n" if h.session.authenticating is not None else b"DONE\r\n")
    if h.session.closing:  # LOGOUT, or the mailbox went away: a defined end, said with BYE
        assert b"* BYE " in out and b"Internal" not in out, (line, out)
        return
    assert TAGGED.search(out), (line, out)
    assert b"Internal" not in out, (line, out)
    assert b"z OK" in h.feed(b"z NOOP\r\n"), line


@pytest.mark.parametrize("state", ["not authenticated", "authenticated", "selected"])
def test_any_line_in_any_state_gets_a_tagged_answer(fuzz_store, state):
    store, journal = fuzz_store

    @FUZZ
    @given(lines)
    def check(line):
        h = _session_in(state, store, journal)
        try:
            _answered_and_alive(h, line)
        finally:
            h.session.close()

    check()


UNDECODABLE = [b"a FETCH 1 \xff", b"a STORE 1 \xff (\\Seen)", b"a SEARCH \xff",
               b"a FETCH 1 (BODY[\xff])", b"a FETCH 1:" + b"9" * 5000 + b" FLAGS"]


def test_bytes_that_do_not_decode_get_bad_over_a_socket(lab):
    """The attack campaign's `printf 'a FETCH 1 \\xff\\r\\n' | nc host 143`, before and
    after login: BAD, and the session answers the next command."""
    server = lab.start(only="imap")
    conn = Raw(server.port("imap", "imap"))
    for state in ("not authenticated", "selected"):
        if state == "selected":
            assert conn.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
            assert conn.cmd("SELECT INBOX")[-1].startswith(b"t OK")
        for line in UNDECODABLE:
            conn.send(line + b"\r\n")
            assert conn.until(b"a")[-1].startswith(b"a BAD "), (state, line)
            assert conn.cmd("NOOP")[-1].startswith(b"t OK"), (state, line)
    assert "Traceback" not in server.stderr()


def test_half_closed_client_gets_its_answer(lab):
    """`printf 'a FETCH 1 \\xff\\r\\n' | nc -N host 143`: the client shuts its side after
    the command; the BAD still comes, then the close."""
    server = lab.start(only="imap")
    sock = socket.create_connection(("127.0.0.1", server.port("imap", "imap")), timeout=10)
    sock.sendall(b"a FETCH 1 \xff\r\nb NOOP\r\n")
    sock.shutdown(socket.SHUT_WR)
    heard = b""
    while chunk := sock.recv(65536):
        heard += chunk
    sock.close()
    assert b"\r\na BAD " in heard and b"\r\nb OK " in heard, heard
