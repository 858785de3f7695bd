"""SMB 2.1 and 3.x on top of impacket's 2.0.2 server: dialect choice, 3.1.1 negotiate
contexts and preauth integrity, key derivation, AES signing and encryption. Sans-IO.

impacket 0.13.1's server speaks 2.0.2 only (MS-SMB2 dialects above it exist on its
master branch, untested there as a server). What 2.1 adds that a client relies on is
nothing impacket must do (leases are optional: the lab grants none). 3.x changes only
how messages are signed and sealed and how the keys come from the NTLM session key, all
of which sits around impacket's command processing:

- NEGOTIATE: the highest dialect both speak; for 3.1.1 the contexts (MS-SMB2 2.2.3.1):
  preauth integrity (SHA-512, a fresh salt), the cipher, the signing algorithm.
- Preauth integrity (3.1.1, MS-SMB2 3.3.5.4, 3.3.5.5): SHA-512 chained over NEGOTIATE
  and every SESSION_SETUP request and non-final response; the keys depend on it.
- Keys (MS-SMB2 3.3.5.5.3): SP800-108 counter-mode KDF with HMAC-SHA256 (cryptography's
  KBKDFHMAC), labels per dialect.
- Signing: HMAC-SHA256 (2.x), AES-128-CMAC (3.x), AES-128-GMAC where 3.1.1 negotiates it.
- Encryption (MS-SMB2 2.2.41, 3.1.4.3): the transform header, AES-128-CCM for 3.0/3.0.2,
  AES-128/256-CCM/GCM as 3.1.1 negotiates.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import cast

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

SMB202, SMB210, SMB300, SMB302, SMB311, WILDCARD = 0x0202, 0x0210, 0x0300, 0x0302, 0x0311, 0x02FF
DIALECTS = (SMB311, SMB302, SMB300, SMB210, SMB202)  # best first
NAMES = {SMB202: "SMB 2.0.2", SMB210: "SMB 2.1", SMB300: "SMB 3.0", SMB302: "SMB 3.0.2",
         SMB311: "SMB 3.1.1", WILDCARD: "SMB 2.???"}
PREAUTH, ENCRYPTION, SIGNING = 0x0001, 0x0002, 0x0008  # negotiate context types
SHA512 = 0x0001
AES128_CCM, AES128_GCM, AES256_CCM, AES256_GCM = 1, 2, 3, 4
CIPHERS = (AES128_GCM, AES128_CCM, AES256_GCM, AES256_CCM)  # the server's preference
CIPHER_NAMES = {AES128_CCM: "AES-128-CCM", AES128_GCM: "AES-128-GCM",
                AES256_CCM: "AES-256-CCM", AES256_GCM: "AES-256-GCM"}
HMAC_SHA256, AES_CMAC, AES_GMAC = 0, 1, 2
SIGNERS = (AES_GMAC, AES_CMAC)
SIGNER_NAMES = {HMAC_SHA256: "HMAC-SHA256", AES_CMAC: "AES-128-CMAC", AES_GMAC: "AES-128-GMAC"}
CAP_LEASING, CAP_LARGE_MTU, CAP_ENCRYPTION = 0x02, 0x04, 0x40  # (leases: services.smb.oplocks)
# READ/WRITE sizes NEGOTIATE announces: 2.0.2 takes one credit (64 KiB) per request; from
# 2.1 on, multi-credit requests (large MTU) up to what smbd announces.
SMALL_IO, LARGE_IO = 65536, 8 << 20
NEGOTIATE_REQUEST = struct.Struct("<HHHHI16sIHH")  # MS-SMB2 2.2.3, 3.1.1 form
CONTEXT = struct.Struct("<HHI")  # type, data length, reserved
TRANSFORM = struct.Struct("<4s16s16sIHHQ")  # MS-SMB2 2.2.41, 52 bytes
TRANSFORM_MAGIC = b"\xfdSMB"
SERVER_TO_REDIR, SIGNED = 0x1, 0x8
UNSIGNED_COMMANDS = {0x0000, 0x0001, 0x000C}  # NEGOTIATE, SESSION_SETUP, CANCEL


def error_reply(request: bytes, status: int) -> bytes:
    """An SMB2 ERROR response (MS-SMB2 2.2.2) to `request`: its header echoed, as a reply."""
    header = bytearray(request[:64].ljust(64, b"\0"))
    struct.pack_into("<I", header, 8, status)
    struct.pack_into("<HI", header, 14, 1, (header[16] | SERVER_TO_REDIR) & ~0x4)  # credits, flags
    struct.pack_into("<I", header, 20, 0)  # NextCommand
    return bytes(header) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"


class Refused(Exception):
    """A message the connection cannot take (bad transform, unknown session): it ends."""


@dataclass
class Offer:
    """What a client's SMB2 NEGOTIATE offers."""

    dialects: list[int]
    hash_algorithms: list[int] = field(default_factory=list)
    ciphers: list[int] = field(default_factory=list)
    signers: list[int] = field(default_factory=list)
    capabilities: int = 0
    contexts: set[int] = field(default_factory=set)  # ENCRYPTION, SIGNING: to be answered


def parse_offer(message: bytes) -> Offer | None:
    """The offer in a NEGOTIATE message (header included), or None if malformed."""
    body = message[64:]
    if len(body) < NEGOTIATE_REQUEST.size:
        return None
    size, count, _, _, capabilities, _, context_at, contexts, _ = NEGOTIATE_REQUEST.unpack_from(body)
    if size != 36 or count == 0 or NEGOTIATE_REQUEST.size + 2 * count > len(body):
        return None
    offer = Offer(list(struct.unpack_from(f"<{count}H", body, NEGOTIATE_REQUEST.size)),
                  capabilities=capabilities)
    if SMB311 not in offer.dialects:
        return offer
    at = context_at
    for _ in range(contexts):
        at += -at % 8
        if at + CONTEXT.size > len(message):
            return None
        kind, length, _ = CONTEXT.unpack_from(message, at)
        data = message[at + CONTEXT.size:at + CONTEXT.size + length]
        if len(data) < length:
            return None
        if kind in (PREAUTH, ENCRYPTION, SIGNING) and length >= 2:
            count = struct.unpack_from("<H", data)[0]
            first = 4 if kind == PREAUTH else 2  # PREAUTH: count, salt length, algorithms
            items = list(struct.unpack_from(f"<{min(count, (length - first) // 2)}H", data, first))
            if kind == PREAUTH:
                offer.hash_algorithms = items
            elif kind == ENCRYPTION:
                offer.ciphers, offer.contexts = items, offer.contexts | {ENCRYPTION}
            else:
                offer.signers, offer.contexts = items, offer.contexts | {SIGNING}
        at += CONTEXT.size + length
    return offer


def choose(offer: Offer, offered_max: int = SMB311) -> int | None:
    """The dialect to answer: the best both speak (None if none)."""
    return next((d for d in DIALECTS if d in offer.dialects and d <= offered_max), None)


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    """SP800-108 counter mode, HMAC-SHA256, r=32, L in bits (MS-SMB2 3.1.4.2)."""
    return KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=length, rlen=4,
                     llen=4, location=CounterLocation.BeforeFixed, label=label, context=context,
                     fixed=None).derive(key)


@dataclass
class Connection:
    """What one connection negotiated, and its session's keys once set up."""

    dialect: int = SMB202
    cipher: int = 0  # 0: no encryption possible
    signer: int = HMAC_SHA256
    preauth: bytes = b"\0" * 64  # the connection's hash; then the session's
    session_preauth: bytes | None = None
    session_id: int = 0
    signing_key: bytes = b""
    encryption_key: bytes = b""  # server to client
    decryption_key: bytes = b""  # client to server
    encrypt_all: bool = False  # the session encrypts every message (SessionFlags)
    # Session.SigningRequired (MS-SMB2 3.3.5.5.3): the server requires signing, or the
    # client's SESSION_SETUP said it does (client_requires_signing, noted on the way)
    signing_required: bool = False
    client_requires_signing: bool = False
    request_signed: bool = False  # the request being answered came signed (signs)
    salt: bytes = field(default_factory=lambda: os.urandom(32))
    answer_contexts: set[int] = field(default_factory=set)

    @property
    def max_io(self) -> int:
        return LARGE_IO if self.dialect >= SMB210 and self.dialect != WILDCARD else SMALL_IO

    @property
    def smb3(self) -> bool:
        return self.dialect >= SMB300

    def negotiated(self, offer: Offer, dialect: int) -> None:
        self.dialect = dialect
        if dialect == SMB311:
            self.answer_contexts = offer.contexts
            self.cipher = next((c for c in CIPHERS if c in offer.ciphers), 0)
            self.signer = next((s for s in SIGNERS if s in offer.signers), AES_CMAC)
        elif dialect >= SMB300:
            self.cipher = AES128_CCM if offer.capabilities & CAP_ENCRYPTION else 0
            self.signer = AES_CMAC

    def capabilities(self) -> int:
        """NEGOTIATE's Capabilities: LEASING and LARGE_MTU from 2.1 on; ENCRYPTION says 3.0/3.0.2 can
        seal (3.1.1 says it in a context)."""
        large = CAP_LARGE_MTU | CAP_LEASING if self.max_io == LARGE_IO else 0
        return large | (CAP_ENCRYPTION if self.cipher and self.dialect < SMB311 else 0)

    def contexts(self) -> tuple[bytes, int]:
        """The 3.1.1 NEGOTIATE response's context list (each 8-aligned) and its count: the
        preauth hash, and the cipher and signing choices for the client that asked them
        (cipher 0: none in common, MS-SMB2 3.3.5.4)."""
        items = [(PREAUTH, struct.pack("<HHH", 1, len(self.salt), SHA512) + self.salt)]
        if ENCRYPTION in self.answer_contexts:
            items.append((ENCRYPTION, struct.pack("<HH", 1, self.cipher)))
        if SIGNING in self.answer_contexts:
            items.append((SIGNING, struct.pack("<HH", 1, self.signer)))
        out = b""
        for kind, data in items:
            out += b"\0" * (-len(out) % 8) + CONTEXT.pack(kind, len(data), 0) + data
        return out, len(items)

    # --- preauth integrity (3.1.1)

    def hash_negotiate(self, request: bytes, response: bytes) -> None:
        if self.dialect == SMB311:
            first = hashlib.sha512(b"\0" * 64 + request).digest()
            self.preauth = hashlib.sha512(first + response).digest()

    def hash_session(self, message: bytes) -> None:
        if self.dialect != SMB311:
            return
        if self.session_preauth is None:
            self.session_preauth = self.preauth
        self.session_preauth = hashlib.sha512(self.session_preauth + message).digest()

    def reset_session(self) -> None:
        self.session_preauth = None
        self.signing_key = self.encryption_key = self.decryption_key = b""
        self.encrypt_all = self.signing_required = False

    # --- keys

    def session_established(self, session_id: int, session_key: bytes, encrypt_all: bool,
                            signing_required: bool = False) -> None:
        """Derive the session's keys (MS-SMB2 3.3.5.5.3) from the NTLM session key;
        `signing_required`: the server requires signing of this session."""
        self.session_id = session_id
        self.signing_required = signing_required or self.client_requires_signing
        key = session_key[:16]
        if self.dialect == SMB311:
            context = self.session_preauth or self.preauth
            self.signing_key = kdf(key, b"SMBSigningKey\0", context)
            size = 32 if self.cipher in (AES256_CCM, AES256_GCM) else 16
            self.decryption_key = kdf(key, b"SMBC2SCipherKey\0", context, size)
            self.encryption_key = kdf(key, b"SMBS2CCipherKey\0", context, size)
        elif self.smb3:
            self.signing_key = kdf(key, b"SMB2AESCMAC\0", b"SmbSign\0")
            self.decryption_key = kdf(key, b"SMB2AESCCM\0", b"ServerIn \0")
            self.encryption_key = kdf(key, b"SMB2AESCCM\0", b"ServerOut\0")
        else:
            self.signing_key = key
        self.encrypt_all = encrypt_all and bool(self.cipher)

    def keylog_line(self, session_key: bytes) -> bytes:
        """The session in Wireshark's SMB2 "Secret session keys" table (the UAT file
        smb2_seskey_list): session id as on the wire, session key, server-to-client and
        client-to-server keys, in hex (a UAT file's byte fields are unquoted)."""
        fields = (struct.pack("<Q", self.session_id), session_key[:16], self.encryption_key,
                  self.decryption_key)
        return ",".join(f.hex() for f in fields).encode() + b"\n"

    # --- signing

    def signature(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The 16-byte signature of a message given whole or in parts, the first holding the
        64-byte header (its Signature field zero, SIGNED set): parts spare copying a WRITE."""
        if not self.smb3:
            digest = hmac.new(self.signing_key, digestmod=hashlib.sha256)
            for part in parts:
                digest.update(part)
            return digest.digest()[:16]
        if self.signer == AES_GMAC:
            message_id, flags = struct.unpack_from("<Q", parts[0], 24)[0], parts[0][16]
            role = 1 if flags & SERVER_TO_REDIR else 0  # bit 1 (CANCEL) never set: no async
            nonce = struct.pack("<QI", message_id, role)
            return AESGCM(self.signing_key).encrypt(nonce, b"", b"".join(parts))
        mac = cmac.CMAC(algorithms.AES(self.signing_key))
        for part in parts:
            mac.update(cast(bytes, part))  # typed bytes, takes any buffer: no 8 MiB copy
        return mac.finalize()

    def signs(self, request_flags: int, command: int) -> bool:
        """Whether a response is signed (MS-SMB2 3.3.4.1.1): when its request was, or the
        session requires signing; the final SESSION_SETUP response always (3.3.5.5.3).
        (impacket signed every response of a session: a signed 8 MiB READ costs a third of
        its time, for a client that did not ask.)"""
        return bool(request_flags & SIGNED) or self.signing_required or command == 0x0001

    def refusal(self, message: bytes | bytearray | memoryview) -> str | None:
        """Why one unsealed request (a message of a chain) fails the session's signing rule
        (MS-SMB2 3.3.5.2.4: a signed request must verify; an unsigned one is refused when
        the session requires signing), or None. NEGOTIATE and SESSION_SETUP come before
        the session's key (or start a new session); CANCEL is not signed on Windows.

        impacket's server never checks a request's signature (it computes one and throws
        it away): this is the lab's check, called by the engine's Handler for every chain."""
        if not self.signing_key:
            return None  # no session yet, or an anonymous one: nothing to sign with
        command, flags = struct.unpack_from("<HHI", message, 12)[::2]
        if command in UNSIGNED_COMMANDS:
            return None
        if not flags & SIGNED:
            return "unsigned, and the session requires signing" if self.signing_required else None
        view = memoryview(message)
        if not hmac.compare_digest(self.signature(bytes(view[:48]) + bytes(16), view[64:]),
                                   bytes(view[48:64])):
            return "bad signature"
        return None

    def sign(self, message: bytes) -> bytes:
        """`message` signed: SIGNED set, the signature in place."""
        packet = bytearray(message)
        packet[16] |= SIGNED
        packet[48:64] = b"\0" * 16
        packet[48:64] = self.signature(packet)
        return bytes(packet)

    # --- encryption

    def _aead(self, key: bytes) -> tuple[AESCCM | AESGCM, int]:
        if self.cipher in (AES128_GCM, AES256_GCM):
            return AESGCM(key), 12
        return AESCCM(key, tag_length=16), 11

    def decrypt(self, message: bytes) -> bytes:
        """The SMB2 message inside a transform header; Refused if it is not this session's
        or does not authenticate."""
        if len(message) < TRANSFORM.size + 64 or not self.decryption_key:
            raise Refused("an encrypted message before any session could encrypt")
        _, tag, nonce, size, _, _, session = TRANSFORM.unpack_from(message)
        if session != self.session_id or size != len(message) - TRANSFORM.size:
            raise Refused("an encrypted message of another session, or of the wrong length")
        cipher, nonce_size = self._aead(self.decryption_key)
        try:
            return cipher.decrypt(nonce[:nonce_size], message[TRANSFORM.size:] + tag, message[20:52])
        except Exception as error:  # cryptography's InvalidTag
            raise Refused("an encrypted message that does not authenticate") from error

    def encrypt(self, message: bytes | bytearray) -> bytes:
        cipher, nonce_size = self._aead(self.encryption_key)
        nonce = os.urandom(nonce_size).ljust(16, b"\0")
        header = TRANSFORM.pack(TRANSFORM_MAGIC, b"\0" * 16, nonce, len(message), 0, 1,
                                self.session_id)
        sealed = memoryview(cipher.encrypt(nonce[:nonce_size], message, header[20:]))
        return b"".join((header[:4], sealed[-16:], header[20:], sealed[:-16]))  # one copy
