"""Zone rebuilds (signing, packing) off the reactor: background.ZoneWorker's order of
events (core, with a stand-in for the thread pool), and a running lab that answers from
its old signed zone while a big change is being signed (server, dig)."""

from __future__ import annotations

import subprocess

from twisted.internet.defer import Deferred

from services.dns.background import ZoneWorker
from tests.conftest import need


def test_one_rebuild_at_a_time_and_the_latest_wins():
    """core: submits during a rebuild collapse into one more, from the latest inputs;
    nothing is installed before its work is done; a failed work leaves the old zone and
    the next one still runs."""
    installed: list[str] = []
    running: list[tuple[str, Deferred]] = []

    def in_thread(work):
        done: Deferred = Deferred()
        running.append((work(), done))
        return done

    worker: ZoneWorker[str] = ZoneWorker(installed.append, in_thread)
    worker.submit(lambda: "serial 1")
    for serial in (2, 3, 4):
        worker.submit(lambda s=serial: f"serial {s}")
    assert [name for name, _ in running] == ["serial 1"] and installed == []
    running[0][1].callback("serial 1")
    assert installed == ["serial 1"] and [name for name, _ in running][1:] == ["serial 4"]
    running[1][1].errback(RuntimeError("signing failed"))
    assert installed == ["serial 1"] and not worker.busy
    worker.submit(lambda: "serial 5")
    running[2][1].callback("serial 5")
    assert installed == ["serial 1", "serial 5"]


def dig(server, *args: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(server.port("dns", "dns")),
                           "+time=5", "+tries=1", *args],
                          capture_output=True, text=True, timeout=30).stdout


def soa_serial(server) -> int:
    return int(dig(server, "+short", "lab.test", "SOA").split()[2])


def test_the_old_signed_zone_answers_while_a_big_change_is_signed(lab):
    """1,500 new names at once (seconds of signing): once the lab journals that it
    rebuilds in the background (the ready signal), dig gets a signed answer from the zone
    it had; then the new zone comes, signed, with the new serial."""
    need("dig")
    from services.store import Store

    server = lab.start(only="dns", config='[hosts]\npc9 = "10.9.8.7"\n[dns]\ndnssec = "on"\n')
    before = soa_serial(server)
    store = Store(server.data)
    try:
        store.net.add_records((f"host{i}.lab.test", "A", f"10.7.{i // 250}.{i % 250 + 1}")
                              for i in range(1500))
    finally:
        store.close()
    journal = server.journal_until("dns", "rebuilding in the background")
    assert "rebuilding in the background" in journal
    during = dig(server, "+dnssec", "pc9.lab.test", "A")
    assert "10.9.8.7" in during and "RRSIG" in during, during
    assert soa_serial(server) == before  # the old zone: the new one is still being signed
    journal = server.journal_until("dns", "1500 records from the store", timeout=120)
    assert "1500 records from the store" in journal
    after = dig(server, "+dnssec", "host1499.lab.test", "A")
    assert "10.7.5.250" in after and "RRSIG" in after, after
    assert soa_serial(server) > before
