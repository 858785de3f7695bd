"""IPv6 on the DHCP interface without sockets: the DHCPv6 codec and the RA codec against
scapy (the oracle), the DHCPv6 core through whole exchanges (SOLICIT/ADVERTISE/REQUEST/
REPLY, rapid commit, RENEW, REBIND, RELEASE, DECLINE, CONFIRM, INFORMATION-REQUEST, the
client FQDN), a flood of SOLICITs that leaves nothing behind, leases in the store that
survive a restart, and fuzzed input that never raises."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dhcp import codec6, ra
from services.dhcp.codec6 import IA_NA, IAADDR, IANA, IAAddr, Message
from services.dhcp.core6 import POOL_FIRST, POOL_SIZE, DHCPv6Core, MemoryBackend6, Pool6, duid_ll

SERVER_DUID = duid_ll(bytes.fromhex("020000000001"))
POOL = Pool6(prefix="fd00:99::/64", server_duid=SERVER_DUID, dns=("fd00:99::1",),
             domain="lab.test", lease_time=600, server="fd00:99::1")
NOW = 1_000_000.0


def duid(n: int) -> bytes:
    return duid_ll(bytes([0x52, 0x54, 0, n >> 16 & 255, n >> 8 & 255, n & 255]))


def msg(kind: int, client: bytes | None, *options: tuple[int, bytes], server: bool = False,
        xid: int = 0x123456) -> bytes:
    head: codec6.Options = [(codec6.CLIENTID, client)] if client is not None else []
    if server:
        head.append((codec6.SERVERID, SERVER_DUID))
    return codec6.pack(Message(kind, xid, [*head, *options]))


def ia(iaid: int = 1, *addresses: str) -> tuple[int, bytes]:
    return IA_NA, IANA(iaid, 0, 0, [IAAddr(a, 0, 0) for a in addresses]).pack()


def fqdn(name: str) -> tuple[int, bytes]:
    return codec6.CLIENT_FQDN, codec6.fqdn(codec6.FQDN_S, name, partial=True)


def lease(core: DHCPv6Core, client: bytes, name: str = "", now: float = NOW) -> str:
    extra = [fqdn(name)] if name else []
    advertise = core.handle(msg(codec6.SOLICIT, client, ia(), *extra), now)
    assert advertise.reply is not None and advertise.reply.type == codec6.ADVERTISE, advertise.note
    offered = advertise.reply.iana()[0].addresses[0].address
    reply = core.handle(msg(codec6.REQUEST, client, ia(1, offered), *extra, server=True), now)
    assert reply.reply is not None and reply.reply.type == codec6.REPLY, reply.note
    bound = reply.reply.iana()[0]
    assert bound.addresses[0].address == offered and bound.addresses[0].valid == 600
    return offered


# -- the codecs against scapy ---------------------------------------------------------------

def test_codec_reads_what_scapy_writes():
    pytest.importorskip("scapy.all")
    from scapy.layers import dhcp6

    theirs = bytes(dhcp6.DHCP6_Solicit(trid=0xABCDEF) /
                   dhcp6.DHCP6OptClientId(duid=dhcp6.DUID_LL(lladdr="52:54:00:00:00:07")) /
                   dhcp6.DHCP6OptElapsedTime() / dhcp6.DHCP6OptRapidCommit() /
                   dhcp6.DHCP6OptIA_NA(iaid=42, T1=0, T2=0, ianaopts=[
                       dhcp6.DHCP6OptIAAddress(addr="fd00:99::1234", preflft=10, validlft=20)]) /
                   dhcp6.DHCP6OptClientFQDN(flags=1, fqdn="pc7.lab.test.") /
                   dhcp6.DHCP6OptOptReq(reqopts=[23, 24]))
    message = codec6.parse(theirs)
    assert (message.type, message.xid) == (codec6.SOLICIT, 0xABCDEF)
    assert message.client_duid == duid(7)
    assert message.get(codec6.RAPID_COMMIT) == b""
    (only,) = message.iana()
    assert (only.iaid, only.addresses[0].address, only.addresses[0].valid) == (42, "fd00:99::1234", 20)
    assert message.get(codec6.CLIENT_FQDN) == b"\x01\x03pc7\x03lab\x04test\x00"


def test_scapy_reads_what_the_core_writes():
    pytest.importorskip("scapy.all")
    from scapy.layers import dhcp6

    core = DHCPv6Core(POOL, MemoryBackend6())
    result = core.handle(msg(codec6.SOLICIT, duid(1), ia(9), fqdn("pc1"),
                             (codec6.RAPID_COMMIT, b"")), NOW)
    theirs = dhcp6.DHCP6_Reply(result.data)
    assert theirs.trid == 0x123456 and theirs.msgtype == codec6.REPLY
    assert theirs[dhcp6.DHCP6OptServerId].duid.lladdr == "02:00:00:00:00:01"
    assert theirs[dhcp6.DHCP6OptClientId].duid.lladdr == "52:54:00:00:00:01"
    assert theirs.haslayer(dhcp6.DHCP6OptRapidCommit)
    iana = theirs[dhcp6.DHCP6OptIA_NA]
    assert iana.iaid == 9 and iana.T1 == 300 and iana.T2 == 480
    address = iana.ianaopts[0]
    assert ipaddress.IPv6Address(address.addr) in ipaddress.IPv6Network(POOL.prefix)
    assert address.validlft == 600
    assert theirs[dhcp6.DHCP6OptDNSServers].dnsservers == ["fd00:99::1"]
    assert theirs[dhcp6.DHCP6OptDNSDomains].dnsdomains == ["lab.test."]
    assert theirs[dhcp6.DHCP6OptClientFQDN].fqdn == b"pc1.lab.test."
    assert not theirs.haslayer("Raw")  # scapy read every byte as options


def test_router_advertisement_as_scapy_reads_it():
    pytest.importorskip("scapy.all")
    from scapy.layers import inet6

    ours = ra.Advertisement(prefix="fd00:99::/64", managed=True, other=False,
                            mac=bytes.fromhex("020000000001"), dns=("fd00:99::1",),
                            domains=("lab.test", "example.test"), router_lifetime=0)
    theirs = inet6.ICMPv6ND_RA(ra.pack(ours))
    assert (theirs.M, theirs.O, theirs.routerlifetime, theirs.chlim) == (1, 0, 0, 64)
    prefix = theirs[inet6.ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fd00:99::", 64, 1, 1)
    assert theirs[inet6.ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"
    assert theirs[inet6.ICMPv6NDOptRDNSS].dns == ["fd00:99::1"]
    assert theirs[inet6.ICMPv6NDOptDNSSL].searchlist == ["lab.test.", "example.test."]
    assert not theirs.haslayer("Raw")
    # and ours reads it back
    back = ra.parse(ra.pack(ours))
    assert (back.prefix, back.managed, back.other, back.dns, back.domains, back.mac) == \
        (ours.prefix, True, False, ours.dns, ours.domains, ours.mac)


def test_solicitations_scapy_writes_are_recognised():
    pytest.importorskip("scapy.all")
    from scapy.layers import inet6

    assert ra.is_solicitation(bytes(inet6.ICMPv6ND_RS() / inet6.ICMPv6NDOptSrcLLAddr(
        lladdr="52:54:00:00:00:01")))
    assert ra.is_solicitation(bytes(inet6.ICMPv6ND_RS()))
    assert not ra.is_solicitation(bytes(inet6.ICMPv6ND_RS(code=1)))
    assert not ra.is_solicitation(bytes(inet6.ICMPv6ND_RS()) + b"\x01\x00")  # option length 0


def test_schedule_answers_solicitations_within_limits():
    schedule = ra.Schedule(0.0, random.Random(1))
    assert schedule.due(0.0)
    schedule.multicast_sent(0.0)
    assert 0 < schedule.next_at <= ra.INITIAL_INTERVAL
    assert schedule.solicited("fe80::1", 1.0) == "fe80::1"
    assert schedule.solicited("::", 1.0) is None  # a multicast one went 1 s ago
    assert schedule.next_at <= ra.MIN_DELAY_BETWEEN_RAS
    assert schedule.solicited("::", 5.0) == "ff02::1"
    answers = [schedule.solicited("fe80::2", 10.5) for _ in range(ra.UNICAST_PER_SECOND + 5)]
    assert answers.count(None) == 5  # a flood of solicitations: only so many answers a second
    for n in range(ra.INITIAL_ADVERTISEMENTS + 3):
        schedule.multicast_sent(100.0 * n)
    assert ra.MIN_INTERVAL <= schedule.next_at - 100.0 * (n) <= ra.MAX_INTERVAL


# -- the core -------------------------------------------------------------------------------

def test_solicit_advertise_request_reply_and_the_name():
    backend = MemoryBackend6()
    core = DHCPv6Core(POOL, backend)
    ip = lease(core, duid(1), "pc1")
    assert backend.records[duid(1).hex(), 1] == ("pc1.lab.test", 60)
    assert backend.rows[duid(1).hex(), 1].ip == ip
    assert core.in_pool(ip)
    # the reply names the client back: S set (we update AAAA and PTR)
    again = core.handle(msg(codec6.REQUEST, duid(1), ia(1, ip), fqdn("pc1"), server=True), NOW)
    assert again.reply is not None
    back = again.reply.get(codec6.CLIENT_FQDN)
    assert back == codec6.fqdn(codec6.FQDN_S, "pc1.lab.test")
    # another client asking for the same name gets an address, not the name
    other = lease(core, duid(2), "pc1")
    assert other != ip and (duid(2).hex(), 1) not in backend.records


def test_advertise_reserves_nothing_and_request_gets_the_advertised_address():
    core = DHCPv6Core(POOL, MemoryBackend6())
    first = core.handle(msg(codec6.SOLICIT, duid(1), ia()), NOW).reply
    second = core.handle(msg(codec6.SOLICIT, duid(1), ia()), NOW + 5).reply
    assert first is not None and second is not None
    assert first.iana()[0].addresses == second.iana()[0].addresses  # derived, not stored
    assert core.leases == {} and core.holder == {}


def test_a_flood_of_solicits_leaves_no_state():
    backend = MemoryBackend6()
    core = DHCPv6Core(POOL, backend)
    rng = random.Random(7)
    for _ in range(3000):
        made_up = b"\x00\x04" + rng.randbytes(16)  # DUID-UUID, a new one each time
        core.handle(msg(codec6.SOLICIT, made_up, ia(rng.getrandbits(32))), NOW)
    assert core.leases == {} and backend.rows == {}
    assert lease(core, duid(1))  # and a real client still gets an address


def test_rapid_commit_binds_at_once():
    backend = MemoryBackend6()
    core = DHCPv6Core(POOL, backend)
    result = core.handle(msg(codec6.SOLICIT, duid(3), ia(), (codec6.RAPID_COMMIT, b"")), NOW)
    assert result.reply is not None and result.reply.type == codec6.REPLY
    assert result.reply.get(codec6.RAPID_COMMIT) == b""
    assert backend.rows[duid(3).hex(), 1].ip == result.reply.iana()[0].addresses[0].address


def test_renew_rebind_release_and_no_binding():
    backend = MemoryBackend6()
    core = DHCPv6Core(POOL, backend)
    ip = lease(core, duid(1), "pc1")
    renewed = core.handle(msg(codec6.RENEW, duid(1), ia(1, ip), server=True), NOW + 300).reply
    assert renewed is not None and renewed.iana()[0].addresses[0].address == ip
    assert backend.rows[duid(1).hex(), 1].expires == NOW + 900
    assert backend.records[duid(1).hex(), 1] == ("pc1.lab.test", 60)  # the name stays
    rebound = core.handle(msg(codec6.REBIND, duid(1), ia(1, ip)), NOW + 500).reply
    assert rebound is not None and rebound.iana()[0].addresses[0].valid == 600
    # an IA this server never bound: NoBinding, and its address may not be used
    stray = core.handle(msg(codec6.RENEW, duid(2), ia(5, "fd00:99::1fff"), server=True),
                        NOW).reply
    assert stray is not None
    (answer,) = stray.iana()
    assert [(a.address, a.valid) for a in answer.addresses] == [("fd00:99::1fff", 0)]
    nothing = core.handle(msg(codec6.RENEW, duid(2), ia(6), server=True), NOW).reply
    assert nothing is not None and nothing.iana()[0].status == (codec6.NO_BINDING, "no binding for this IA")
    released = core.handle(msg(codec6.RELEASE, duid(1), ia(1, ip), server=True), NOW + 600)
    assert released.reply is not None and "released" in released.note
    assert codec6.parse_status(released.reply.get(codec6.STATUS_CODE) or b"")[0] == codec6.SUCCESS
    assert (duid(1).hex(), 1) not in backend.records
    # released, the address is free for another client, and the first one's comes back
    assert lease(core, duid(1), now=NOW + 601) == ip


def test_decline_sets_the_address_aside():
    backend = MemoryBackend6()
    core = DHCPv6Core(POOL, backend)
    ip = lease(core, duid(1))
    declined = core.handle(msg(codec6.DECLINE, duid(1), ia(1, ip), server=True), NOW)
    assert declined.reply is not None and "declined" in declined.note
    assert backend.rows[f"declined:{ip}", 0].state == "declined"
    assert lease(core, duid(1), now=NOW + 1) != ip


def test_confirm_information_request_and_who_must_name_whom():
    core = DHCPv6Core(POOL, MemoryBackend6())
    ok = core.handle(msg(codec6.CONFIRM, duid(1), ia(1, "fd00:99::1234")), NOW).reply
    assert ok is not None and codec6.parse_status(ok.get(codec6.STATUS_CODE) or b"")[0] == codec6.SUCCESS
    moved = core.handle(msg(codec6.CONFIRM, duid(1), ia(1, "fd00:98::1234")), NOW).reply
    assert moved is not None
    assert codec6.parse_status(moved.get(codec6.STATUS_CODE) or b"")[0] == codec6.NOT_ON_LINK
    info = core.handle(msg(codec6.INFORMATION_REQUEST, duid(1)), NOW).reply
    assert info is not None and info.get(codec6.DNS_SERVERS) == codec6.addresses("fd00:99::1")
    assert info.get(codec6.DOMAIN_LIST) == b"\x03lab\x04test\x00" and info.iana() == []
    assert core.handle(msg(codec6.INFORMATION_REQUEST, None), NOW).reply is not None
    # dropped: REQUEST without our server id, SOLICIT with one, another server's, no client id
    assert core.handle(msg(codec6.REQUEST, duid(1), ia()), NOW).reply is None
    assert core.handle(msg(codec6.SOLICIT, duid(1), ia(), server=True), NOW).reply is None
    other = codec6.pack(Message(codec6.REQUEST, 1, [(codec6.CLIENTID, duid(1)),
                                                    (codec6.SERVERID, duid(9)), ia()]))
    assert "another server" in core.handle(other, NOW).note
    assert core.handle(msg(codec6.SOLICIT, None, ia()), NOW).reply is None
    assert "relay" in core.handle(b"\x0c" + bytes(33), NOW).note


def test_the_pool_fills_and_ended_leases_come_back():
    small = Pool6(prefix="fd00:99::/64", server_duid=SERVER_DUID, dns=(), domain="lab.test",
                  lease_time=600)
    core = DHCPv6Core(small, MemoryBackend6())
    core.size = 4  # a pool of four addresses, so that it fills
    ips = {lease(core, duid(n)) for n in range(4)}
    assert len(ips) == 4
    full = core.handle(msg(codec6.SOLICIT, duid(9), ia()), NOW).reply
    assert full is not None and full.iana()[0].status == (codec6.NO_ADDRS_AVAIL, "no free address")
    assert lease(core, duid(9), now=NOW + 601) in ips  # leases ended: an address again
    assert POOL_SIZE == 0x1000 and POOL_FIRST == 0x1000


def test_leases_and_names_survive_a_restart_in_the_store(tmp_path):
    from services.dhcp.server6 import StoreBackend6
    from services.store import Store

    store = Store(tmp_path / "data")
    core = DHCPv6Core(POOL, StoreBackend6(store.net))
    now = time.time()
    ips = {n: lease(core, duid(n), f"pc{n}", now=now) for n in range(1, 4)}
    assert len(set(ips.values())) == 3
    store.close()
    store = Store(tmp_path / "data")
    again = DHCPv6Core(POOL, StoreBackend6(store.net))
    records = {(r.name, r.type, r.value) for r in store.net.live_records()}
    assert records == {(f"pc{n}.lab.test", "AAAA", ips[n]) for n in ips}
    renewed = again.handle(msg(codec6.RENEW, duid(2), ia(1, ips[2]), server=True), time.time())
    assert renewed.reply is not None and renewed.reply.iana()[0].addresses[0].address == ips[2]
    assert lease(again, duid(9), now=time.time()) not in ips.values()
    store.close()


# -- bad input ------------------------------------------------------------------------------

@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_fuzz_never_raises(data):
    DHCPv6Core(POOL, MemoryBackend6()).handle(data, NOW)
    try:
        ra.parse(data)
    except ra.Malformed:
        pass
    ra.is_solicitation(data)


VALID = msg(codec6.REQUEST, duid(1), ia(1, "fd00:99::1001"), fqdn("pc1"),
            (codec6.ORO, b"\x00\x17\x00\x18"), server=True)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8))
def test_fuzz_mutated_requests(changes):
    data = bytearray(VALID)
    for position, value in changes:
        data[position] = value
    result = DHCPv6Core(POOL, MemoryBackend6()).handle(bytes(data), NOW)
    if result.reply is not None:
        assert codec6.parse(result.data).type in (codec6.REPLY, codec6.ADVERTISE)


def test_nested_options_that_run_past_their_parent_are_refused():
    bad_ia = codec6.pack_options([(IA_NA, b"\x00\x00\x00\x01" + bytes(8) +
                                   codec6.pack_options([(IAADDR, b"\x00" * 10)]))])
    with pytest.raises(codec6.Malformed):
        codec6.parse(bytes([codec6.SOLICIT, 0, 0, 1]) + bad_ia)
