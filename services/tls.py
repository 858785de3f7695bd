"""The lab CA, the server certificate, and the one TLS context every service uses.

On first start the lab makes a CA (DATA/tls/ca.crt, which students install or pass to
curl --cacert) and a server certificate signed by it whose names cover every host of the
zone, the domain itself, a wildcard, localhost and the listening addresses. The server
certificate is made again when those names change. Keys are ECDSA P-256: instant to make,
and every client of the last decade speaks it.

With [tls] keylog set, every TLS session's secrets are appended in NSS key log format, so
Wireshark decrypts the class's captures (or `editcap --inject-secrets tls,FILE`).
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from OpenSSL import SSL

VALID_DAYS = 3650


class LabTLS:
    def __init__(self, directory: Path, names: list[str], keylog: str = "",
                 organisation: str = "protolab") -> None:
        self.directory = directory
        self.names = sorted(set(names))
        self.keylog = keylog
        self.organisation = organisation
        self.ca_cert = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"
        self._context: SSL.Context | None = None

    def ensure(self) -> None:
        """Make the CA and the server certificate if missing or out of date. Several
        processes may start at once on one data directory: a lock file serialises them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.ca_cert.exists() and self.ca_key.exists()):
                self._make_ca()
            if not self._server_is_current():
                self._make_server()

    def _make_ca(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{self.organisation} lab CA"),
        ])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key, key)
        _write_cert(self.ca_cert, cert)
        self.server_cert.unlink(missing_ok=True)  # signed by the old CA, if any

    def _server_is_current(self) -> bool:
        if not (self.server_cert.exists() and self.server_key.exists()):
            return False
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        if cert.issuer != ca.subject:
            return False
        remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        return self._cert_names(cert) == self.names and remaining.days > 30

    @staticmethod
    def _cert_names(cert: Any) -> list[str]:
        from cryptography import x509

        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        return sorted(set(dns + ips))

    def _make_server(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in self.names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        common = next((n for n in self.names if not _is_ip(n) and "*" not in n), "localhost")
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organisation),
                x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            # 397 days: the longest validity browsers accept for a server certificate.
            .not_valid_after(now + datetime.timedelta(days=397))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write_key(self.server_key, key)
        _write_cert(self.server_cert, cert)

    def context(self) -> SSL.Context:
        """The pyOpenSSL server context (made once): Twisted, pyftpdlib and anything else
        that speaks TLS for the lab use this one, so the key log sees every session."""
        if self._context is None:
            from OpenSSL import SSL

            self.ensure()
            ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.use_certificate_chain_file(str(self.server_cert))
            ctx.use_privatekey_file(str(self.server_key))
            ctx.check_privatekey()
            ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
            ctx.set_session_id(b"protolab")
            if self.keylog:
                ctx.set_keylog_callback(_KeyLog(self.keylog))
            self._context = ctx
        return self._context


class _KeyLog:
    """Appends NSS key log lines; O_APPEND keeps lines whole when processes share the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, connection: Any, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)
