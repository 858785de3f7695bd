"""The lab CA, the server certificate's names, the shared context and its key log."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from OpenSSL import SSL

from services.tls import LabTLS
from tests.conftest import ROOT

NAMES = ["lab.test", "*.lab.test", "imap.lab.test", "localhost", "127.0.0.1"]


def handshake(tls: LabTLS, server_name: str, cafile) -> ssl.SSLSocket:
    """A stdlib TLS client against the lab context over a socket pair."""
    client_sock, server_sock = socket.socketpair()
    server = SSL.Connection(tls.context(), server_sock)
    server.set_accept_state()

    def serve():
        try:
            server.do_handshake()
            server.sendall(b"hello")
        except SSL.Error:
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        client = context.wrap_socket(client_sock, server_hostname=server_name)
        assert client.recv(5) == b"hello"
        return client
    finally:
        thread.join(5)
        server_sock.close()


def test_ca_and_server_certificate(tmp_path):
    tls = LabTLS(tmp_path / "tls", NAMES)
    tls.ensure()
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    assert LabTLS._cert_names(server) == sorted(NAMES)
    assert oct(tls.ca_key.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("name", ["imap.lab.test", "www.lab.test", "localhost"])
def test_clients_trusting_the_lab_ca_connect(tmp_path, name):
    tls = LabTLS(tmp_path / "tls", NAMES)
    handshake(tls, name, tls.ca_cert).close()


def test_a_name_outside_the_certificate_is_refused(tmp_path):
    tls = LabTLS(tmp_path / "tls", NAMES)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls, "www.example.org", tls.ca_cert)


def test_key_log_lets_wireshark_decrypt(tmp_path):
    keylog = tmp_path / "keys.log"
    tls = LabTLS(tmp_path / "tls", NAMES, keylog=str(keylog))
    handshake(tls, "imap.lab.test", tls.ca_cert).close()
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    # TLS 1.3 secrets in NSS key log format (what Wireshark reads).
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_TRAFFIC_SECRET_0"} <= labels


def test_new_names_remake_the_server_certificate_but_keep_the_ca(tmp_path):
    first = LabTLS(tmp_path / "tls", NAMES)
    first.ensure()
    ca = first.ca_cert.read_bytes()
    again = LabTLS(tmp_path / "tls", [*NAMES, "smb.lab.test"])
    again.ensure()
    assert again.ca_cert.read_bytes() == ca
    server = x509.load_pem_x509_certificate(again.server_cert.read_bytes())
    assert "smb.lab.test" in LabTLS._cert_names(server)


def test_processes_starting_together_share_one_ca(tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
              f"from services.tls import LabTLS; "
              f"LabTLS(Path({str(tmp_path / 'tls')!r}), {NAMES!r}).ensure(); "
              f"print(Path({str(tmp_path / 'tls' / 'ca.crt')!r}).read_text())")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = {proc.communicate(timeout=60)[0] for proc in procs}
    assert len(outputs) == 1 and "BEGIN CERTIFICATE" in outputs.pop()
