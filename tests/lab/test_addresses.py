"""Core: the lab's one text form of client addresses, and which sockets a bind address means."""

from __future__ import annotations

import pytest

from services import listeners
from services.journal import Journal
from services.listeners import Stack, addresses, client_address, effective_bind, endpoint, families


@pytest.mark.parametrize("seen, written", [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # an IPv4 client of a dual-stack socket
    ("::ffff:10.9.8.7", "10.9.8.7"),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("2001:db8::ffff:1.2.3.4", "2001:db8::ffff:1.2.3.4"),  # not v4-mapped
    ("::ffff:not-an-address", "::ffff:not-an-address"),
])
def test_v4_mapped_addresses_are_written_as_ipv4(seen, written):
    assert client_address(seen) == written


def test_endpoints_bracket_ipv6():
    assert endpoint("::", 53) == "[::]:53"
    assert endpoint("2001:db8::1", 80) == "[2001:db8::1]:80"
    assert endpoint("0.0.0.0", 25) == "0.0.0.0:25"


@pytest.fixture
def dual(monkeypatch):
    monkeypatch.setattr(listeners, "stack", lambda: Stack(True, True))


def test_the_wildcard_is_one_dual_socket_or_one_per_family(dual):
    assert addresses("::") == ["::"]
    assert addresses("::", one_socket=False) == ["::", "0.0.0.0"]
    assert addresses("0.0.0.0") == ["0.0.0.0"] and addresses("::1") == ["::1"]
    assert families(["::"]) == "v4+v6"
    assert families(["::", "0.0.0.0"]) == "v4+v6"
    assert families(["::1"]) == "v6" and families(["127.0.0.1", "10.0.0.1"]) == "v4"


def test_a_stack_without_dual_stack_sockets_gets_a_socket_per_family(monkeypatch):
    monkeypatch.setattr(listeners, "stack", lambda: Stack(True, False))
    assert addresses("::") == ["::", "0.0.0.0"]
    assert families(["::"]) == "v6"


def test_without_ipv6_the_wildcard_is_ipv4_with_a_line(monkeypatch):
    monkeypatch.setattr(listeners, "stack", lambda: Stack(False, False, "Address family "
                                                          "not supported by protocol"))
    bind, line = effective_bind("::")
    assert bind == "0.0.0.0"
    assert line == ("IPv6 is unavailable here (Address family not supported by protocol): "
                    "listening on IPv4 only")
    assert effective_bind("127.0.0.1") == ("127.0.0.1", "")


def test_the_journal_brackets_ipv6_peers(tmp_path):
    journal = Journal(tmp_path / "journal")
    for peer in ("::1:4242", "127.0.0.1:25", "[::1]:1", "-"):
        journal.open("smtp", peer)
    journal.flush_quietly()
    from services.journal import read

    assert [e["peer"] for e in read(tmp_path / "journal")] == [
        "[::1]:4242", "127.0.0.1:25", "[::1]:1", "-"]
