"""The Twisted side of DNS: UDP and TCP listeners around answers.Engine, the forwarder,
and the zone rebuilt when the store's live records change."""

from __future__ import annotations

import functools
import ipaddress
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import protocol, reactor, task
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

from ..serving import UDPPort
from . import parse_server, wire
from .answers import Engine, FaultCheck, Outcome, allow_list, describe, pack
from .background import ZoneWorker
from .zone import DynamicRecord, Zone, build, fake_root, name

if TYPE_CHECKING:
    from ..lab import Lab
    from .dnssec import Signed

logger = Logger()
FORWARD_TIMEOUT = 3.0
TCP_IDLE_SECONDS = 30


class QueryLog:
    """Journals queries, at most `per_second` of them each second, then says how many it
    skipped: a flood (dnsperf) must not turn the journal into the bottleneck. The counter
    is reset by a LoopingCall rather than by reading the clock on every query."""

    def __init__(self, lab: Lab, per_second: int) -> None:
        self.lab, self.per_second = lab, per_second
        self.count = 0  # queries this second, journaled or not
        self.loop = task.LoopingCall(self.tick)

    def tick(self) -> None:
        skipped = self.count - self.per_second
        if skipped > 0:
            self.lab.journal.add("dns", "-", "-", "", "event",
                                 f"{skipped} more queries not journaled (log_queries)")
        self.count = 0

    def __call__(self, transport: str, peer: tuple[str, int], outcome: Outcome,
                 view: str = "lab") -> None:
        self.count += 1
        if self.count > self.per_second:
            return
        note = " (forwarded)" if outcome.forward else ""
        text = f"{transport} {describe(outcome.query, outcome.rcode)}{note}"
        where = f"{peer[0]}:{peer[1]}"
        self.lab.journal.add("dns", "-", where, "", "packet", text, {"view": view})
        for fault in outcome.faults:
            self.lab.journal.add("dns", "-", where, "", "event", f"fault {fault}")


class StreamQuery(Int16StringReceiver):
    """One query to an upstream server over TCP (when its UDP answer came truncated)."""

    MAX_LENGTH = 65535

    def __init__(self, message: bytes, done: Callable[[bytes], None]) -> None:
        self.message, self.done = message, done

    def connectionMade(self) -> None:
        self.sendString(self.message)

    def stringReceived(self, reply: bytes) -> None:
        self.done(reply)
        self.transport.loseConnection()


class Forwarder(protocol.DatagramProtocol):
    """Sends queries for outside names to every [dns] forwarder at once and hands back the
    first answer with RA set; SERVFAIL when none answers in time. A client that asked over
    TCP gets a truncated upstream answer asked again over TCP."""

    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self.servers = servers
        # our ID -> (the client's query, where its answer goes, the timeout, and for a TCP
        # client the message to ask again over TCP if the UDP answer is truncated)
        self.pending: dict[int, tuple[wire.Query, Callable[[bytes], None], Any, bytes | None]] = {}

    def forward(self, data: bytes, query: wire.Query, deliver: Callable[[bytes], None],
                tcp: bool = False) -> None:
        ident = random.randrange(65536)
        while ident in self.pending:
            ident = random.randrange(65536)
        timer = reactor.callLater(FORWARD_TIMEOUT, self._timeout, ident)
        message = ident.to_bytes(2, "big") + data[2:]
        self.pending[ident] = (query, deliver, timer, message if tcp else None)
        for server in self.servers:
            self.transport.write(message, server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or (addr[0], addr[1]) not in self.servers:
            return
        ident = int.from_bytes(data[:2], "big")
        entry = self.pending.get(ident)
        if entry is None:
            return  # a late or second answer
        query, deliver, timer, message = entry
        if message is not None and data[2] & 0x02:  # truncated: ask that server over TCP
            timer.cancel()
            self.pending[ident] = (query, deliver, reactor.callLater(
                FORWARD_TIMEOUT, self._timeout, ident), None)
            protocol.ClientCreator(reactor, StreamQuery, message, self._answer).connectTCP(
                addr[0], addr[1], timeout=FORWARD_TIMEOUT).addErrback(lambda _: None)
            return  # a failed connection ends in the timeout's SERVFAIL
        self._answer(data)

    def _answer(self, data: bytes) -> None:
        entry = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if entry is None:
            return
        query, deliver, timer, _ = entry
        if timer.active():
            timer.cancel()
        deliver(query.id.to_bytes(2, "big") + data[2:3] + bytes([data[3] | 0x80]) + data[4:])

    def _timeout(self, ident: int) -> None:
        entry = self.pending.pop(ident, None)
        if entry is not None:
            entry[1](wire.reply(entry[0], wire.SERVFAIL, False, (0, 0, 0), b"", ra=True))


class UDPServer(protocol.DatagramProtocol):
    def __init__(self, engine: Engine, log: QueryLog, forwarder: Forwarder | None) -> None:
        self.engine, self.log, self.forwarder = engine, log, forwarder

    def answer(self, data: bytes, addr: Any) -> bytes | None:
        """The reply to send back to `addr` now, if any (FastUDPPort sends it)."""
        reply, outcome = self.engine.respond_udp(data, addr[0])
        if reply is None and outcome.forward and self.forwarder is not None:
            self.forwarder.forward(data, outcome.query, lambda late: self._late(late, addr))
        self.log("udp", addr, outcome, self.engine.view)
        if reply is not None and outcome.delay:  # the slow fault: later, never blocking
            reactor.callLater(outcome.delay, self._late, reply, addr)
            return None
        return reply

    def _late(self, reply: bytes, addr: Any) -> None:
        if self.transport is not None:  # None once the port has closed
            self.transport.write(reply, addr)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        reply = self.answer(data, addr)
        if reply is not None:
            self.transport.write(reply, addr)


class FastUDPPort(UDPPort):
    """Twisted's UDP port with a tighter read loop: receive, answer and send each datagram
    without Twisted's per-write address validation (the address is the one we received
    from). About a third of the time per query of the stock path, which the speed target
    (0.75x dnsmasq) needs."""

    def doRead(self) -> None:
        recv, send, answer = self.socket.recvfrom, self.socket.sendto, self.protocol.answer
        engine, journal, size = self.protocol.engine, self.protocol.log, self.maxPacketSize
        limit = journal.per_second
        for _ in range(256):
            try:
                data, addr = recv(size)
            except BlockingIOError:
                return
            except OSError:  # an ICMP error from an earlier send: nothing to read now
                continue
            if engine.faults is None:  # while a fault is on, every query takes the long way
                hit = engine.replies.get(data[2:])  # Engine.respond_udp's cache, inlined
                if hit is not None:
                    try:
                        send(data[:2] + hit[0], addr)
                    except OSError:
                        pass
                    if journal.count < limit:
                        journal("udp", addr, hit[1])
                    else:
                        journal.count += 1
                    continue
                if journal.count >= limit:  # not journaled: a name that does not exist, fast
                    reply = engine.quick(data)
                    if reply is not None:
                        journal.count += 1
                        try:
                            send(reply, addr)
                        except OSError:
                            pass
                        continue
            try:
                reply = answer(data, addr[:2])
            except Exception:  # a bug must cost one query, never the listener
                logger.failure("DNS query from {addr}", addr=addr)
                continue
            if reply is not None:
                try:
                    send(reply, addr)
                except OSError:
                    pass  # a full buffer or a vanished client: UDP is best effort


class TCPServer(Int16StringReceiver, TimeoutMixin):
    """Length-framed queries, as many as the client sends on one connection."""

    MAX_LENGTH = 65535

    def connectionMade(self) -> None:
        self.setTimeout(TCP_IDLE_SECONDS)
        peer = self.transport.getPeer()
        self.peer = (peer.host, peer.port)

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        factory = self.factory
        outcome = factory.engine.respond(data, True, self.peer[0])
        if outcome.forward and factory.forwarder is not None:
            factory.forwarder.forward(data, outcome.query, self._late, tcp=True)
        for message in outcome.messages:
            if outcome.delay:  # the slow fault: later, never blocking
                reactor.callLater(outcome.delay, self._late, message)
            else:
                self.sendString(message)
        factory.log(factory.transport, self.peer, outcome, factory.engine.view)
        if not outcome.messages and not outcome.forward:
            # a message we could not even answer FORMERR, or the truncate-no-tcp fault
            self.transport.loseConnection()

    def _late(self, reply: bytes) -> None:
        if self.transport is not None and self.transport.connected:
            self.sendString(reply)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()


class TCPFactory(protocol.ServerFactory):
    protocol = TCPServer

    def __init__(self, engine: Engine, log: QueryLog, forwarder: Forwarder | None,
                 transport: str = "tcp") -> None:
        self.engine, self.log, self.forwarder = engine, log, forwarder
        self.transport = transport  # what the journal calls it: tcp or dot


class DNSService(MultiService):
    """The listeners, plus the zone: built at start, rebuilt when the store's live records
    change (its "dns" topic, and the moment the next lease-owned record ends), each time
    with a higher SOA serial; a wake-up that finds the same records keeps zone and serial."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self.settings = lab.settings("dns")
        self.serial = lab.store.net.serial(lab.config.lab.domain)
        self.engine = Engine(Zone(), forwarding=bool(self.settings.forwarders),
                             axfr=self.settings.axfr,
                             axfr_allowed=allow_list(self.settings.axfr_clients))
        self._expiry: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        # what the zone was built from: the live records and the class's teams
        self._live: tuple[list[DynamicRecord], list[str]] | None = None
        self._fault_timer: Any = None
        self.keys: Any = None  # dnssec.Keys, when the zones are signed
        self.worker: ZoneWorker[tuple[Any, ...]] | None = None  # from startService on
        self.rebuild()
        log = self.query_log = QueryLog(lab, self.settings.log_queries)
        self.forwarder: Forwarder | None = None
        self._forward_port: Any = None
        if self.settings.forwarders:
            self.forwarder = Forwarder([parse_server(s) for s in self.settings.forwarders])
        plain, tcp = lab.listener("dns", "dns"), lab.listener("dns", "dns-tcp")
        self._udp(plain, lambda: UDPServer(self.engine, log, self.forwarder), lab.bind)
        lab.tcp(tcp, TCPFactory(self.engine, log, self.forwarder)).setServiceParent(self)
        names = {listener.name for listener in lab.listeners("dns")}
        if "dot" in names:  # the same length-framed messages, inside the lab's TLS
            lab.tcp(lab.listener("dns", "dot"),
                    TCPFactory(self.engine, log, self.forwarder, "dot")).setServiceParent(self)
        if "doh" in names:
            from .doh import site

            lab.tcp(lab.listener("dns", "doh"), site(self.engine, log)).setServiceParent(self)
        if self.settings.fake_root:
            self._fake_views(log)

    def _fake_views(self, log: QueryLog) -> None:
        from ..serving import ListenerService

        # The TLD's glue for the lab's NS: the name server's address in the lab zone, unless
        # that is loopback and this server listens on a real address.
        root, tld = self._fake_zones()
        for listener_name, zone, where in (("root", root, self.settings.root_address),
                                           ("tld", tld, self.settings.tld_address)):
            engine = Engine(zone, axfr=False, signed=self._sign(zone, list(zone.delegations)))
            engine.view = listener_name
            listener = self.lab.listener("dns", listener_name)
            self._udp(listener, lambda e=engine: UDPServer(e, log, None), where)
            tcp = TCPFactory(engine, log, None)

            def start(address: str, item: Any = listener, f: TCPFactory = tcp) -> Any:
                return reactor.listenTCP(item.port, f, interface=address)

            ListenerService(self.lab, listener, start, where).setServiceParent(self)

    def _fake_zones(self) -> tuple[Zone, Zone]:
        # The TLD's glue for the lab's NS: the name server's address in the lab zone, unless
        # that is loopback and this server listens on a real address.
        address = self.lab.config.host_names().get(self.settings.host, self.lab.config.lab.address)
        if self.lab.bind not in ("0.0.0.0", "::") and ipaddress.ip_address(address).is_loopback:
            address = self.lab.bind
        return fake_root(self.lab.config, address)

    def _sign(self, zone: Zone, children: list[Any], anchor: bool = False) -> Signed | None:
        """The zone signed as `[dns] dnssec` says (None: off); with `anchor`, the trust
        anchor of the top of its chain written where `delv -a` (and the class) find it."""
        mode = self.settings.dnssec
        if mode == "off":
            return None
        from .dnssec import Keys, sign  # dnspython: imported by signing labs only

        if self.keys is None:
            self.keys = Keys(self.lab.data / "dns" / "keys")
        signed = sign(zone, self.keys, mode, children, lab=name(self.lab.config.lab.domain))
        if anchor:
            path = self.lab.data / "dns" / "trust-anchor.conf"
            text = self.keys.anchor(min(zone.apexes, key=len))
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        return signed

    def _udp(self, listener: Any, server: Callable[[], UDPServer], interface: str) -> None:
        """A protocol per port: bound around a taken wildcard, each address has its own
        socket, and a reply must leave from the address the query came to."""
        from ..serving import ListenerService

        def start(address: str) -> FastUDPPort:
            port = FastUDPPort(listener.port, server(), interface=address, reactor=reactor)
            port.startListening()
            return port

        ListenerService(self.lab, listener, start, interface).setServiceParent(self)

    def startService(self) -> None:
        if self.forwarder is not None:
            self._forward_port = reactor.listenUDP(0, self.forwarder)
        self.worker = ZoneWorker(self._install)
        super().startService()
        self.query_log.loop.start(1.0, now=False)
        self._unsubscribe = self.lab.store.subscribe("dns", self._changed)
        self._unsubscribe_faults = self.lab.store.subscribe("faults", self._faults_changed)
        self._faults_changed(set())

    def stopService(self) -> Any:
        if self.query_log.loop.running:
            self.query_log.loop.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe_faults()
        if self._fault_timer is not None and self._fault_timer.active():
            self._fault_timer.cancel()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if self.forwarder is not None and self._forward_port is not None:
            self._forward_port.stopListening()
            for _, _, timer, _ in self.forwarder.pending.values():
                if timer.active():
                    timer.cancel()
        return super().stopService()

    def _faults_changed(self, topics: set[str]) -> None:
        """Hands the engine a fault check while a DNS fault is on, and None otherwise (its
        hot path's only cost), again when the first of them runs out."""
        if self._fault_timer is not None and self._fault_timer.active():
            self._fault_timer.cancel()
        now = time.time()
        on = [f for f in self.lab.store.faults.active(now) if f.kind.startswith("dns.")]
        self.engine.faults = self._fault_check() if on else None
        ends = [f.until for f in on if f.until is not None]
        if ends:
            self._fault_timer = reactor.callLater(min(ends) - now + 0.05, self._faults_changed, set())

    def _fault_check(self) -> FaultCheck:
        board = self.lab.faults

        def check(fault: str, peer: str, asked: str) -> str | None:
            found = board.find(f"dns.{fault}", peer, asked, f"{asked}.")
            return None if found is None else f"{found.kind} #{found.id}"

        return check

    def _make(self, live: list[DynamicRecord], serial: int, teams: list[str]
              ) -> tuple[Any, ...]:
        """The zone of `live` (and the class's `teams`' domains), signed and packed: pure,
        so it may run in the worker."""
        zone = build(self.lab.config, self.lab.offset, live, serial, teams)
        if self.settings.dnssec != "off" and self.settings.fake_root:
            # one server with the whole chain: a validator (delv) asks it for every DS
            # and DNSKEY
            from .dnssec import combined

            zone = combined(zone, *self._fake_zones())
        signed = self._sign(zone, list(zone.delegations), anchor=True)
        return zone, signed, pack(zone), serial, len(live)

    def _install(self, made: tuple[Any, ...]) -> None:
        zone, signed, tables, serial, count = made
        self.engine.set_zone(zone, signed, tables)
        self.lab.journal.add("dns", "-", "-", "", "event",
                             f"zone {self.lab.config.lab.domain} serial {serial}: "
                             f"{count} records from the store")

    def _changed(self, topics: set[str]) -> None:
        try:
            self.rebuild()
        except Exception:  # keep answering from the zone we have; the store poll goes on
            logger.failure("DNS: cannot rebuild the zone")

    def rebuild(self) -> None:
        net = self.lab.store.net
        now = time.time()
        live = [DynamicRecord(r.name, r.type, r.value, r.ttl) for r in net.live_records(now)]
        teams = sorted(self.lab.store.roster.teams())  # the class's team domains
        if (live, teams) != self._live:
            # The serial moves on every change and never goes back, also across restarts.
            self.serial = max(self.serial + 1, int(now))
            net.set_serial(self.lab.config.lab.domain, self.serial)
            self._live = (live, teams)
            work = functools.partial(self._make, live, self.serial, teams)
            if self.worker is None:  # at start-up, before the lab says ready: at once
                self._install(work())
            else:  # the zone we have answers until the new one is made (background.py)
                self.lab.journal.add("dns", "-", "-", "", "event",
                                     f"zone {self.lab.config.lab.domain} serial {self.serial}:"
                                     " rebuilding in the background")
                self.worker.submit(work)
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        ends = net.next_expiry(now)
        if ends is not None:  # a name goes when its lease ends, with no store change to say so
            self._expiry = reactor.callLater(max(0.0, ends - now) + 0.05, self._changed, set())


def make_service(lab: Lab) -> DNSService:
    return DNSService(lab)

