"""DHCP without sockets: the codec against scapy (the oracle), and the server core through
whole exchanges: DORA, renew, rebind, INIT-REBOOT, NAK, DECLINE, RELEASE, INFORM, relays,
reservations, host names, a thousand clients, and leases that survive a restart."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dhcp import codec
from services.dhcp.core import DHCPCore, MemoryBackend, Pool

POOL = Pool(server="10.0.0.1", first="10.0.0.100", last="10.0.0.199", netmask="255.255.0.0",
            router="10.0.0.1", dns=("10.0.0.1",), domain="lab.test", lease_time=600)
BIG = Pool(server="10.0.0.1", first="10.0.1.0", last="10.0.4.255", netmask="255.255.0.0",
           router="10.0.0.1", dns=("10.0.0.1",), domain="lab.test", lease_time=600)
NOW = 1_000_000.0


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, n >> 16 & 255, n >> 8 & 255, n & 255])


def message(kind: int, chaddr: bytes, xid: int = 7, **fields) -> bytes:
    options = {codec.MESSAGE_TYPE: bytes([kind])}
    options.update(fields.pop("options", {}))
    return codec.pack(codec.Packet(op=1, xid=xid, chaddr=chaddr, options=options, **fields))


def dora(core: DHCPCore, chaddr: bytes, now: float = NOW, hostname: bytes = b"",
         requested: str | None = None) -> str:
    extra = {codec.HOSTNAME: hostname} if hostname else {}
    if requested:
        extra[codec.REQUESTED_IP] = codec.ip_option(requested)
    offer = core.handle(message(codec.DISCOVER, chaddr, options=extra), ("0.0.0.0", 68), now)
    assert len(offer.replies) == 1, offer.note
    ip = offer.replies[0].packet.yiaddr
    ack = core.handle(message(codec.REQUEST, chaddr, options={
        **extra, codec.REQUESTED_IP: codec.ip_option(ip), codec.SERVER_ID: codec.ip_option(POOL.server)}),
        ("0.0.0.0", 68), now)
    assert ack.replies[0].packet.type == codec.ACK, ack.note
    return ip


def test_codec_agrees_with_scapy():
    pytest.importorskip("scapy.all")
    from scapy.layers.dhcp import BOOTP, DHCP

    theirs = bytes(BOOTP(op=1, xid=0x1234, chaddr=mac(1) + b"\x00" * 10, flags=0x8000) / DHCP(options=[
        ("message-type", "request"), ("requested_addr", "10.0.0.150"), ("hostname", b"pc1"),
        ("param_req_list", [1, 3, 6, 15, 51]), ("client_id", b"\x01" + mac(1)), "end"]))
    packet = codec.parse(theirs)
    assert (packet.type, packet.xid, packet.mac, packet.flags) == (codec.REQUEST, 0x1234, "52:54:00:00:00:01", 0x8000)
    assert packet.address(codec.REQUESTED_IP) == "10.0.0.150"
    assert packet.options[codec.HOSTNAME] == b"pc1"
    reply = codec.pack(codec.Packet(op=2, xid=9, yiaddr="10.0.0.150", chaddr=mac(1), options={
        codec.MESSAGE_TYPE: bytes([codec.OFFER]), codec.SERVER_ID: codec.ip_option("10.0.0.1"),
        codec.LEASE_TIME: codec.u32(600), codec.DOMAIN_NAME: b"lab.test"}))
    ours = BOOTP(reply)
    assert ours.yiaddr == "10.0.0.150" and ours.xid == 9 and len(reply) >= 300
    opts = dict(o for o in ours[DHCP].options if isinstance(o, tuple))
    assert opts["message-type"] == 2 and opts["server_id"] == "10.0.0.1"
    assert opts["lease_time"] == 600 and opts["domain"] == b"lab.test"


def test_dora_options_and_broadcast():
    core = DHCPCore(POOL, MemoryBackend())
    order = bytes([15, 6, 3, 1, 51, 58, 59, 28, 12])
    result = core.handle(message(codec.DISCOVER, mac(1), options={codec.PARAMETER_LIST: order}),
                         ("0.0.0.0", 68), NOW)
    offer = result.replies[0]
    assert offer.to == ("255.255.255.255", 68)  # always broadcast to a client without address
    assert offer.packet.type == codec.OFFER and offer.packet.yiaddr == "10.0.0.100"
    codes = list(offer.packet.options)
    assert codes[:2] == [codec.MESSAGE_TYPE, codec.SERVER_ID]
    assert codes[2:10] == [15, 6, 3, 1, 51, 58, 59, 28]  # the client's order
    opts = offer.packet.options
    assert opts[1] == codec.ip_option("255.255.0.0") and opts[3] == codec.ip_option("10.0.0.1")
    assert opts[6] == codec.ip_option("10.0.0.1") and opts[15] == b"lab.test"
    assert [int.from_bytes(opts[c], "big") for c in (51, 58, 59)] == [600, 300, 525]
    assert opts[28] == codec.ip_option("10.0.255.255")
    assert dora(core, mac(1)) == "10.0.0.100"
    assert core.leases["52:54:00:00:00:01"].expires == NOW + 600


def test_request_for_another_server_withdraws_the_offer():
    core = DHCPCore(POOL, MemoryBackend())
    core.handle(message(codec.DISCOVER, mac(1)), ("0.0.0.0", 68), NOW)
    result = core.handle(message(codec.REQUEST, mac(1), options={
        codec.REQUESTED_IP: codec.ip_option("10.0.0.100"), codec.SERVER_ID: codec.ip_option("10.0.0.2")}),
        ("0.0.0.0", 68), NOW)
    assert result.replies == [] and not core.offers
    assert core.free_for("10.0.0.100", "52:54:00:00:00:02", NOW)  # free again


def test_renew_rebind_and_init_reboot():
    core = DHCPCore(POOL, MemoryBackend())
    ip = dora(core, mac(1))
    renew = core.handle(message(codec.REQUEST, mac(1), ciaddr=ip), (ip, 68), NOW + 300)
    assert renew.replies[0].packet.type == codec.ACK and renew.replies[0].to == (ip, 68)
    assert core.leases["52:54:00:00:00:01"].expires == NOW + 900
    rebind = core.handle(message(codec.REQUEST, mac(1), ciaddr=ip), ("0.0.0.0", 68), NOW + 600)
    assert rebind.replies[0].packet.type == codec.ACK
    reboot = core.handle(message(codec.REQUEST, mac(1), options={codec.REQUESTED_IP: codec.ip_option(ip)}),
                         ("0.0.0.0", 68), NOW + 700)
    assert reboot.replies[0].packet.yiaddr == ip
    wrong = core.handle(message(codec.REQUEST, mac(1), options={codec.REQUESTED_IP: codec.ip_option("192.168.1.5")}),
                        ("0.0.0.0", 68), NOW + 700)
    assert wrong.replies[0].packet.type == codec.NAK and wrong.replies[0].to == ("255.255.255.255", 68)
    # a client renewing a lease we have no record of (a wiped store): free in the range,
    # it keeps it (as dnsmasq does); held by another or outside the range, we stay silent
    stranger = core.handle(message(codec.REQUEST, mac(9), ciaddr="10.0.0.150"), ("10.0.0.150", 68), NOW)
    assert stranger.replies[0].packet.type == codec.ACK
    thief = core.handle(message(codec.REQUEST, mac(8), ciaddr=ip), (ip, 68), NOW + 700)
    assert thief.replies == []
    outside = core.handle(message(codec.REQUEST, mac(8), ciaddr="192.168.1.5"), ("192.168.1.5", 68), NOW)
    assert outside.replies == []
    taken = core.handle(message(codec.REQUEST, mac(2), options={codec.REQUESTED_IP: codec.ip_option(ip)}),
                        ("0.0.0.0", 68), NOW + 700)
    assert taken.replies[0].packet.type == codec.NAK


def test_decline_release_and_expiry():
    backend = MemoryBackend()
    core = DHCPCore(POOL, backend)
    ip = dora(core, mac(1), hostname=b"pc1")
    assert backend.records["52:54:00:00:00:01"] == ("pc1.lab.test", 60)
    declined = core.handle(message(codec.DECLINE, mac(1), options={codec.REQUESTED_IP: codec.ip_option(ip)}),
                           ("0.0.0.0", 68), NOW)
    assert declined.replies == [] and "declined" in declined.note
    assert dora(core, mac(1)) != ip and dora(core, mac(2)) not in (ip,)
    ip3 = dora(core, mac(3), hostname=b"pc3")
    released = core.handle(message(codec.RELEASE, mac(3), ciaddr=ip3), (ip3, 68), NOW + 10)
    assert released.replies == [] and "52:54:00:00:00:03" not in backend.records
    assert dora(core, mac(3), now=NOW + 20) == ip3  # the same client gets it back
    assert core.expired(NOW + 2000) == ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"]


def test_inform_and_relay():
    core = DHCPCore(POOL, MemoryBackend())
    tool = core.handle(message(codec.INFORM, mac(1), ciaddr="10.0.0.50"), ("10.0.0.50", 40000), NOW)
    ack = tool.replies[0]
    assert ack.packet.type == codec.ACK and ack.packet.yiaddr == "0.0.0.0"
    assert ack.to == ("10.0.0.50", 40000) and codec.LEASE_TIME not in ack.packet.options
    client = core.handle(message(codec.INFORM, mac(1), ciaddr="10.0.0.50"), ("10.0.0.50", 68), NOW)
    assert client.replies[0].to == ("10.0.0.50", 68)
    relayed = core.handle(message(codec.DISCOVER, mac(2), giaddr="10.0.9.1", hops=1), ("10.0.9.1", 67), NOW)
    assert relayed.replies[0].to == ("10.0.9.1", 67) and relayed.replies[0].packet.giaddr == "10.0.9.1"
    elsewhere = core.handle(message(codec.DISCOVER, mac(3), giaddr="192.168.5.1"), ("192.168.5.1", 67), NOW)
    assert elsewhere.replies == [] and "no range" in elsewhere.note


def test_reservations_and_names():
    pool = Pool(**{**vars(POOL), "reservations": {"52:54:00:00:00:05": "10.0.0.150"}})
    backend = MemoryBackend()
    core = DHCPCore(pool, backend, static_names=["ns", "www"])
    assert dora(core, mac(5)) == "10.0.0.150"
    assert dora(core, mac(6), requested="10.0.0.150") != "10.0.0.150"
    dora(core, mac(7), hostname=b"WWW")  # a lab host's name: not given to a client
    assert "52:54:00:00:00:07" not in backend.records
    dora(core, mac(8), hostname=b"Laptop.home")
    dora(core, mac(9), hostname=b"laptop")  # first come keeps the name
    assert backend.records["52:54:00:00:00:08"][0] == "laptop.lab.test"
    assert "52:54:00:00:00:09" not in backend.records
    dora(core, mac(11), now=NOW + 700, hostname=b"laptop")  # ...until its lease has ended
    assert backend.records["52:54:00:00:00:0b"][0] == "laptop.lab.test"
    fqdn = {codec.FQDN: b"\x05\xff\xff\x05phone\x00"}  # option 81, wire format, S set
    offer = core.handle(message(codec.DISCOVER, mac(10), options=fqdn), ("0.0.0.0", 68), NOW)
    ack = core.handle(message(codec.REQUEST, mac(10), options={**fqdn, codec.REQUESTED_IP: codec.ip_option(
        offer.replies[0].packet.yiaddr), codec.SERVER_ID: codec.ip_option("10.0.0.1")}), ("0.0.0.0", 68), NOW)
    assert backend.records["52:54:00:00:00:0a"][0] == "phone.lab.test"
    assert ack.replies[0].packet.options[codec.FQDN] == b"\x05\xff\xff\x05phone\x03lab\x04test\x00"


def test_a_thousand_clients_never_share_an_address():
    backend = MemoryBackend()
    core = DHCPCore(BIG, backend)
    given_out = [dora(core, mac(n)) for n in range(1000)]
    assert len(set(given_out)) == 1000
    assert all(ipaddress.IPv4Address(BIG.first) <= ipaddress.IPv4Address(ip) <= ipaddress.IPv4Address(BIG.last)
               for ip in given_out)
    # half of them come back asking again, interleaved with 24 new clients: same answers
    for n in range(0, 1000, 2):
        assert dora(core, mac(n), now=NOW + 100) == given_out[n]
    more = [dora(core, mac(5000 + n), now=NOW + 100) for n in range(24)]
    assert not set(more) & set(given_out) and len(set(more)) == 24
    assert core.handle(message(codec.DISCOVER, mac(9999)), ("0.0.0.0", 68), NOW + 100).replies == []


def test_leases_survive_a_restart_through_the_store(tmp_path):
    from services.dhcp.server import StoreBackend
    from services.store import Store

    store = Store(tmp_path / "data")
    core = DHCPCore(POOL, StoreBackend(store.net))
    ips = {n: dora(core, mac(n), now=time.time(), hostname=f"pc{n}".encode())
           for n in range(1, 6)}
    store.close()
    store = Store(tmp_path / "data")
    again = DHCPCore(POOL, StoreBackend(store.net))
    assert {l.mac: l.ip for l in store.net.leases()} == {f"52:54:00:00:00:0{n}": ip for n, ip in ips.items()}
    assert {r.name for r in store.net.records()} == {f"pc{n}.lab.test" for n in range(1, 6)}
    assert dora(again, mac(99), now=time.time()) not in ips.values()
    assert dora(again, mac(3), now=time.time()) == ips[3]
    release = again.handle(message(codec.RELEASE, mac(3), ciaddr=ips[3]), (ips[3], 68), time.time())
    assert "released" in release.note and "pc3.lab.test" not in {r.name for r in store.net.records()}
    store.close()


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_never_raises(data):
    DHCPCore(POOL, MemoryBackend()).handle(data, ("0.0.0.0", 68), NOW)


VALID = message(codec.REQUEST, mac(1), options={codec.REQUESTED_IP: codec.ip_option("10.0.0.120"),
                                               codec.HOSTNAME: b"pc", codec.FQDN: b"\x05\xff\xff\x02pc\x00"})


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 299), st.integers(0, 255)), max_size=8))
def test_fuzz_mutated_requests(changes):
    data = bytearray(VALID)
    for position, value in changes:
        data[position] = value
    result = DHCPCore(POOL, MemoryBackend()).handle(bytes(data), ("0.0.0.0", 68), NOW)
    for reply in result.replies:
        assert codec.parse(reply.data).op == 2


def test_expired_leases_lose_their_names_and_addresses(tmp_path):
    from services.dhcp.core import Held
    from services.dhcp.server import StoreBackend
    from services.store import Store

    store = Store(tmp_path / "data")
    backend = StoreBackend(store.net)
    past = time.time() - 1
    backend.bind(Held("52:54:00:00:00:01", "10.0.0.120", "old", "", past), ("old.lab.test", 60))
    backend.bind(Held("52:54:00:00:00:02", "10.0.0.121", "new", "", past + 3600), ("new.lab.test", 60))
    assert store.net.sweep() == 1
    assert {r.name for r in store.net.records()} == {"new.lab.test"}
    core = DHCPCore(POOL, backend)
    assert core.free_for("10.0.0.120", "52:54:00:00:00:09", time.time())  # ended: free again
    assert not core.free_for("10.0.0.121", "52:54:00:00:00:09", time.time())
    with pytest.raises(ValueError):  # the store itself never lets two clients share one
        store.net.bind_lease("52:54:00:00:00:09", "10.0.0.121", "", "", time.time() + 60)
    store.close()
