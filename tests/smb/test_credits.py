"""Credits (MS-SMB2 3.3.1.2): the sequence window as a sans-IO core (services.smb.credits,
services.smb.compound), then raw clients: a client asking for huge credits gets at most
512 outstanding, MessageIds outside the window (replayed, far ahead, a compound chain
longer than the credits) end that connection, and the server serves the next one."""

from __future__ import annotations

import struct

import pytest

from services.smb import compound, credits
from tests.ftputil import journal
from tests.smb.test_clients import impacket_login
from tests.smb.test_wire import _read, exchange, raw_connection, smb2_negotiate, status_of

# --- the core


def test_window_spends_each_id_once_and_grants_up_to_the_cap():
    window = credits.Window()
    assert window.consume(0, 1) and not window.consume(0, 1)  # NEGOTIATE's id, once
    grant = window.offer(65535)
    assert grant == credits.MAX_CREDITS
    window.granted(grant)
    assert window.available == credits.MAX_CREDITS
    assert window.offer(65535) == 0  # full: nothing more until some are spent
    assert window.consume(5, 4) and window.low == 1  # out of order: 1..4 still usable
    assert not window.consume(7, 1) and window.consume(1, 4) and window.low == 9
    assert not window.consume(9, credits.MAX_CREDITS)  # one past the window
    assert window.offer(1) == 1 and window.offer(3, promised=7) == 1  # room for 8 more
    assert window.offer(3, promised=8) == 0


def test_the_first_negotiate_may_start_elsewhere_but_only_first():
    window = credits.Window()
    window.begin_at(1)
    assert window.consume(1, 1) and window.low == 2
    window.begin_at(7)  # too late: ids were spent
    assert window.low == 2


def test_a_client_that_never_uses_an_id_stops_being_granted():
    window = credits.Window()
    window.consume(0, 1)
    window.granted(window.offer(10))
    for message_id in range(2, 5 * credits.MAX_CREDITS):  # id 1 never used
        if not window.consume(message_id, 1):
            break
        window.granted(window.offer(1))
    assert window.high - window.low <= credits.MAX_SPREAD and len(window.used) < credits.MAX_SPREAD


def test_needed_credits_and_compound_spans():
    assert [credits.needed(n) for n in (0, 1, 65536, 65537, 8 << 20)] == [1, 1, 1, 2, 128]
    echo = bytearray(_header(0, 1) + struct.pack("<HH", 4, 0))
    chain = compound.join([bytes(echo)] * 3)
    assert compound.split(chain) == [(0, 72), (72, 144), (144, 212)]
    for bad_next in (3, 8, 4096):  # not aligned, shorter than a header, past the end
        broken = bytearray(chain)
        struct.pack_into("<I", broken, 20, bad_next)
        with pytest.raises(compound.Malformed):
            compound.split(broken)


# --- raw clients

def _header(message_id: int, credit_request: int, session_id: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, 0x000D, credit_request, 0, 0,
                       message_id, 0xFEFF, 0, session_id, b"\0" * 16)


def echoes(first_id: int, count: int, credit_request: int = 1, session_id: int = 0) -> bytes:
    """`count` ECHO requests from `first_id` on, in one compound chain."""
    return compound.join([_header(first_id + i, credit_request, session_id) + struct.pack("<HH", 4, 0)
                          for i in range(count)])


def granted(answer: bytes) -> list[int]:
    return [struct.unpack_from("<H", answer, start + 14)[0] for start, _ in compound.split(answer)]


def negotiated(port: int, credit_request: int):
    sock = raw_connection(port)
    negotiate = bytearray(smb2_negotiate([0x0202, 0x0210]))
    struct.pack_into("<H", negotiate, 14, credit_request)
    answer = exchange(sock, bytes(negotiate))
    assert status_of(answer) == 0
    return sock, granted(answer)[0]


def test_huge_credit_requests_get_at_most_the_cap(lab):
    server = lab.start(only="smb")
    sock, first = negotiated(server.port("smb", "smb"), 65535)
    assert first == credits.MAX_CREDITS
    answer = exchange(sock, echoes(1, 1, 65535))
    assert granted(answer) == [1]  # one spent, one more: the window stays at the cap
    sock.close()
    # logged in (impacket's client, 2.1: in clear, unsigned), chains asking 65535 a message
    connection = impacket_login(server, preferredDialect=0x0210)
    smb3 = connection.getSMBServer()
    sock, session_id = smb3.get_socket(), smb3._Session["SessionID"]
    next_id = smb3._Connection["SequenceWindow"]  # its one credit left
    assert granted(exchange(sock, echoes(next_id, 1, 65535, session_id))) == [credits.MAX_CREDITS]
    answer = exchange(sock, echoes(next_id + 1, 100, 65535, session_id))
    assert granted(answer) == [1] * 100 and status_of(answer) == 0  # each spent one, got one
    # MAX_CREDITS outstanding: a chain one longer is outside the window
    message = echoes(next_id + 101, credits.MAX_CREDITS + 1, 1, session_id)
    sock.sendall(len(message).to_bytes(4, "big") + message)
    assert _read(sock, 1) == b""
    sock.close()


@pytest.mark.parametrize("case", ["replayed id", "id far ahead", "chain beyond the credits"])
def test_ids_outside_the_window_end_that_connection_only(lab, case):
    server = lab.start(only="smb")
    sock, first = negotiated(server.port("smb", "smb"), 8)
    assert first == 8
    message = {"replayed id": echoes(0, 1), "id far ahead": echoes(10 ** 9, 1),
               "chain beyond the credits": echoes(1, 9)}[case]
    sock.sendall(len(message).to_bytes(4, "big") + message)
    assert _read(sock, 1) == b""  # closed, unanswered
    sock.close()
    impacket_login(server).close()  # the next client is served
    server.stop()
    closes = [e["text"] for e in journal(server.data, "smb") if e["kind"] == "close"]
    assert any("outside the credit window" in text for text in closes), closes
    assert "Traceback" not in server.stderr()
