"""A seeded mutation campaign against one all-in-one lab (issue 11, the fuzz rule).

Valid sessions of every protocol are mutated in each of their states (before login, after
login, with a mailbox selected, inside DATA...): byte flips, truncation, repetition, huge
tokens, NULs, invalid UTF-8, lost or doubled line ends. A session reaches its state with
valid commands, then sends its mutated inputs pipelined, half-closes and reads until the
server lets go. Afterwards: no traceback on the server's stderr, `protolab check` passes
for every service, and the server's resident memory is back near its level.

Default: FUZZ_INPUTS inputs per protocol (a few thousand); PROTOLAB_LONG=1 makes it ten
times as many. The seed is printed in the figures line; PROTOLAB_FUZZ_SEED replays one.
"""

from __future__ import annotations

import base64
import io
import os
import random
import socket
import struct
from collections.abc import Callable

import pytest

from tests.hardening import ALL, HOST, rss_kib, send_mail, smb_client

LONG = bool(os.environ.get("PROTOLAB_LONG"))
FUZZ_INPUTS = 20_000 if LONG else 2_000
PER_SESSION = 10
SEED = int(os.environ.get("PROTOLAB_FUZZ_SEED", "20261201"))
RSS_SLACK_KIB = 24 * 1024  # allocator arenas kept after megabyte-sized inputs
DRAIN_TIMEOUT = 10

PLAIN_ALICE = base64.b64encode(b"\0alice\0alice").decode()
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One mutation (sometimes two) of a valid input."""
    for _ in range(rng.choice((1, 1, 1, 2))):
        kind = rng.randrange(9)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # flip bits of a few bytes
            buf = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        elif kind == 1:  # truncation
            data = data[:at]
        elif kind == 2 and data:  # repetition of a slice
            start = rng.randrange(len(data))
            data = data[:at] + data[start:start + rng.randint(1, 64)] * rng.randint(2, 200) + data[at:]
        elif kind == 3:  # a huge token
            size = rng.choice((1_000, 17_000, 70_000, 70_000, 300_000)) if rng.random() > 0.01 \
                else 2_000_000
            data = data[:at] + rng.choice((b"A", b"9", b"(", b"{", b"%", b"\\", b" ")) * size + data[at:]
        elif kind == 4:  # NULs
            data = data[:at] + b"\0" * rng.randint(1, 16) + data[at:]
        elif kind == 5:  # invalid UTF-8
            data = data[:at] + rng.choice(BAD_UTF8) * rng.randint(1, 8) + data[at:]
        elif kind == 6:  # line ends lost, bare, or doubled
            data = data.replace(b"\r\n", rng.choice((b"", b"\n", b"\r", b"\r\n\r\n", b"\n\r")))
        elif kind == 7:  # a random byte string in place of a token
            words = data.split(b" ")
            words[rng.randrange(len(words))] = rng.randbytes(rng.randint(1, 40))
            data = b" ".join(words)
        else:  # a number made absurd
            data = data[:at] + rng.choice((b"4294967296", b"-1", b"0", b"99999999999999999999",
                                           b"1:*", b"*:1", b"18446744073709551615")) + data[at:]
    return data


def drain(sock: socket.socket) -> None:
    """Half-close, then read until the server lets go (or stops talking for a while)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_TIMEOUT)
        while sock.recv(65536):
            pass
    except OSError:  # reset, timeout, refused: all fine answers to garbage
        pass
    finally:
        sock.close()


def line_session(port: int, prefix: list[bytes], inputs: list[bytes], crlf: bool = True,
                 greeting: bool = True) -> None:
    with socket.create_connection((HOST, port), timeout=DRAIN_TIMEOUT) as sock:
        if greeting:
            sock.recv(4096)
        end = b"\r\n" if crlf else b""
        try:
            sock.sendall(b"".join(line + end for line in prefix))
            for item in inputs:
                sock.sendall(item + end)
        except OSError:
            pass
        drain(sock)


# protocol -> {state: (listener, valid prefix that reaches it, valid inputs of that state)}
Table = dict[str, tuple[str, list[bytes], list[bytes]]]

SMTP: Table = {
    "greeted": ("smtp", [], [
        b"EHLO pc.test", b"HELO pc.test", b"MAIL FROM:<a@outside.test> SIZE=100 BODY=8BITMIME",
        b"RCPT TO:<alice@lab.test>", b"DATA", b"RSET", b"NOOP", b"VRFY alice", b"HELP",
        b"STARTTLS", b"AUTH PLAIN " + PLAIN_ALICE.encode(), b"AUTH LOGIN", b"BDAT 5 LAST",
        b"EXPN staff"]),
    "in a transaction": ("smtp", [b"EHLO pc.test", b"MAIL FROM:<a@outside.test>"], [
        b"RCPT TO:<alice@lab.test>", b"RCPT TO:<bob@lab.test> NOTIFY=NEVER", b"DATA",
        b"RCPT TO:<\"q uoted\"@lab.test>", b"RCPT TO:<@route:alice@lab.test>"]),
    "in DATA": ("smtp", [b"EHLO pc.test", b"MAIL FROM:<a@outside.test>",
                         b"RCPT TO:<alice@lab.test>", b"DATA"], [
        b"From: " + b"(" * 3000 + b"\r\nSubject: =?utf-8?b?w6k=?=\r\n\r\nbody\r\n.",
        b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n.",
        b"..leading dot\r\n.", b"Subject: y\r\n\r\n" + b"line\r\n" * 50 + b"."]),
    "authenticated": ("submission", [b"EHLO pc.test", b"AUTH PLAIN " + PLAIN_ALICE.encode()], [
        b"MAIL FROM:<alice@lab.test>", b"RCPT TO:<bob@lab.test>", b"DATA", b"RSET",
        b"AUTH PLAIN " + PLAIN_ALICE.encode()]),
}

POP3: Table = {
    "authorization": ("pop3", [], [
        b"USER alice", b"PASS alice", b"APOP alice 0123456789abcdef0123456789abcdef", b"CAPA",
        b"STLS", b"AUTH PLAIN", b"AUTH PLAIN " + PLAIN_ALICE.encode(), b"AUTH", b"NOOP"]),
    "transaction": ("pop3", [b"USER alice", b"PASS alice"], [
        b"STAT", b"LIST", b"LIST 1", b"RETR 1", b"TOP 1 10", b"TOP 2 0", b"UIDL", b"UIDL 1",
        b"DELE 1", b"RSET", b"NOOP", b"CAPA"]),
}

IMAP: Table = {
    "not authenticated": ("imap", [], [
        b"a CAPABILITY", b"a LOGIN alice alice", b"a AUTHENTICATE PLAIN " + PLAIN_ALICE.encode(),
        b"a STARTTLS", b'a ID ("name" "fuzz")', b"a NOOP", b"a FETCH 1 (FLAGS)",
        b"a STORE 1 +FLAGS (\\Seen)", b"a LOGIN {5+}\r\nalice {5+}\r\nalice",
        b"a APPEND INBOX {5+}\r\nhello", b'a LOGIN "al\\"ice" "x"']),
    "authenticated": ("imap", [b"p LOGIN alice alice"], [
        b'a LIST "" "*"', b'a LIST (SPECIAL-USE) "" "%" RETURN (STATUS (MESSAGES))',
        b"a CREATE fuzz/box", b"a STATUS INBOX (MESSAGES UIDNEXT UNSEEN SIZE)",
        b"a APPEND INBOX (\\Seen) {24+}\r\nSubject: fuzz\r\n\r\nhello\r\n",
        b"a NAMESPACE", b"a ENABLE QRESYNC", b"a SELECT INBOX (CONDSTORE)",
        b"a RENAME fuzz/box fuzz/other", b"a DELETE fuzz/other", b"a SUBSCRIBE INBOX",
        b'a LSUB "" *', b"a EXAMINE Archive"]),
    "selected": ("imap", [b"p LOGIN alice alice", b"s SELECT INBOX"], [
        b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])", b"a FETCH 1 BODY[]<0.10>",
        b"a UID FETCH 1:* (BODYSTRUCTURE ENVELOPE RFC822.SIZE)", b"a SEARCH TEXT hello",
        b"a SEARCH OR FROM a SUBJECT b SINCE 1-Jan-2020 NOT DELETED", b"a STORE 1 +FLAGS (\\Flagged)",
        b"a COPY 1 Archive", b"a UID SEARCH 1:*", b"a FETCH 1 (BODY[1.2.MIME] BINARY[1])",
        b"a IDLE\r\nDONE", b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", b"a UID STORE 1 FLAGS ()",
        b"a SEARCH CHARSET UTF-8 SUBJECT {2+}\r\n\xc3\xa9", b"a UNSELECT"]),
}

FTP: Table = {
    "before login": ("ftp", [], [
        b"USER alice", b"PASS alice", b"AUTH TLS", b"FEAT", b"SYST", b"OPTS UTF8 ON", b"HELP",
        b"USER anonymous", b"PBSZ 0", b"PROT P"]),
    "logged in": ("ftp", [b"USER alice", b"PASS alice"], [
        b"PWD", b"CWD public_html", b"CDUP", b"MKD fuzz-dir", b"RMD fuzz-dir", b"TYPE I",
        b"TYPE A", b"PASV", b"EPSV", b"SIZE fuzz.txt", b"MDTM fuzz.txt", b"RNFR fuzz.txt",
        b"RNTO fuzz2.txt", b"DELE fuzz2.txt", b"MLST /", b"STAT /", b"SITE CHMOD 755 fuzz.txt",
        b"REST 10", b"ABOR", b"NOOP", b"STRU F", b"MODE S", b"ALLO 100", b"EPRT |1|127.0.0.1|9|"]),
}

HTTP_PUT = b"PUT /~alice/fuzz.txt HTTP/1.1\r\nHost: www\r\nAuthorization: Basic YWxpY2U6YWxpY2U=\r\n" \
           b"Content-Length: 5\r\n\r\nhello"
HTTP_JSON = b'{"name": "fuzzed", "password": "pw"}'
HTTP: Table = {
    "requests": ("http", [], [
        b"GET / HTTP/1.1\r\nHost: www.lab.test\r\n\r\n",
        b"GET /~alice/ HTTP/1.1\r\nHost: www\r\nConnection: keep-alive\r\n\r\n",
        HTTP_PUT, b"MKCOL /~alice/fuzzdir HTTP/1.1\r\nHost: www\r\nAuthorization: Basic "
                  b"YWxpY2U6YWxpY2U=\r\n\r\n",
        b"POST /api/v1/users HTTP/1.1\r\nHost: www\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(HTTP_JSON) + HTTP_JSON,
        b"GET /api/v1/users/alice/mailboxes/INBOX/messages HTTP/1.1\r\nHost: www\r\n"
        b"Authorization: Basic YWxpY2U6YWxpY2U=\r\n\r\n",
        b"POST /lab/http/upload HTTP/1.1\r\nHost: www\r\nContent-Type: multipart/form-data; "
        b"boundary=xyz\r\nContent-Length: 68\r\n\r\n--xyz\r\nContent-Disposition: form-data; "
        b"name=\"f\"\r\n\r\nhi\r\n--xyz--\r\n",
        b"POST /lab/http/form HTTP/1.1\r\nHost: www\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nuser=\r\n0\r\n\r\n",
        b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\nIf-None-Match: \"x\"\r\n"
        b"If-Modified-Since: Sat, 29 Oct 1994 19:43:31 GMT\r\nRange: bytes=0-10\r\n\r\n",
        b"GET /lab/http/protected/ HTTP/1.0\r\nAuthorization: Basic Ym9iOmJvYg==\r\n\r\n",
        b"DELETE /~alice/fuzz.txt HTTP/1.1\r\nHost: www\r\nAuthorization: Basic "
        b"YWxpY2U6YWxpY2U=\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: www\r\n\r\n"]),
}


def dns_queries() -> list[bytes]:
    from dnslib import EDNS0, DNSRecord

    queries = [DNSRecord.question(name, qtype).pack() for name, qtype in (
        ("www.lab.test", "A"), ("lab.test", "AXFR"), ("lab.test", "MX"), ("lab.test", "SOA"),
        ("nothere.lab.test", "AAAA"), ("lab.test", "ANY"), ("1.0.0.127.in-addr.arpa", "PTR"),
        ("_imap._tcp.lab.test", "SRV"), ("example.com", "A"))]
    edns = DNSRecord.question("www.lab.test", "TXT")
    edns.add_ar(EDNS0(udp_len=4096))
    return [*queries, edns.pack()]


def fuzz_lines(server, table: Table, rng: random.Random, budget: int, crlf: bool = True,
               greeting: bool = True) -> int:
    sent = 0
    states = list(table.values())
    while sent < budget:
        listener, prefix, inputs = rng.choice(states)
        batch = [mutate(rng, rng.choice(inputs)) for _ in range(PER_SESSION)]
        service = next(name for name, t in PROTOCOL_TABLES.items() if t is table)
        line_session(server.port(service, listener), prefix, batch, crlf, greeting)
        sent += len(batch)
    return sent


def fuzz_dns(server, rng: random.Random, budget: int) -> int:
    queries = dns_queries()
    sent = 0
    port = server.port("dns", "dns")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(budget // 2):
            udp.sendto(mutate(rng, rng.choice(queries))[:65000], (HOST, port))
            sent += 1
    while sent < budget:
        with socket.create_connection((HOST, server.port("dns", "dns-tcp")), timeout=10) as sock:
            payload = b""
            for _ in range(PER_SESSION):
                message = mutate(rng, rng.choice(queries))
                framed = struct.pack("!H", len(message) & 0xFFFF) + message
                payload += framed if rng.random() > 0.2 else mutate(rng, framed)
                sent += 1
            try:
                sock.sendall(payload)
            except OSError:
                pass
            drain(sock)
    return sent


def smb_header(command: int, message_id: int, session: int = 0, tree: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, command, 31, 0, 0, message_id,
                       0, tree, session, b"\0" * 16)


def netbios(packet: bytes) -> bytes:
    return struct.pack(">I", len(packet) & 0xFFFFFF) + packet


def smb_negotiate() -> bytes:
    dialects = (0x0202, 0x0210, 0x0300)
    body = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0, b"fuzz-client-guid", 0)
    return smb_header(0, 0) + body + struct.pack(f"<{len(dialects)}H", *dialects)


def smb_session_setup() -> bytes:
    from impacket import ntlm
    from impacket.spnego import SPNEGO_NegTokenInit, TypesMech

    blob = SPNEGO_NegTokenInit()
    blob["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
    blob["MechToken"] = ntlm.getNTLMSSPType1("", "", False).getData()
    token = blob.getData()
    return smb_header(1, 1) + struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 88, len(token), 0) + token


def recorded_smb_session(server) -> list[bytes]:
    """The packets impacket's client sends after login for a tree connect, a listing, a put
    and a get: the valid inputs of the logged-in state (session and tree ids patched in)."""
    from impacket.nmb import NetBIOSTCPSession

    packets: list[bytes] = []
    original = NetBIOSTCPSession.send_packet

    def record(self, data):
        packets.append(bytes(data))
        return original(self, data)

    connection = smb_client(server)
    NetBIOSTCPSession.send_packet = record
    try:
        connection.listPath("alice", "*")
        connection.putFile("alice", "fuzz.bin", io.BytesIO(b"fuzz" * 100).read)
        connection.getFile("alice", "fuzz.bin", lambda data: None)
        connection.deleteFile("alice", "fuzz.bin")
    finally:
        NetBIOSTCPSession.send_packet = original
        connection.close()
    return [p for p in packets if p[:4] == b"\xfeSMB"]


def fuzz_smb(server, rng: random.Random, budget: int) -> int:
    port = server.port("smb", "smb")
    logged_in = recorded_smb_session(server)
    sent = 0
    while sent < budget:
        state = rng.randrange(3)
        if state < 2:  # before NEGOTIATE, or between NEGOTIATE and SESSION_SETUP
            with socket.create_connection((HOST, port), timeout=10) as sock:
                try:
                    if state == 1:
                        sock.sendall(netbios(smb_negotiate()))
                    for _ in range(PER_SESSION):
                        template = smb_negotiate() if state == 0 else smb_session_setup()
                        sock.sendall(netbios(mutate(rng, template)))
                        sent += 1
                except OSError:
                    sent += PER_SESSION
                drain(sock)
            continue
        # Logged in: a real session's packets, ids patched to this session's, mutated.
        connection = smb_client(server)
        tree = connection.connectTree("alice")
        session = connection.getSMBServer()._Session["SessionID"]
        sock = connection.getSMBServer().get_socket()
        try:
            for _ in range(PER_SESSION):
                packet = bytearray(rng.choice(logged_in))
                struct.pack_into("<IQ", packet, 36, tree, session)
                sock.sendall(netbios(mutate(rng, bytes(packet))))
                sent += 1
        except OSError:
            pass
        drain(sock)
    return sent


PROTOCOL_TABLES: dict[str, Table] = {"smtp": SMTP, "pop3": POP3, "imap": IMAP, "ftp": FTP,
                                     "http": HTTP}


def line_campaign(table: Table) -> Callable[[object, random.Random, int], int]:
    return lambda server, rng, budget: fuzz_lines(
        server, table, rng, budget, crlf=table is not HTTP, greeting=table is not HTTP)


CAMPAIGNS: dict[str, Callable[[object, random.Random, int], int]] = {
    **{name: line_campaign(table) for name, table in PROTOCOL_TABLES.items()},
    "dns": fuzz_dns, "smb": fuzz_smb,
}


def seed_mail(server) -> None:
    """Mail in alice's INBOX for the states that read it: plain, MIME, an odd header."""
    send_mail(server, "alice@lab.test", b"Subject: hello\r\n\r\nhello world\r\n")
    send_mail(server, "alice@lab.test", b"Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: "
              b"multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n"
              b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ntwo\r\n--b--\r\n")
    send_mail(server, "alice@lab.test", b"From: " + b"(" * 200 + b"\r\nSubject: odd\r\n\r\nx\r\n")


@pytest.fixture(scope="module")
def fuzzed_lab(tmp_path_factory):
    from tests.conftest import LabFactory

    factory = LabFactory(tmp_path_factory.mktemp("fuzz"))
    server = factory.start(only=ALL)
    seed_mail(server)
    for name, campaign in CAMPAIGNS.items():  # a warm-up: what is allocated once is in the level
        campaign(server, random.Random(f"warm-{name}"), PER_SESSION * 2)
    yield server, rss_kib(server.process.pid)
    problems = factory.cleanup()
    assert not problems, problems


@pytest.mark.parametrize("protocol", list(CAMPAIGNS))
def test_fuzz_campaign(fuzzed_lab, protocol):
    server, rss_level = fuzzed_lab
    rng = random.Random(f"{SEED}-{protocol}")
    seen = len(server.stderr())  # one lab for all: judge only what this campaign caused
    sent = CAMPAIGNS[protocol](server, rng, FUZZ_INPUTS)
    rss = rss_kib(server.process.pid)
    print(f"FIGURES fuzz {protocol}: seed {SEED}, {sent} inputs; RSS level {rss_level} KiB, "
          f"now {rss} KiB ({rss - rss_level:+d})")
    assert server.process.poll() is None, "the lab died"
    errors = server.stderr()[seen:]
    assert "Traceback" not in errors and "Unhandled" not in errors, errors[-4000:]
    checked = server.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert rss - rss_level <= RSS_SLACK_KIB, f"RSS {rss - rss_level:+d} KiB after {protocol}"
