"""The store's DHCPv6 leases (leases6) next to DHCPv4's: they survive reopening, never
share an address, end (by time, RELEASE, DECLINE), and their names are AAAA records the
DNS answers, with the ip6.arpa PTR, only while the lease lasts."""

from __future__ import annotations

import time

import dns.reversename
import pytest

from services.store import Store

DUID = "00030001525400000001"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def names(store: Store) -> set[tuple[str, str, str]]:
    return {(r.name, r.type, r.value) for r in store.net.live_records()}


def test_a_lease6_and_its_aaaa_survive_reopening(tmp_path):
    store = Store(tmp_path / "data")
    until = time.time() + 600
    store.net.bind_lease6(DUID, 1, "fd00:99::1001", "pc1", until, ("pc1.lab.test", 60))
    store.net.bind_lease("52:54:00:00:00:01", "10.0.0.100", "pc1", "", until, ("pc1.lab.test", 60))
    store.close()
    store = Store(tmp_path / "data")
    try:
        (lease,) = store.net.leases6()
        assert (lease.duid, lease.iaid, lease.ip, lease.hostname) == (DUID, 1, "fd00:99::1001", "pc1")
        assert [v4.ip for v4 in store.net.leases()] == ["10.0.0.100"]  # the tables stay apart
        assert names(store) == {("pc1.lab.test", "AAAA", "fd00:99::1001"),
                                ("pc1.lab.test", "A", "10.0.0.100")}
        assert store.net.next_expiry() == pytest.approx(until)
    finally:
        store.close()


def test_an_address_is_never_in_two_live_leases(store):
    now = time.time()
    store.net.bind_lease6(DUID, 1, "fd00:99::1001", "", now + 600)
    with pytest.raises(ValueError, match="leased to"):
        store.net.bind_lease6("other", 1, "fd00:99::1001", "", now + 600)
    # one client's second IA is another lease; its first IA may move
    store.net.bind_lease6(DUID, 2, "fd00:99::1002", "", now + 600)
    store.net.bind_lease6(DUID, 1, "fd00:99::1003", "", now + 600)
    assert sorted(lease.ip for lease in store.net.leases6()) == ["fd00:99::1002", "fd00:99::1003"]


def test_ended_leases6_lose_their_names(store):
    now = time.time()
    store.net.bind_lease6(DUID, 1, "fd00:99::1001", "old", now - 1, ("old.lab.test", 60))
    store.net.bind_lease6("released", 1, "fd00:99::1002", "gone", now + 600, ("gone.lab.test", 60))
    store.net.bind_lease6("kept", 1, "fd00:99::1003", "kept", now + 600, ("kept.lab.test", 60))
    store.net.end_lease6("released", 1)
    assert names(store) == {("kept.lab.test", "AAAA", "fd00:99::1003")}
    assert store.net.sweep() == 1  # the expired one's row (the released one's went at once)
    # an ended lease's address goes to another client, its old name with it
    store.net.bind_lease6("new", 1, "fd00:99::1001", "", now + 600)
    assert {lease.ip for lease in store.net.leases6()} == {"fd00:99::1001", "fd00:99::1003"}
    store.net.decline6("fd00:99::1003", now + 600)
    assert names(store) == set()
    assert [lease.state for lease in store.net.leases6() if lease.ip == "fd00:99::1003"] == ["declined"]


def test_a_renewal_that_keeps_the_name_says_nothing_to_dns(store):
    heard: list[set[str]] = []
    now = time.time()
    store.net.bind_lease6(DUID, 1, "fd00:99::1001", "pc1", now + 600, ("pc1.lab.test", 60))
    store.poll()  # the first binding's topics: heard before the subscription
    unsubscribe = store.subscribe("dns", heard.append)
    try:
        store.net.bind_lease6(DUID, 1, "fd00:99::1001", "pc1", now + 900, ("pc1.lab.test", 60))
        store.poll()
        assert heard == []
        store.net.bind_lease6(DUID, 1, "fd00:99::1001", "pc2", now + 900, ("pc2.lab.test", 60))
        store.poll()
        assert heard and "dns" in heard[-1]
    finally:
        unsubscribe()


def test_the_dns_answers_aaaa_and_ip6_arpa_ptr_from_a_lease(store):
    from services.dns.zone import DynamicRecord
    from tests.dns.test_core import ask, engine, rrset

    store.net.bind_lease6(DUID, 1, "fd00:99::1001", "pc1", time.time() + 600, ("pc1.lab.test", 60))
    live = [DynamicRecord(r.name, r.type, r.value, r.ttl) for r in store.net.live_records()]
    eng = engine(live)  # zone.build on the store's live records, as the DNS service does
    assert rrset(ask(eng, "pc1.lab.test", "AAAA")) == {"pc1.lab.test. AAAA fd00:99::1001"}
    reverse = dns.reversename.from_address("fd00:99::1001").to_text()
    assert rrset(ask(eng, reverse, "PTR")) == {f"{reverse} PTR pc1.lab.test."}
