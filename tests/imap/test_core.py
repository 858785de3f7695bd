"""The sans-IO parts of IMAP: framing, parsing, modified UTF-7, MIME sections, search."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.imap import utf7
from services.imap.commands import AppendMessage, Login, Section, format_set
from services.imap.mime import Entity, parse_addresses
from services.imap.parser import Continue, Frame, Line, ParseError, Reader, Reject, parse_command


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
    assert parse_command(got[0].raw) == Login("a2", "LOGIN", "alice", "alice")


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


def test_reader_takes_every_message_of_a_multiappend_as_a_message_literal():
    reader = Reader(append_limit=100_000)
    reader.authenticated = True
    big = b"x" * 70_000  # over the 64 KiB of a literal that is not a message
    got = events(reader, b"a APPEND INBOX {70000+}\r\n" + big
                 + b' (\\Seen) "2-Feb-2024 10:00:00 +0100" {5+}\r\nhello\r\n')
    assert len(got) == 1 and isinstance(got[0], Frame)
    assert [m.data for m in parse_command(got[0].raw).messages] == [big, b"hello"]
    # The messages of one command share the message limit.
    got = events(reader, b"b APPEND INBOX {70000}\r\n" + big + b" {40000}\r\n")
    assert got == [Continue(), Reject("b", "NO [TOOBIG] Message too large")]


def test_reader_line_too_long_and_raw_lines():
    reader = Reader(append_limit=1000)
    got = events(reader, b"a1 NOOP " + b"x" * 70000)
    assert got == [Reject("a1", "BAD Line too long")]
    assert events(reader, b"yyy\r\na2 NOOP\r\n") == [Frame(b"a2 NOOP")]
    reader.raw_line = True
    assert events(reader, b"DONE\r\n") == [Line(b"DONE")]


def test_parse_fetch_sections():
    command = parse_command(
        b"7 UID FETCH 1:*,4 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From \"To\")]<0.100> BODY[])")
    assert command.name == "UID FETCH"
    assert command.set.resolve(9) == [(1, 9), (4, 4)]
    flags, section, whole = command.atts
    assert flags == "FLAGS"
    assert section == Section((1, 2), "HEADER.FIELDS", ("FROM", "TO"), (0, 100), True)
    assert section.name() == "BODY[1.2.HEADER.FIELDS (FROM TO)]<0>"
    assert whole.name() == "BODY[]" and not whole.peek
    assert parse_command(b"1 FETCH 1 ALL").atts[-1] == "ENVELOPE"
    for bad in (b"1 FETCH 1 (BODY[1.])", b"1 FETCH 0 FLAGS", b"1 FETCH 1 (FLAGS", b"1 FETCH 1 BODY[MIME]"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_parse_quoted_escapes_search_and_store():
    command = parse_command(b'1 LOGIN "a\\"b" "c\\\\d"')
    assert command == Login("1", "LOGIN", 'a"b', "c\\d")
    keys = parse_command(b'2 SEARCH CHARSET UTF-8 OR FROM "bob" NOT SEEN (SINCE 1-Feb-2024 LARGER 5)').keys
    assert keys[0][0] == "OR" and keys[1] == ("AND", [("SINCE", (2024, 2, 1)), ("LARGER", 5)])
    assert parse_command(b"3 SEARCH CHARSET KOI8-R ALL").name == "BADCHARSET"
    store = parse_command(b"4 STORE 1:3 (UNCHANGEDSINCE 12) +FLAGS.SILENT (\\Seen $Junk)")
    assert (store.mode, store.silent, store.unchangedsince) == ("add", True, 12)
    assert store.flags == ["\\Seen", "$Junk"]
    append = parse_command(b'5 APPEND Sent (\\Seen) " 2-Feb-2024 10:00:00 +0100" {3+}\r\nabc')
    assert append.messages == [AppendMessage(b"abc", ["\\Seen"], (1706864400.0, 60))]
    multi = parse_command(b"5 APPEND Sent {3+}\r\nabc (\\Draft) {1+}\r\nd")  # MULTIAPPEND
    assert multi.messages == [AppendMessage(b"abc"), AppendMessage(b"d", ["\\Draft"])]
    assert parse_command(b"6 LIST \"\" \"&AMQ-*\"").patterns == ["&AMQ-*"]
    assert parse_command(b"7 SELECT inbox").mailbox == "INBOX"


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
    from services.imap.listing import match as _match

    assert _match("*", "a/b/c") and _match("%", "a") and not _match("%", "a/b")
    assert _match("a/%", "a/b") and not _match("a/%", "a/b/c") and _match("a/*", "a/b/c")
    assert _match("inbox", "INBOX") and _match("Inbox/%", "INBOX/x") and not _match("inbox", "Inbox2")
    assert _match("%3/%4", "test3/test4") and _match("*t*4", "a/test3/test4")
    assert not _match("*%*%*%*%*%*%*%*%*%*%*%*%*%x", "a" * 400)  # no exponential backtracking


def test_listed_names_and_attributes_are_pure():
    from types import SimpleNamespace

    from services.imap.listing import listed

    def box(name: str, special: str = "", noselect: bool = False) -> SimpleNamespace:
        return SimpleNamespace(name=name, special_use=special, noselect=noselect)

    boxes = {n.name: n for n in (box("INBOX"), box("a"), box("a/b"), box("Sent", "\\Sent"),
                                 box("p", noselect=True), box("p/q"))}
    got = listed(boxes, {"a/b", "gone"}, "", ["*"], [], ["SUBSCRIBED"], lsub=False)
    assert got[0] == ("INBOX", ["\\HasNoChildren"], False)  # INBOX first
    got = [(n, a) for n, a, _ in got]
    assert dict(got)["a/b"] == ["\\HasNoChildren", "\\Subscribed"]
    assert dict(got)["Sent"] == ["\\HasNoChildren", "\\Sent"]
    assert dict(got)["p"] == ["\\Noselect", "\\HasChildren"]
    # LSUB "%" shows the level above a subscribed name as \Noselect; SUBSCRIBED does not.
    assert listed(boxes, {"a/b"}, "", ["%"], [], [], lsub=True) == [("a", ["\\Noselect"], False)]
    assert listed(boxes, {"a/b"}, "", ["%"], ["SUBSCRIBED"], [], lsub=False) == []
    assert [n for n, *_ in listed(boxes, set(), "", ["*"], ["SPECIAL-USE"], [], False)] == ["Sent"]
    # RECURSIVEMATCH (RFC 5258 3.5): "a" has a subscribed child the pattern does not list.
    recursive = ["SUBSCRIBED", "RECURSIVEMATCH"]
    assert listed(boxes, {"a/b"}, "", ["%"], recursive, [], False) == [
        ("a", ["\\HasChildren"], True)]
    assert listed(boxes, {"a/b"}, "", ["a*"], recursive, [], False) == [
        ("a/b", ["\\HasNoChildren", "\\Subscribed"], False)]  # the child is listed: no CHILDINFO


def test_list_extended_options_are_checked():
    from services.imap.listing import check_options

    assert check_options(["SUBSCRIBED", "RECURSIVEMATCH"], ["CHILDREN", "STATUS"]) is None
    assert check_options(["RECURSIVEMATCH"], []) and check_options(["RECURSIVEMATCH", "REMOTE"], [])
    assert check_options(["IMAPTEST"], []) and check_options([], ["IMAPTEST"])


def test_lru_bounds_items_and_weight_but_keeps_the_newest():
    from services.imap.cache import LRU

    cache: LRU[bytes] = LRU(3, 10, len)
    for key in "abc":
        cache.put(key, b"xx")
    assert cache.get("a") == b"xx"  # a is now the most recent
    cache.put("d", b"xx")  # four items: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") == b"xx" and len(cache) == 3
    cache.put("e", b"x" * 9)  # over the weight: everything older goes, the newest stays
    assert len(cache) == 1 and cache.get("e") == b"x" * 9
    cache.put("f", b"x" * 50)  # heavier than the bound alone: still kept
    assert cache.get("f") is not None and len(cache) == 1


def test_walk_visits_every_part_and_attached_message_in_order():
    data = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\none\r\n--B\r\n"
            b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ntwo\r\n--B--\r\n")
    entity = Entity.parse(data)
    kinds = [(e.maintype, e.leaf) for e in entity.walk()]
    assert kinds == [("multipart", False), ("text", True), ("message", False), ("text", True)]
    assert [e.body for e in entity.walk() if e.leaf] == [b"one", b"two"]


def test_settings_validation():
    from services import config

    lab = config.default()
    with pytest.raises(config.ConfigError, match=r"\[imap\] autologout: RFC 3501"):
        config.apply(lab, {"imap": {"autologout": 60}}, "lab.toml")
    config.apply(lab, {"imap": {"plaintext_auth": False, "port": 1143}}, "lab.toml")
    assert lab.service("imap").plaintext_auth is False
    assert [one.port for one in __import__("services.imap").imap.listeners(lab)] == [1143, 993]


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


ADDRESS_MESSAGES = [  # imaptest's search-addresses.mbox (Dovecot's answers are the oracle)
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\n\r\nbody\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\n\r\nb\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n\r\nb\r\n",
    b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n\r\nb\r\n",
    b"From: user-from1@domain.org, user-from2@domain.org\r\n\r\nb\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: groupname: groupuser1@domain.org, "
    b"groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;\r\n\r\nb\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: groupname:;\r\n\r\nb\r\n",
]


@pytest.mark.parametrize(("key", "expected"), [
    (b"FROM user-from@domain.org", [1, 2, 3, 4, 6, 7]),  # 3: comments inside <> dropped
    (b"FROM realfrom", [2, 4, 6, 7]),  # 4: the trailing comment is the name
    (b"FROM ealfro", [2, 4, 6, 7]),
    (b"FROM user-from1", [5]),
    (b"TO groupname", [6, 7]),  # group names are searchable
    (b"TO groupname2", [6]),
    (b"TO groupuser3", [6]),
    (b"TO groupuser4", []),
    (b"TO comment", []),
    (b'HEADER FROM "comment"', [3]),  # HEADER still sees the raw field
])
def test_address_searches_match_parsed_addresses(key, expected):
    from services.imap import search

    keys = parse_command(b"t SEARCH " + key).keys
    found = []
    for seq, data in enumerate(ADDRESS_MESSAGES, 1):
        entity = Entity.parse(data)
        candidate = search.Candidate(("addresses", seq, key), seq, seq, frozenset(), False, 0.0,
                                     len(data), 1, lambda e=entity: e)
        if all(search.matches(k, candidate, search.Context(7, 7)) for k in keys):
            found.append(seq)
    assert found == expected


@pytest.mark.parametrize(("subject", "base", "reply"), [
    ("Hello", "HELLO", False),
    ("Re: hello", "HELLO", True),
    ("RE: Fwd[2]: [list] Re:  hello (fwd)", "HELLO", True),
    ("[list] hello", "HELLO", False),  # a leading blob goes when something is left
    ("[only a blob]", "[ONLY A BLOB]", False),
    ("[fwd: re: hello]", "HELLO", True),
    ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=  \t  aus  Bern", "GRÜSSE AUS BERN", False),
    ("", "", False),
])
def test_base_subject(subject, base, reply):
    from services.imap.sort import base_subject

    assert base_subject(subject) == (base, reply)


def _items(*headers: bytes) -> list:
    from services.imap import sort

    return [sort.Item(seq, seq * 10, 1000.0 - seq, len(h), sort.Keys.of(Entity.parse(h + b"\r\n")))
            for seq, h in enumerate(headers, 1)]


def test_sort_keys_reverse_and_ties_in_sequence_order():
    from services.imap.sort import sort

    items = _items(b"From: b@x\r\nSubject: re: b\r\n", b"From: Zed <a@y>\r\nSubject: a\r\n",
                   b"From: b@z\r\nSubject: B\r\n")

    def order(criteria: list[tuple[str, bool]]) -> list[int]:
        return [i.seq for i in sort(items, criteria)]

    assert order([("FROM", False)]) == [2, 1, 3]  # the mailbox (local part); ties by number
    assert order([("FROM", True)]) == [1, 3, 2]  # REVERSE turns the key, not the tie-break
    assert order([("SUBJECT", False), ("ARRIVAL", False)]) == [2, 3, 1]  # arrival: 1000 - seq
    assert order([("SUBJECT", False), ("ARRIVAL", True)]) == [2, 1, 3]
    assert order([("DISPLAYFROM", False)]) == [1, 3, 2]  # b@x, b@z, "zed"
    assert order([("DATE", False)]) == [3, 2, 1]  # no Date: the INTERNALDATE


def test_threads_by_subject_and_by_references():
    from services.imap import thread

    items = _items(
        b"Message-ID: <1@x>\r\nSubject: one\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n",
        b"Message-ID: <2@x>\r\nSubject: re: one\r\nReferences: <1@x>\r\n"
        b"Date: Mon, 1 Jan 2024 11:00:00 +0000\r\n",
        b"Message-ID: <3@x>\r\nSubject: other\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n",
        b"Message-ID: <4@x>\r\nSubject: re: one\r\nIn-Reply-To: <1@x>\r\n"
        b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n",
        b"Message-ID: <5@x>\r\nSubject: re: lost\r\nReferences: <gone@x>\r\n"
        b"Date: Mon, 1 Jan 2024 13:00:00 +0000\r\n",
        b"Message-ID: <6@x>\r\nSubject: Re: lost\r\nReferences: <gone@x>\r\n"
        b"Date: Mon, 1 Jan 2024 14:00:00 +0000\r\n",
    )
    assert thread.render(thread.ordered_subject(items), False) == "(3)(1 (2)(4))(5 6)"
    # 5 and 6 answer a message that is not there: a dummy at the top holds them.
    assert thread.render(thread.references(items), False) == "(3)(1 (2)(4))((5)(6))"
    assert thread.render(thread.references(items[:2]), True) == "(10 20)"


def test_binary_sections_decode_the_content():
    """RFC 3516: BINARY[part] undoes the transfer encoding; BINARY[] is the message."""
    from services.imap.mime import decode_qp, without_nul

    section = parse_command(b"t FETCH 1 (BINARY.PEEK[2]<1.4> BINARY.SIZE[1])").atts
    assert [s.name() for s in section] == ["BINARY[2]<1>", "BINARY.SIZE[1]"]
    assert section[0].peek and section[1].peek
    with pytest.raises(ParseError):
        parse_command(b"t FETCH 1 BINARY[1.TEXT]")  # part numbers only
    data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n aGVs\r\nbG8=  \r\n--b\r\n"
            b"Content-Transfer-Encoding: x-unknown\r\n\r\nzz\r\n--b--\r\n")
    entity = Entity.parse(data)
    assert entity.binary((1,)) == b"hello" and entity.binary(()) == data
    assert entity.binary((2,)) is None and entity.binary((9,)) == b""
    assert decode_qp(b"a  \r\nb=\r\nc= \t\r\nd=3D=41") == b"a\r\nbcd=A"
    stored = without_nul(b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\n")
    assert b"\x00" not in stored and Entity.parse(stored).binary((1,)) == b"\x00\x01\n"
    plain = b"Subject: x\r\n\r\nno NUL here\r\n"
    assert without_nul(plain) is plain


def test_imap_urls_of_catenate():
    from services.imap import urls

    assert urls.parse("/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=1.TEXT/;PARTIAL=0.100") == \
        urls.MessageUrl("INBOX", 7, 3, "1.TEXT", (0, 100))
    assert urls.parse("imap://alice@lab.test/a%20b/;uid=2/;partial=5") == \
        urls.MessageUrl("a b", 2, None, "", (5, None))
    for bad in ("INBOX/;UID=1", "/INBOX", "/INBOX/;UID=x", "/INBOX;FOO=1/;UID=1",
                "/INBOX/;UID=1/;UID=2", "/INBOX/;UID=1/;URLAUTH=x", "imap://host"):
        with pytest.raises(urls.BadUrl):
            urls.parse(bad)
