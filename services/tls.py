"""The lab CA, the server certificate, and the one TLS context every service uses.

On first start the lab makes a CA (DATA/tls/ca.crt, which students install or pass to
curl --cacert) and a server certificate signed by it whose names cover every host of the
zone, the domain itself, a wildcard, localhost and the listening addresses. The server
certificate is made again when those names change. Keys are ECDSA P-256: instant to make,
and every client of the last decade speaks it.

With [tls] keylog set, every TLS session's secrets are appended in NSS key log format, so
Wireshark decrypts the class's captures (or `editcap --inject-secrets tls,FILE`).

TLS faults (FAULTS below, kinds `tls.NAME`, for a client address or everyone): three more
certificates, made once next to the CA, that a handshake serves instead of the right one
when a fault is on for the client. The choice is made per connection when its handshake
starts (an info callback on the one context), so it covers every TLS the lab speaks over
that context: implicit TLS ports, STARTTLS, HTTPS and HTTP/2, DoT, FTPS; and QUIC's
handshake (HTTP/3, whose TLS is aioquic's own) asks fault_certificate() for each new
connection.

Every handshake done over that context is journaled, once, in the session of the
connection it secures (a `tls handshake ...` event with the fields `version`, `cipher`,
`sni`, `alpn` and `keylog`, whether its secrets went to the key log): what the classroom's
key-log exercise is checked from. A connection whose service keeps no journal session
(FTP's data channels, DoT) has it as an event of its client address and service.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from OpenSSL import SSL

    from .faults import Board
    from .journal import Journal, Session

VALID_DAYS = 3650

WRONG_NAME = "other-server.example"  # what tls.wrong-name's certificate is for

# What can break in any TLS service (services/faults.py reads these with the packages'):
# `protolab fault add tls.NAME [--target ADDRESS]` (at handshake time nobody has logged in).
FAULTS = {
    "expired": "the certificate (signed by the lab CA) expired yesterday: clients refuse it "
               "(curl: certificate has expired)",
    "wrong-name": f"the certificate (signed by the lab CA) is for {WRONG_NAME} only: clients "
                  "refuse it (curl: no alternative certificate subject name matches)",
    "unknown-ca": "the certificate is signed by a CA the class did not install: clients "
                  "refuse it (curl: unable to get local issuer certificate)",
}


class LabTLS:
    def __init__(self, directory: Path, names: list[str], keylog: str = "",
                 organisation: str = "protolab", faults: Board | None = None,
                 journal: Journal | None = None, services: dict[int, str] | None = None) -> None:
        self.directory = directory
        self.names = sorted(set(names))
        self.keylog = keylog
        self.organisation = organisation
        self.faults = faults  # None: no TLS faults (commands that serve nothing)
        self.journal = journal
        self.services = services or {}  # TLS port -> its service, for the journal
        self.ca_cert = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"
        self.fault_dir = directory / "faults"  # FAULTS' certificates: NAME.crt, NAME.key
        self._context: SSL.Context | None = None
        self._fault_pairs: dict[str, tuple[Any, Any]] = {}  # NAME -> (certificate, key)
        # per connection, until it goes: what its handshakes wrote to the key log
        self._handshakes: weakref.WeakKeyDictionary[Any, _Handshake] = \
            weakref.WeakKeyDictionary()
        self._write_key_line: _KeyLog | None = None

    def ensure(self) -> None:
        """Make the CA, the server certificate and the faults' certificates if missing or
        out of date. Several processes may start at once on one data directory: a lock
        file serialises them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.ca_cert.exists() and self.ca_key.exists()):
                self._make_ca()
            if not self._server_is_current():
                self._make_server()
            if not self._faults_are_current():
                self._make_faults()

    def _make_ca(self) -> None:
        cert, key = _ca(self.organisation, f"{self.organisation} lab CA")
        _write_key(self.ca_key, key)
        _write_cert(self.ca_cert, cert)
        self.server_cert.unlink(missing_ok=True)  # signed by the old CA, if any
        for name in FAULTS:
            (self.fault_dir / f"{name}.crt").unlink(missing_ok=True)

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

    def _load_ca(self) -> tuple[Any, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        return (x509.load_pem_x509_certificate(self.ca_cert.read_bytes()),
                serialization.load_pem_private_key(self.ca_key.read_bytes(), None))

    def _make_server(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        # 397 days: the longest validity browsers accept for a server certificate.
        cert, key = _leaf(self.names, self.organisation, *self._load_ca(),
                          now - datetime.timedelta(days=1), now + datetime.timedelta(days=397))
        _write_key(self.server_key, key)
        _write_cert(self.server_cert, cert)

    def _faults_are_current(self) -> bool:
        """Made once; again only when the CA is new (_make_ca removes them) or a file is
        missing. The expired one stays expired and the others are for names or a CA that
        never change, so the server's names changing does not matter to them."""
        return all((self.fault_dir / f"{name}.{ext}").exists()
                   for name in FAULTS for ext in ("crt", "key"))

    def _make_faults(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        ca, ca_key = self._load_ca()
        other_ca, other_key = _ca(f"{self.organisation} elsewhere",
                                  f"{self.organisation} untrusted CA")
        made = {
            "expired": _leaf(self.names, self.organisation, ca, ca_key,
                             now - 398 * day, now - day),
            "wrong-name": _leaf([WRONG_NAME], self.organisation, ca, ca_key,
                                now - day, now + 397 * day),
            "unknown-ca": _leaf(self.names, self.organisation, other_ca, other_key,
                                now - day, now + 397 * day),
        }
        self.fault_dir.mkdir(exist_ok=True)
        for name, (cert, key) in made.items():
            _write_key(self.fault_dir / f"{name}.key", key)
            _write_cert(self.fault_dir / f"{name}.crt", cert)

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
                self._write_key_line = _KeyLog(self.keylog)
                ctx.set_keylog_callback(self._key_logged)
            if self.faults is not None:
                self._load_faults()
            if self.faults is not None or self.journal is not None:
                ctx.set_info_callback(self._handshake_info)
            self._context = ctx
        return self._context

    def _load_faults(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        for name in FAULTS:
            cert = x509.load_pem_x509_certificate((self.fault_dir / f"{name}.crt").read_bytes())
            key = serialization.load_pem_private_key(
                (self.fault_dir / f"{name}.key").read_bytes(), None)
            self._fault_pairs[name] = (cert, key)

    def _key_logged(self, connection: SSL.Connection, line: bytes) -> None:
        assert self._write_key_line is not None
        self._write_key_line(connection, line)
        self._handshakes.setdefault(connection, _Handshake()).lines += 1

    def _handshake_info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        from OpenSSL import SSL

        if where & SSL.SSL_CB_HANDSHAKE_START and self.faults is not None:
            self._serve_fault(connection)
        if where & SSL.SSL_CB_HANDSHAKE_DONE and self.journal is not None:
            self._journal_handshake(connection)

    def _journal_handshake(self, connection: SSL.Connection) -> None:
        """The handshake just done, as one journal event. OpenSSL may say "done" again
        without a new handshake (TLS 1.3 session tickets): only new key-log lines, or a
        first report, make an event."""
        assert self.journal is not None
        state = self._handshakes.setdefault(connection, _Handshake())
        if state.reported is not None and state.reported == state.lines:
            return
        state.reported = state.lines
        try:
            version = connection.get_protocol_version_name()
            cipher = connection.get_cipher_name() or ""
            sni = (connection.get_servername() or b"").decode("ascii", "replace")
            alpn = (connection.get_alpn_proto_negotiated() or b"").decode("ascii", "replace")
            fields = {"version": version, "cipher": cipher, "sni": sni, "alpn": alpn,
                      "keylog": state.lines > 0}
            text = " ".join([f"handshake {version} {cipher}", *([f"sni={sni}"] if sni else []),
                             *([f"alpn={alpn}"] if alpn else []),
                             f"key log: {state.lines} lines" if state.lines else "no key log"])
            session = _journal_session(connection)
            if session is not None:
                session.event("tls", text, fields)
                return
            addresses = _addresses(connection)
            (host, port), local = addresses or (("", 0), 0)
            self.journal.add(self.services.get(local, "lab"), "-",
                             f"{host}:{port}" if host else "-", "", "event", f"tls {text}", fields)
        except Exception as error:  # OpenSSL calls us: an escape would be lost, say it
            self.journal.add("lab", "-", "-", "", "event",
                             f"TLS handshake not journaled: {type(error).__name__}: {error}")

    def _serve_fault(self, connection: SSL.Connection) -> None:
        """At the start of each handshake (before the ClientHello is read): the
        certificate of a TLS fault on for this client, instead of the server's own."""
        assert self.faults is not None
        try:
            addresses = _addresses(connection)
            if addresses is None:
                return  # a connection of nobody we know (no faults for it)
            (host, port), local = addresses
            pair = self.fault_certificate(host, port, self.services.get(local, "lab"))
            if pair is not None:
                connection.use_certificate(pair[0])
                connection.use_privatekey(pair[1])
        except Exception as error:  # OpenSSL calls us: an escape would be lost, say it
            if self.journal is not None:
                self.journal.add("lab", "-", "-", "", "event",
                                 f"TLS fault not applied: {type(error).__name__}: {error}")

    def fault_certificate(self, host: str, port: int, service: str) -> tuple[Any, Any] | None:
        """The certificate and key of a TLS fault on for the client at `host`, journaled
        as `service`'s, or None (the server's own): also for handshakes that are not
        made over the context (QUIC's, in services/http/http3.py)."""
        if self.faults is None:
            return None
        if not self._fault_pairs:
            self._load_faults()
        for name, (cert, key) in self._fault_pairs.items():
            fault = self.faults.find(f"tls.{name}", host)
            if fault is not None:
                if self.journal is not None:
                    self.journal.add(service, "-", f"{host}:{port}", "", "event",
                                     f"fault {fault.kind} #{fault.id}")
                return cert, key
        return None


@dataclass
class _Handshake:
    lines: int = 0  # key-log lines written for the connection
    reported: int | None = None  # `lines` when its last handshake was journaled


def _journal_session(connection: SSL.Connection) -> Session | None:
    """The journal session of the service's protocol under the connection's TLS protocol
    (the app data, see _addresses), through the wrappers between them (the connection
    limits'): the journal Session it holds as `session` (IMAP: `journal`, beside its
    IMAP session). None for a connection without one."""
    from .journal import Session

    protocol = connection.get_app_data()
    for _ in range(4):  # TLS -> limits -> the service's protocol, at most a wrapper more
        protocol = getattr(protocol, "wrappedProtocol", None)
        if protocol is None:
            return None
        for name in ("session", "journal"):
            found = getattr(protocol, name, None)
            if isinstance(found, Session):
                return found
    return None


def _addresses(connection: SSL.Connection) -> tuple[tuple[str, int], int] | None:
    """((the client's address, its port), the server's port), or None if unknown:
    Twisted's connections carry their TLS protocol as the app data (serving.
    LabContextFactory sets it, as Twisted's own client side does); a socket's connection
    (pyftpdlib's) knows both itself; a memory one without app data knows neither."""
    owner = connection.get_app_data()
    if owner is not None:
        peer = owner.transport.getPeer()
        return (peer.host, peer.port), owner.transport.getHost().port
    try:
        peer, local = connection.getpeername(), connection.getsockname()
    except AttributeError:  # no socket: pyOpenSSL has nothing to delegate to
        return None
    return (peer[0], peer[1]), local[1]


def _ca(organisation: str, common_name: str) -> tuple[Any, Any]:
    """A self-signed CA certificate and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
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
    return cert, key


def _leaf(names: list[str], organisation: str, ca: Any, ca_key: Any,
          not_before: datetime.datetime, not_after: datetime.datetime) -> tuple[Any, Any]:
    """A server certificate for `names` signed by `ca`, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    common = next((n for n in names if not _is_ip(n) and "*" not in n), "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


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
