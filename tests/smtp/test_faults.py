"""SMTP faults (issue 17) as swaks sees them: 451 then 250 (greylisting), 550 for one
recipient, 552 for a user over quota, a banner that comes late, STARTTLS that fails after
its 220; for the target only, journaled, gone when cleared. Greylist's memory unit-tested."""

from __future__ import annotations

import socket

import pytest

from services.smtp.core import Greylist
from tests.conftest import need
from tests.lab.test_faults import settled
from tests.smtp.test_clients import swaks


def test_greylist_passes_a_triple_after_its_delay_and_stays_bounded():
    now = [100.0]
    grey = Greylist(5, clock=lambda: now[0])
    key = ("1@100.0", "10.0.0.5", "a@x", "b@y")
    assert grey.wait(key) == 5
    now[0] += 3
    assert grey.wait(key) == 2  # a retry too early: still refused, the clock runs on
    assert grey.wait(("1@102.0", *key[1:])) == 5  # a fault added again greylists again
    now[0] += 2
    assert grey.wait(key) == 0
    grey.LIMIT = 3
    for n in range(3):
        grey.wait(("1@100.0", "c", "s", str(n)))
    assert len(grey.seen) <= 3


@pytest.fixture
def server(lab):
    need("swaks")
    return lab.start(only="smtp")


def test_swaks_sees_451_then_250(server):
    port = server.port("smtp", "smtp")
    assert server.cli("fault", "add", "smtp.greylist", "--target", "alice@lab.test").returncode == 0
    first = settled(lambda: swaks(port, "--to", "bob@lab.test"), lambda r: r.returncode != 0)
    assert b"<** 451 4.7.1 Greylisting in action, please come back in 00:00:0" in first.stdout
    other = swaks(port, "--to", "bob@lab.test", "--from", "bob@lab.test")  # not the target
    assert other.returncode == 0, other.stdout.decode()
    retried = settled(lambda: swaks(port, "--to", "bob@lab.test"), lambda r: r.returncode == 0,
                      seconds=30)
    assert retried.returncode == 0 and b"<-  250 2.0.0 Ok: queued" in retried.stdout
    assert "fault smtp.greylist #1" in server.journal_until("smtp", "fault smtp.greylist")
    server.cli("fault", "clear")
    # cleared: a triple never seen before passes at once
    fresh = settled(lambda: swaks(port, "--to", "alice@lab.test"), lambda r: r.returncode == 0)
    assert fresh.returncode == 0
    # switched on again (the store gives it the cleared one's id): greylisted again
    server.cli("fault", "add", "smtp.greylist", "--target", "alice@lab.test")
    again = settled(lambda: swaks(port, "--to", "bob@lab.test"), lambda r: r.returncode != 0)
    assert b"<** 451 4.7.1" in again.stdout


def test_swaks_sees_550_for_one_recipient_and_552_over_quota(server):
    port = server.port("smtp", "smtp")
    server.cli("fault", "add", "smtp.reject-recipient", "--target", "bob@lab.test")
    refused = settled(lambda: swaks(port, "--to", "bob@lab.test"), lambda r: r.returncode != 0)
    assert b"<** 550 5.1.1 <bob@lab.test>: Recipient address rejected: User unknown" \
        in refused.stdout
    assert swaks(port, "--to", "alice@lab.test").returncode == 0  # the rest of the class
    server.cli("fault", "clear")
    server.cli("fault", "add", "imap.over-quota", "--target", "alice")  # a user, not an address
    full = settled(lambda: swaks(port, "--to", "alice@lab.test"), lambda r: r.returncode != 0)
    assert b"<** 552 5.2.2 <alice@lab.test> Quota exceeded" in full.stdout
    assert swaks(port, "--to", "bob@lab.test").returncode == 0  # the earlier fault is gone
    journal = server.journal_until("smtp", "fault imap.over-quota")
    # ids are never reused: the second fault, after the first was cleared, is #2
    assert "fault smtp.reject-recipient #1" in journal and "fault imap.over-quota #2" in journal
    server.cli("fault", "clear")
    assert settled(lambda: swaks(port, "--to", "alice@lab.test"),
                   lambda r: r.returncode == 0).returncode == 0


def test_the_banner_comes_late(server):
    port = server.port("smtp", "smtp")
    server.cli("fault", "add", "smtp.slow-banner", "--target", "127.0.0.1")
    for _ in range(50):  # until a connection meets the fault (the store's poll)
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        journal = server.journal_until("smtp", "fault smtp.slow-banner", timeout=0.5)
        if "fault smtp.slow-banner #1" in journal:
            break
        client.close()
    client.setblocking(False)
    with pytest.raises(BlockingIOError):  # connected, journaled, and still no greeting
        client.recv(100)
    client.settimeout(30)
    banner = client.recv(100)
    client.close()
    assert banner.startswith(b"220 ")
    sent = swaks(port, "--to", "bob@lab.test")  # swaks waits for it, and delivers
    assert sent.returncode == 0, sent.stdout.decode()


def test_starttls_answers_220_then_fails(server):
    port = server.port("smtp", "smtp")
    server.cli("fault", "add", "smtp.starttls-fails")
    failed = settled(lambda: swaks(port, "--to", "bob@lab.test", "--tls"),
                     lambda r: r.returncode != 0)
    assert b"STARTTLS" in failed.stdout and b"<-  220 2.0.0 Ready to start TLS" in failed.stdout
    assert b"TLS startup failed" in failed.stdout + failed.stderr, failed.stderr.decode()
    server.cli("fault", "clear")
    again = settled(lambda: swaks(port, "--to", "bob@lab.test", "--tls"),
                    lambda r: r.returncode == 0)
    assert again.returncode == 0 and b"<~  250 2.0.0 Ok: queued" in again.stdout
