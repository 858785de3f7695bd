"""HTTP's faults with curl (issue 17): a 500 on a path, a slow answer for a login, a
redirect loop for a client address; over HTTP/1.1 and HTTP/2, journaled when they act, for
their target only, gone when cleared."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import need
from tests.http.test_server import curl, running_web, url
from tests.lab.test_faults import settled

PAGE = "/lab/http/basic.html"  # a page of the fast path: a fault must reach it too
OTHER = "/lab/http/long.html"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "httpfaults") as server:
        yield server


@pytest.fixture
def fault(web):
    """fault(KIND, TARGET) switches a fault on; every fault is cleared after the test."""
    def add(kind: str, target: str) -> str:
        on = web.cli("fault", "add", kind, "--target", target)
        assert on.returncode == 0, on.stderr
        return on.stdout.split()[1]  # "#N"
    yield add
    assert web.cli("fault", "clear").returncode == 0


def status(*args: str) -> str:
    return curl("-o", "/dev/null", "-w", "%{http_code} %{http_version}", *args,
                check=False).stdout.decode()


def h2(web, path: str) -> tuple[str, ...]:
    return ("--http2", "--cacert", str(web.data / "tls" / "ca.crt"), url(web, path, tls=True))


def test_error_500_on_a_path_over_http1_and_http2(web, fault):
    number = fault("http.error-500", PAGE)
    assert settled(lambda: status(url(web, PAGE)), lambda s: s == "500 1.1") == "500 1.1"
    answer = curl("-i", url(web, PAGE), check=False).stdout
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Content-Type: text/plain" in answer and answer.endswith(
        b"\r\n\r\n500 Internal Server Error\n\nThe server could not answer this request.\n")
    assert status(*h2(web, PAGE)) == "500 2"
    assert status(url(web, OTHER)) == "200 1.1"  # another path is served
    assert status(*h2(web, OTHER)) == "200 2"
    assert f"fault http.error-500 {number}" in web.journal_until("http", "fault http.error-500")
    web.cli("fault", "clear")
    assert settled(lambda: status(url(web, PAGE)), lambda s: s == "200 1.1") == "200 1.1"
    assert status(*h2(web, PAGE)) == "200 2"


def test_redirect_loop_for_a_client_address(web, fault):
    need("curl")
    fault("http.redirect-loop", "127.0.0.2")
    looping = ("-L", "--interface", "127.0.0.2")

    def attempt() -> subprocess.CompletedProcess:
        return curl(*looping, "-o", "/dev/null", url(web, PAGE), check=False)
    hit = settled(attempt, lambda r: r.returncode != 0)
    assert hit.returncode == 47, hit.stderr  # curl: too many redirects
    assert b"Maximum (50) redirects followed" in hit.stderr
    over_h2 = curl(*looping, "--max-redirs", "5", "-o", "/dev/null", *h2(web, PAGE), check=False)
    assert over_h2.returncode == 47 and b"Maximum (5) redirects followed" in over_h2.stderr
    answer = curl("-i", "--interface", "127.0.0.2", url(web, PAGE + "?x=1"), check=False).stdout
    assert answer.startswith(b"HTTP/1.1 302 Found\r\n")
    assert f"\r\nLocation: {PAGE}?x=1\r\n".encode() in answer  # to itself
    assert status("-L", url(web, PAGE)) == "200 1.1"  # 127.0.0.1 is not the target
    web.cli("fault", "clear")
    again = settled(attempt, lambda r: r.returncode == 0)
    assert again.returncode == 0, again.stderr


def test_slow_for_a_login_holds_nobody_else(web, fault):
    need("curl")
    number = fault("http.slow", "bob")

    def bob(*extra: str) -> subprocess.CompletedProcess:
        return curl("-u", "bob:bob", *extra, url(web, PAGE), check=False)
    # Until the lab has seen the fault, bob is answered at once; then his answer is late.
    settled(lambda: bob("--max-time", "2"), lambda r: r.returncode == 28, seconds=10)
    late = subprocess.Popen(["curl", "-sS", "-u", "bob@lab.test:bob", url(web, PAGE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert f"fault http.slow {number}" in web.journal_until("http", f"fault http.slow {number}")
        # While bob waits, alice (same address, another login) is answered: the reactor
        # is not held.
        assert curl("-u", "alice:alice", url(web, PAGE)).stdout.startswith(b"<!doctype html>")
        assert late.poll() is None
        out, err = late.communicate(timeout=30)
    finally:
        if late.poll() is None:
            late.kill()
            late.wait()
    assert late.returncode == 0 and out.startswith(b"<!doctype html>"), err
    web.cli("fault", "clear")
    assert settled(lambda: bob("--max-time", "2"), lambda r: r.returncode == 0,
                   seconds=10).returncode == 0
