"""Any bytes a sender can deliver make a message that ENVELOPE, BODYSTRUCTURE, every
BODY[...] section and SEARCH can answer for: pathological structure degrades to the raw
text or NIL, never an exception (issue 11, item 5: a From of thousands of "(" broke
Python's header parser elsewhere in the lab)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.imap import search
from services.imap.commands import Fetch, Search, Section
from services.imap.mime import Entity
from services.imap.parser import parse_command
from services.store.mail import crlf
from tests.imap.test_dialogue import Raw

EXAMPLES = int(os.environ.get("PROTOLAB_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 300, derandomize=True, deadline=None,
                suppress_health_check=list(HealthCheck))


def nested(depth: int) -> bytes:
    out = b"Subject: leaf\r\n\r\nleaf\r\n"
    for i in range(depth):
        out = (b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) + out
               + b"\r\n--b%d--\r\n" % i)
    return out


def rfc822_nested(depth: int) -> bytes:
    out = b"Subject: leaf\r\n\r\nleaf\r\n"
    for _ in range(depth):
        out = b"Content-Type: message/rfc822\r\n\r\n" + out
    return out


PATHOLOGICAL = {
    "parentheses": b"From: " + b"(" * 5000 + b"\r\nTo: " + b")" * 5000 + b"\r\n\r\nx\r\n",
    "angles and quotes": b"From: " + b'<"' * 3000 + b"\r\nCc: " + b"\\" * 5000 + b"\r\n\r\n",
    "groups": b"To: " + b"a:" * 3000 + b";" * 3000 + b"\r\n\r\n",
    "encoded words": b"Subject: " + b"=?utf-8?b?" * 2000 + b"\r\nFrom: =?x-unknown?q?a?= <a@b>\r\n\r\n",
    "many parts": b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"".join(
        b"--p\r\nContent-Type: text/plain; charset=zlib\r\n\r\npart %d\r\n" % i
        for i in range(5000)) + b"--p--\r\n",
    "deep multipart": nested(2000),
    "deep message/rfc822": rfc822_nested(2000),
    "huge header line": b"Subject: " + b"s" * 3_000_000 + b"\r\nX-" + b"h" * 100_000 + b": v\r\n\r\n",
    "many header lines": b"".join(b"X-%d: v\r\n\t(folded\r\n" % i for i in range(20000)) + b"\r\n",
    "invalid bytes": b"From: \xff\xfe <\x80@\xc0>\r\nSubject: \x00\x1b\xff\r\nContent-Type: "
                     b"text/plain; charset=\"\xff\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                     b"\xff\xff===\r\n",
    "missing boundary": b"Content-Type: multipart/mixed\r\n\r\n--\r\nx\r\n",
    "boundary never seen": b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n",
    "empty boundary": b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n\r\nx\r\n----\r\n',
    "odd charsets": b"Content-Type: text/plain; charset=idna\r\nContent-Transfer-Encoding: "
                    b"quoted-printable\r\n\r\n=FF=\r\n" + b"=" * 1000,
    "no header end": b"Subject: x\r\nFrom: a@b",
    "bare CR and LF": b"Subject: x\rFrom: a\n\n\r\r\nbody\r",
    "date nonsense": b"Date: Mon, 99 Foo 99999999999 99:99:99 +9999\r\n\r\n",
}
SECTIONS = [b"BODY.PEEK[]", b"BODY.PEEK[HEADER]", b"BODY.PEEK[TEXT]", b"BODY.PEEK[1]",
            b"BODY.PEEK[1.MIME]", b"BODY.PEEK[2.1.HEADER]", b"BODY.PEEK[1.1.1.1.1.TEXT]",
            b"BODY.PEEK[3.HEADER.FIELDS (FROM SUBJECT)]", b"BODY.PEEK[HEADER.FIELDS.NOT (X-1)]",
            b"BODY.PEEK[4999]<0.10>"]
KEYS = [b'TEXT "needle"', b'FROM "("', b'SUBJECT "s"', b'BODY "part"', b"SENTSINCE 1-Jan-2000",
        b'HEADER X-1 "v"', b'TO ")"', b'CC "\\\\"']


def everything(data: bytes) -> None:
    """What FETCH and SEARCH ask of a message."""
    entity = Entity.parse(crlf(data))
    entity.envelope()
    entity.bodystructure(True)
    entity.bodystructure(False)
    for att in SECTIONS:
        fetch = parse_command(b"t FETCH 1 " + att)
        assert isinstance(fetch, Fetch)
        section = fetch.atts[0]
        assert isinstance(section, Section)
        entity.section(section.part, section.text, section.fields)
    candidate = search.Candidate(("mime test", id(data)), 1, 1, frozenset(), False, 0.0,
                                 len(data), 1, lambda: entity)
    context = search.Context(1, 1)
    for key in KEYS:
        command = parse_command(b"t SEARCH " + key)
        assert isinstance(command, Search)
        for parsed in command.keys:
            search.matches(parsed, candidate, context)


def test_pathological_messages_are_answered():
    for name, data in PATHOLOGICAL.items():
        try:
            everything(data)
        except Exception as error:  # name the message that broke it
            raise AssertionError(f"{name}: {error!r}") from error


header_names = st.sampled_from([b"From", b"To", b"Cc", b"Subject", b"Date", b"Content-Type",
                                b"Content-Transfer-Encoding", b"Content-Disposition",
                                b"Content-Language", b"Message-ID", b"In-Reply-To", b"Sender"])
header_values = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from([b"(", b")", b"<", b">", b'"', b"\\", b",", b";", b":", b"@",
                              b"=?", b"?=", b"?b?", b"?q?", b"utf-8", b"multipart/mixed",
                              b"message/rfc822", b"text/plain", b"boundary=", b"b", b"charset=",
                              b"base64", b"quoted-printable", b" ", b"\r\n ", b"\xff"]),
             max_size=30).map(b"".join))


@st.composite
def messages(draw, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    if depth < 3 and draw(st.booleans()):
        parts = draw(st.lists(messages(depth + 1), max_size=4))
        body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + draw(
            st.sampled_from([b"--b--\r\n", b"", b"--b"]))
        head += b"Content-Type: multipart/mixed; boundary=b\r\n"
    else:
        body = draw(st.binary(max_size=200))
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


@FUZZ
@given(st.one_of(st.binary(max_size=400), messages()))
def test_any_bytes_make_a_message_fetch_and_search_can_answer(data):
    everything(data)


def test_pathological_messages_over_a_socket(lab):
    server = lab.start(only="imap")
    conn = Raw(server.port("imap", "imap"))
    assert conn.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    assert conn.cmd("CREATE Bad")[-1].startswith(b"t OK")
    for data in PATHOLOGICAL.values():
        data = data[:1_000_000]  # under size_limit and quick to send; the shapes stay
        answer = conn.cmd(b"APPEND Bad {%d+}\r\n" % len(data) + data)[-1]
        assert answer.startswith(b"t OK"), answer
    assert conn.cmd("SELECT Bad")[-1].startswith(b"t OK")
    fetch = b"FETCH 1:* (ENVELOPE BODYSTRUCTURE " + b" ".join(SECTIONS) + b")"
    assert conn.cmd(fetch)[-1].startswith(b"t OK")
    for key in KEYS:
        assert conn.cmd(b"SEARCH " + key)[-1].startswith(b"t OK"), key
    assert "services/imap/" not in server.stderr()


def test_a_colon_after_an_angle_address_ends():
    """Found by the fuzz test: `<a@b>:` looped for ever (a ":" that starts no group)."""
    from services.imap.mime import parse_addresses
    assert parse_addresses("<a@b.example>: x") == [(": x", None, "a", "b.example")]
