"""The sans-IO parts of IMAP: framing, parsing, modified UTF-7, MIME sections, search."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.imap import utf7
from services.imap.mime import Entity, parse_addresses
from services.imap.parser import (
    Continue,
    Frame,
    Line,
    ParseError,
    Reader,
    Reject,
    Section,
    format_set,
    parse_command,
)


def events(reader: Reader, data: bytes) -> list:
    reader.feed(data)
    out = []
    while (event := reader.next()) is not None:
        out.append(event)
    return out


def test_reader_frames_pipelined_commands_and_literals():
    reader = Reader(append_limit=1000)
    got = events(reader, b"a1 NOOP\r\na2 LOGIN {5}\r\n")
    assert got == [Frame(b"a1 NOOP"), Continue()]
    got = events(reader, b"alice {5+}\r\nalice\r\na3 NOOP\r\n")
    assert got == [Frame(b"a2 LOGIN {5}\r\nalice {5}\r\nalice"), Frame(b"a3 NOOP")]
    assert parse_command(got[0].raw).args == {"user": "alice", "password": "alice"}


def test_reader_rejects_a_huge_literal_before_reading_it():
    reader = Reader(append_limit=1000)
    reader.authenticated = True
    # Synchronising: rejected, no "+" sent, the client never sends the bytes.
    assert events(reader, b"a1 APPEND INBOX {5000}\r\n") == [
        Reject("a1", "NO [TOOBIG] Message too large")]
    assert events(reader, b"a2 NOOP\r\n") == [Frame(b"a2 NOOP")]
    # Non-synchronising: rejected, and its bytes are skipped without being kept.
    got = events(reader, b"a3 APPEND INBOX {5000+}\r\n" + b"x" * 4000)
    assert got == [Reject("a3", "NO [TOOBIG] Message too large")]
    assert len(reader.buffer) == 0
    assert events(reader, b"x" * 1000 + b"\r\na4 NOOP\r\n") == [Frame(b"a4 NOOP")]
    # Outside APPEND a literal is small.
    assert events(reader, b"a5 LOGIN {70000}\r\n") == [
        Reject("a5", "BAD [TOOBIG] Literal too large")]


def test_reader_line_too_long_and_raw_lines():
    reader = Reader(append_limit=1000)
    got = events(reader, b"a1 NOOP " + b"x" * 70000)
    assert got == [Reject("a1", "BAD Line too long")]
    assert events(reader, b"yyy\r\na2 NOOP\r\n") == [Frame(b"a2 NOOP")]
    reader.raw_line = True
    assert events(reader, b"DONE\r\n") == [Line(b"DONE")]


def test_parse_fetch_sections():
    command = parse_command(b"7 UID FETCH 1:*,4 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From \"To\")]<0.100> BODY[])")
    assert command.name == "UID FETCH"
    assert command.args["set"].resolve(9) == [(1, 9), (4, 4)]
    flags, section, whole = command.args["atts"]
    assert flags == "FLAGS"
    assert section == Section((1, 2), "HEADER.FIELDS", ("FROM", "TO"), (0, 100), True)
    assert section.name() == "BODY[1.2.HEADER.FIELDS (FROM TO)]<0>"
    assert whole.name() == "BODY[]" and not whole.peek
    assert parse_command(b"1 FETCH 1 ALL").args["atts"][-1] == "ENVELOPE"
    for bad in (b"1 FETCH 1 (BODY[1.])", b"1 FETCH 0 FLAGS", b"1 FETCH 1 (FLAGS", b"1 FETCH 1 BODY[MIME]"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_parse_quoted_escapes_search_and_store():
    command = parse_command(b'1 LOGIN "a\\"b" "c\\\\d"')
    assert command.args == {"user": 'a"b', "password": "c\\d"}
    keys = parse_command(b'2 SEARCH CHARSET UTF-8 OR FROM "bob" NOT SEEN (SINCE 1-Feb-2024 LARGER 5)').args["keys"]
    assert keys[0][0] == "OR" and keys[1] == ("AND", [("SINCE", (2024, 2, 1)), ("LARGER", 5)])
    assert parse_command(b"3 SEARCH CHARSET KOI8-R ALL").name == "BADCHARSET"
    store = parse_command(b"4 STORE 1:3 (UNCHANGEDSINCE 12) +FLAGS.SILENT (\\Seen $Junk)").args
    assert (store["mode"], store["silent"], store["unchangedsince"]) == ("add", True, 12)
    assert store["flags"] == ["\\Seen", "$Junk"]
    append = parse_command(b'5 APPEND Sent (\\Seen) " 2-Feb-2024 10:00:00 +0100" {3+}\r\nabc').args
    assert append["message"] == b"abc" and append["date"] == (1706864400.0, 60)
    assert parse_command(b"6 LIST \"\" \"&AMQ-*\"").args["patterns"] == ["&AMQ-*"]
    assert parse_command(b"7 SELECT inbox").args["mailbox"] == "INBOX"


def test_format_set():
    assert format_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert format_set([]) == ""


@given(st.binary(max_size=300))
@settings(max_examples=2000, deadline=None)
def test_parser_never_crashes(data):
    try:
        parse_command(data)
    except ParseError:
        pass


@given(st.lists(st.binary(max_size=40), max_size=20))
@settings(max_examples=500, deadline=None)
def test_reader_never_crashes_and_keeps_order(chunks):
    reader = Reader(append_limit=100)
    for chunk in chunks:
        reader.feed(chunk)
        while reader.next() is not None:
            pass


@given(st.text(max_size=30))
def test_utf7_round_trip(name):
    encoded = utf7.encode(name)
    assert encoded.isascii()
    assert utf7.decode(encoded) == name


def test_utf7_known_values():
    assert utf7.encode("Grüße") == "Gr&APwA3w-e"
    assert utf7.decode("Gr&APwA3w-e") == "Grüße"
    assert utf7.encode("a&b") == "a&-b"
    assert utf7.encode("台北") == "&U,BTFw-"
    for bad in ("&Jjo", "&AGE-", "\u00e9"):
        with pytest.raises(utf7.UTF7Error):
            utf7.decode(bad)


NESTED = (b"From: a@b\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
          b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
          b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
          b"From: c@d\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
          b"--YY\r\n\r\ninner plain\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--YY--\r\n"
          b"\r\n--XX--\r\nepilogue\r\n")


def test_sections_of_nested_parts():
    entity = Entity.parse(NESTED)
    assert entity.section((1,), "", ()) == b"first part"
    assert entity.section((1,), "MIME", ()) == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert entity.section((2,), "HEADER", ()).startswith(b"From: c@d\r\nSubject: inner")
    assert entity.section((2, 1), "", ()) == b"inner plain"
    assert entity.section((2, 2), "", ()) == b"<p>inner</p>"
    assert entity.section((2, 2), "MIME", ()) == b"Content-Type: text/html\r\n\r\n"
    assert entity.section((3,), "", ()) is None
    assert entity.section((1, 1), "", ()) == b"first part"  # a leaf is its own part 1
    assert entity.section((1, 2), "", ()) is None
    assert entity.section((), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: outer\r\n\r\n"
    plain = Entity.parse(b"Subject: x\r\n\r\nbody")
    assert plain.section((1,), "", ()) == b"body" and plain.section((2,), "", ()) is None


def test_bodystructure_of_nested_message():
    structure = Entity.parse(NESTED).bodystructure(extended=False)
    assert structure.startswith('(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 0)'
                                '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ')
    assert '"ALTERNATIVE")' in structure and structure.endswith(' "MIXED")')
    extended = Entity.parse(NESTED).bodystructure(extended=True)
    assert '"MIXED" ("BOUNDARY" "XX") NIL NIL NIL)' in extended


def test_envelope_addresses_and_groups():
    assert parse_addresses('"Doe, John" <john@x.org>, jane@y.org (Jane)') == [
        ("Doe, John", None, "john", "x.org"), ("Jane", None, "jane", "y.org")]
    assert parse_addresses("team: a@b, c@d;, e@f") == [
        (None, None, "team", None), (None, None, "a", "b"), (None, None, "c", "d"),
        (None, None, None, None), (None, None, "e", "f")]
    assert parse_addresses("undisclosed-recipients:;") == [
        (None, None, "undisclosed-recipients", None), (None, None, None, None)]
    envelope = Entity.parse(b"From: =?utf-8?q?J=C3=B6rg?= <j@x>\r\nSubject: \"q\"\r\n\r\n").envelope()
    assert envelope == ('(NIL "\\"q\\"" (("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) '
                        '(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) (("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) '
                        "NIL NIL NIL NIL NIL)")


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_mime_never_crashes(data):
    entity = Entity.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + data)
    entity.bodystructure(True)
    entity.envelope()
    entity.section((1, 1), "MIME", ())


def test_list_wildcards():
    from services.imap.session import _match

    assert _match("*", "a/b/c") and _match("%", "a") and not _match("%", "a/b")
    assert _match("a/%", "a/b") and not _match("a/%", "a/b/c") and _match("a/*", "a/b/c")
    assert _match("inbox", "INBOX") and _match("Inbox/%", "INBOX/x") and not _match("inbox", "Inbox2")
    assert _match("%3/%4", "test3/test4") and _match("*t*4", "a/test3/test4")
    assert not _match("*%*%*%*%*%*%*%*%*%*%*%*%*%x", "a" * 400)  # no exponential backtracking


def test_settings_validation():
    from services import config

    lab = config.default()
    with pytest.raises(config.ConfigError, match=r"\[imap\] autologout: RFC 3501"):
        config.apply(lab, {"imap": {"autologout": 60}}, "lab.toml")
    config.apply(lab, {"imap": {"plaintext_auth": False, "port": 1143}}, "lab.toml")
    assert lab.service("imap").plaintext_auth is False
    assert [l.port for l in __import__("services.imap").imap.listeners(lab)] == [1143, 993]


def test_store_flags_are_case_insensitive(tmp_path):
    from services.store import Store

    store = Store(tmp_path / "data")
    store.users.add("alice", "alice")
    mailbox_id, uid = store.mail.append("alice", "INBOX", b"Subject: x\r\n\r\n", ["$Work"])
    changed, _ = store.mail.set_flags(mailbox_id, [uid], ["$WORK", "\\seen"], "add")
    assert changed[0].flags == {"$Work", "\\Seen"}
    changed, _ = store.mail.set_flags(mailbox_id, [uid], ["$work"], "remove")
    assert changed[0].flags == {"\\Seen"}
    store.close()


def test_journal_summary_of_literals():
    from services.imap.session import _summary

    raw = b"a APPEND INBOX (\\Seen) {13+}\r\nhas {3} in it b"
    assert _summary(raw) == "a APPEND INBOX (\\Seen) {13} <13 bytes> b"
    assert _summary(b"a LOGIN {5}\r\nalice {3}\r\nbob") == "a LOGIN {5} <5 bytes> {3} <3 bytes>"


def test_sequence_ranges_merge():
    from services.imap.session import _merge

    assert _merge([(5, 9), (1, 3), (2, 4), (11, 12), (10, 10)]) == [(1, 12)]
    assert _merge([(1, 1), (3, 3)]) == [(1, 1), (3, 3)]
