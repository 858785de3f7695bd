"""DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) judged by kdig and curl, and seen
decrypted in tshark with the lab's key log."""

from __future__ import annotations

import base64
import subprocess

import dns.message
import dns.rcode

from tests.conftest import need


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def test_kdig_over_tls_curl_over_https_and_tshark_decrypts_both(lab, capture, tmp_path):
    need("kdig", "curl", "tshark")
    keylog = tmp_path / "keys.log"
    server = lab.start(only="dns", config=f'[hosts]\npc9 = "10.9.8.7"\n'
                                          f'[tls]\nkeylog = "{keylog}"\n')
    dot, doh = server.port("dns", "dot"), server.port("dns", "doh")
    ca = str(server.data / "tls" / "ca.crt")
    running = capture(f"tcp port {dot} or tcp port {doh}")

    out = run("kdig", "@127.0.0.1", "-p", str(dot), f"+tls-ca={ca}", "+tls-hostname=ns.lab.test",
              "+time=5", "pc9.lab.test", "A")
    assert "TLS session" in out and "10.9.8.7" in out, out

    url = f"https://127.0.0.1:{doh}/dns-query"
    query = dns.message.make_query("v6missing.lab.test", "A")
    query.id = 0  # RFC 8484 4.1: cache-friendly
    encoded = base64.urlsafe_b64encode(query.to_wire()).rstrip(b"=").decode()
    # curl resolving a name through DoH (a loopback name: no traffic leaves the machine)
    # and fetching from the DoH server itself by that name: GET, as RFC 8484 4.1 spells it
    fetched = subprocess.run(["curl", "-sS", "-v", "--cacert", ca, "--doh-url", url,
                              f"https://ns.lab.test:{doh}/dns-query?dns={encoded}"],
                             capture_output=True, timeout=60)
    assert b"DoH A: 127.0.0.1" in fetched.stderr, fetched.stderr
    assert dns.message.from_wire(fetched.stdout).rcode() == dns.rcode.NXDOMAIN
    posted = subprocess.run(["curl", "-sS", "--cacert", ca, "-H",
                             "content-type: application/dns-message", "--data-binary", "@-", url],
                            input=dns.message.make_query("pc9.lab.test", "A").to_wire(),
                            capture_output=True, timeout=60)
    assert "10.9.8.7" in dns.message.from_wire(posted.stdout).answer[0].to_text()
    bad = run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca,
              f"{url}?dns=!!")
    assert bad.strip() == "400"

    names = running.read("dns.flags.response == 0", "dns.qry.name", keylog=keylog,
                         decode_as=(f"tls.port=={dot},dns",))
    # DoT's query and DoH's POST (a GET's query is in its URL: tshark shows no DNS for it)
    assert names.count("pc9.lab.test") == 2
    assert "ns.lab.test" in names  # curl's own DoH lookups
