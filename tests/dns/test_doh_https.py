"""DNS over HTTPS on the web server's HTTPS port (issue 21: `/dns-query` on the HTTPS
port), answered by the lab's name server: curl --doh-url resolves lab names through it,
GET and POST over HTTP/1.1 and HTTP/2, GET over HTTP/3; a clear 502 when the lab's name
server does not run."""

from __future__ import annotations

import base64
import subprocess

import dns.message
import dns.rcode

from tests.conftest import need


def query(name: str, qtype: str = "A") -> bytes:
    message = dns.message.make_query(name, qtype)
    message.id = 0  # RFC 8484 4.1: cache-friendly
    return message.to_wire()


def encoded(wire: bytes) -> str:
    return base64.urlsafe_b64encode(wire).rstrip(b"=").decode()


def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], input=data, capture_output=True, timeout=60)


def test_dns_query_on_the_https_port(lab):
    need("curl")
    server = lab.start(only="dns,http", config='[hosts]\npc9 = "10.9.8.7"\n')
    https = server.port("http", "https")
    ca = ("--cacert", str(server.data / "tls" / "ca.crt"))
    url = f"https://127.0.0.1:{https}/dns-query"
    # curl resolves the web server's lab name through DoH (the lab zone: 127.0.0.1, no
    # traffic leaves the machine), then fetches the portal by that name.
    fetched = curl("-v", *ca, "--doh-url", url, f"https://www.lab.test:{https}/")
    assert b"DoH A: 127.0.0.1" in fetched.stderr, fetched.stderr[-2000:]
    assert b"protolab" in fetched.stdout
    for version in ("--http1.1", "--http2"):
        got = curl(*ca, version, f"{url}?dns={encoded(query('pc9.lab.test'))}")
        assert "10.9.8.7" in dns.message.from_wire(got.stdout).answer[0].to_text(), version
        posted = curl(*ca, version, "-H", "content-type: application/dns-message",
                      "--data-binary", "@-", url, data=query("nothing.lab.test"))
        assert dns.message.from_wire(posted.stdout).rcode() == dns.rcode.NXDOMAIN, version
    head = curl(*ca, "-D", "-", "-o", "/dev/null", f"{url}?dns={encoded(query('pc9.lab.test'))}")
    assert b"content-type: application/dns-message" in head.stdout.lower()
    for args, status in ((["-X", "PUT", url], "405"), ([f"{url}?dns=!!"], "400"),
                         (["--data-binary", "x", url], "415")):
        got = curl(*ca, "-o", "/dev/null", "-w", "%{http_code}", *args)
        assert got.stdout.decode() == status, args
    journal = server.journal_until("http", "/dns-query")
    assert "GET /dns-query?dns=" in journal and "POST /dns-query HTTP/2" in journal


def test_dns_query_over_http3(lab):
    from tests.http.h3client import fetch

    server = lab.start(only="dns,http", config='[hosts]\npc9 = "10.9.8.7"\n')
    (status, head, body), = fetch(server.port("http", "h3"), server.data / "tls" / "ca.crt",
                                  [{"path": f"/dns-query?dns={encoded(query('pc9.lab.test'))}"}])
    assert status == 200 and head["content-type"] == "application/dns-message"
    assert "10.9.8.7" in dns.message.from_wire(body).answer[0].to_text()


def test_without_the_name_server_dns_query_says_so(lab):
    need("curl")
    server = lab.start(only="http")
    url = f"https://127.0.0.1:{server.port('http', 'https')}/dns-query"
    got = curl("--cacert", str(server.data / "tls" / "ca.crt"), "-w", "\n%{http_code}",
               f"{url}?dns={encoded(query('pc9.lab.test'))}")
    text = got.stdout.decode()
    assert text.endswith("\n502") and "the lab's name server" in text, text
