"""TLS faults with curl and openssl s_client (issue 17): for one client address, HTTPS
(HTTP/2 by ALPN) and SMTP STARTTLS serve an expired certificate, one for a wrong name, or
one from a CA the class never installed; another address still verifies; journaled as the
service whose port it is; clearing restores the lab's certificate."""

from __future__ import annotations

import datetime
import subprocess

import pytest

from services.tls import WRONG_NAME, LabTLS
from tests.conftest import LabFactory, need
from tests.lab.test_faults import settled

TARGET = "127.0.0.2"  # the student's address; 127.0.0.1 is the rest of the class

# kind -> (curl's error, what openssl s_client shows of the served certificate)
SYMPTOMS = {
    "tls.expired": ("SSL certificate problem: certificate has expired",
                    "Verify return code: 10 (certificate has expired)"),
    "tls.wrong-name": ("SSL: no alternative certificate subject name matches target host "
                       "name 'localhost'", f"subject=O = protolab, CN = {WRONG_NAME}"),
    "tls.unknown-ca": ("SSL certificate problem: unable to get local issuer certificate",
                       "issuer=O = protolab elsewhere, CN = protolab untrusted CA"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need("curl", "openssl")
    factory = LabFactory(tmp_path_factory.mktemp("tlsfaults"))
    server = factory.start(only="http,smtp")
    yield server
    problems = factory.cleanup()
    assert not problems, problems


def https(server, source: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version}", "--interface", source,
         "--cacert", str(server.data / "tls" / "ca.crt"),
         f"https://localhost:{server.port('http', 'https')}/"],
        capture_output=True, text=True, timeout=30)


def smtp_starttls(server, source: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--interface", source,
         "--cacert", str(server.data / "tls" / "ca.crt"),
         f"smtp://localhost:{server.port('smtp', 'smtp')}", "--mail-from", "bob@lab.test",
         "--mail-rcpt", "alice@lab.test", "-T", "-"],
        input="Subject: hi\r\n\r\nhello\r\n", capture_output=True, text=True, timeout=30)


def s_client(server, source: str) -> str:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port('http', 'https')}",
         "-bind", source, "-CAfile", str(server.data / "tls" / "ca.crt")],
        input="", capture_output=True, text=True, timeout=30).stdout


@pytest.mark.parametrize("kind", SYMPTOMS)
def test_a_bad_certificate_for_one_address(server, kind):
    curl_error, shown = SYMPTOMS[kind]
    on = server.cli("fault", "add", kind, "--target", TARGET)
    assert on.returncode == 0, on.stderr
    number = on.stdout.split()[1]
    try:
        hit = settled(lambda: https(server, TARGET), lambda r: r.returncode != 0)
        assert hit.returncode == 60 and curl_error in hit.stderr, hit.stderr
        assert shown in s_client(server, TARGET)
        assert https(server, "127.0.0.1").stdout == "2"  # verified, and HTTP/2 by ALPN
        assert "Verify return code: 0 (ok)" in s_client(server, "127.0.0.1")
        assert f"fault {kind} {number}" in server.journal_until("http", f"fault {kind} {number}")
    finally:
        assert server.cli("fault", "clear").returncode == 0
    again = settled(lambda: https(server, TARGET), lambda r: r.returncode == 0)
    assert again.returncode == 0, again.stderr
    assert "Verify return code: 0 (ok)" in s_client(server, TARGET)


def test_starttls_serves_the_fault_too(server):
    on = server.cli("fault", "add", "tls.expired", "--target", TARGET)
    assert on.returncode == 0, on.stderr
    try:
        hit = settled(lambda: smtp_starttls(server, TARGET), lambda r: r.returncode != 0)
        assert hit.returncode == 60, hit.stderr
        assert "SSL certificate problem: certificate has expired" in hit.stderr
        sent = smtp_starttls(server, "127.0.0.1")
        assert sent.returncode == 0, sent.stderr
        assert "fault tls.expired" in server.journal_until("smtp", "fault tls.expired")
    finally:
        assert server.cli("fault", "clear").returncode == 0
    again = settled(lambda: smtp_starttls(server, TARGET), lambda r: r.returncode == 0)
    assert again.returncode == 0, again.stderr


def test_the_faults_certificates_are_made_once(tmp_path):
    """Next to the CA, made once (the server's names changing leaves them), again with a
    new CA; the lab CA signed the expired and the wrong-name ones, not the third."""
    from cryptography import x509

    tls = LabTLS(tmp_path / "tls", ["localhost", "www.lab.test"])
    tls.ensure()
    before = {p.name: p.read_bytes() for p in tls.fault_dir.iterdir()}
    assert sorted(before) == sorted(f"{name}.{ext}" for name in ("expired", "wrong-name",
                                                                "unknown-ca")
                                    for ext in ("crt", "key"))
    LabTLS(tmp_path / "tls", ["localhost", "mail.lab.test"]).ensure()
    assert {p.name: p.read_bytes() for p in tls.fault_dir.iterdir()} == before
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())

    def cert(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((tls.fault_dir / f"{name}.crt").read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    assert cert("expired").not_valid_after_utc < now
    names = cert("wrong-name").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == [WRONG_NAME]
    for name in ("expired", "wrong-name"):
        cert(name).verify_directly_issued_by(ca)
    with pytest.raises(ValueError):
        cert("unknown-ca").verify_directly_issued_by(ca)
    tls.ca_key.unlink()  # a new CA: new certificates for the faults too
    LabTLS(tmp_path / "tls", ["localhost"]).ensure()
    cert("expired").verify_directly_issued_by(
        x509.load_pem_x509_certificate(tls.ca_cert.read_bytes()))
