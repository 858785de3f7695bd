"""The SPNEGO mechListMIC impacket's server never sends (upstream fortra/impacket#1883),
and the NTLM CHALLENGE flag it never echoes (NEGOTIATE_SEAL).

A client that insists on signing (Samba's `--client-protection sign`; Windows 11 24H2 and
Server 2025 require signing by default) checks that the server's final SPNEGO answer
carries a MIC over the mechanism list the client offered, signed with the NTLM session's
server-to-client keys (RFC 4178 section 5, MS-NLMP 3.4.4.2). impacket answers with a bare
accept-completed, so those clients give up with ACCESS_DENIED. This builds that answer.
"""

from __future__ import annotations

import struct

from Cryptodome.Cipher import ARC4
from impacket import ntlm
from impacket.spnego import SPNEGO_NegTokenInit, asn1encode


def offered_mechanisms(blob: bytes) -> bytes | None:
    """The DER MechTypeList of a client's NegTokenInit (what the MIC covers), if it is one."""
    if blob[:1] != b"\x60":
        return None
    try:
        mechanisms = SPNEGO_NegTokenInit(blob)["MechTypes"]
    except Exception:  # not SPNEGO after all: impacket will answer it
        return None
    return b"\x30" + asn1encode(b"".join(b"\x06" + asn1encode(m) for m in mechanisms))


def accept_with_mic(mechanisms: bytes, flags: int, session_key: bytes) -> bytes:
    """NegTokenResp { negState accept-completed, mechListMIC } for an NTLM session."""
    sign_key = ntlm.SIGNKEY(flags, session_key, "Server")
    seal_key = ntlm.SEALKEY(flags, session_key, "Server")
    handle = ARC4.new(seal_key).encrypt
    mic = ntlm.MAC(flags, handle, sign_key, 0, mechanisms).getData()
    body = (b"\xa0" + asn1encode(b"\x0a\x01\x00")  # negState: accept-completed
            + b"\xa3" + asn1encode(b"\x04" + asn1encode(mic)))  # mechListMIC
    return b"\xa1" + asn1encode(b"\x30" + asn1encode(body))


def echo_seal(token: bytes, client_flags: int) -> bytes:
    """impacket's CHALLENGE with NTLMSSP_NEGOTIATE_SEAL set when the client asked for it
    (MS-NLMP 3.2.5.1.1: the server answers what it supports of what was asked). impacket
    echoes SIGN but not SEAL, and a client that wants SMB 3 encryption (Samba's
    `--client-protection encrypt`) then gives up (SEC_E_UNSUPPORTED_FUNCTION). The flags
    sit at a fixed place: the token keeps its length."""
    at = token.find(b"NTLMSSP\x00\x02\x00\x00\x00")
    if at < 0 or not client_flags & ntlm.NTLMSSP_NEGOTIATE_SEAL or len(token) < at + 24:
        return token
    flags = struct.unpack_from("<I", token, at + 20)[0] | ntlm.NTLMSSP_NEGOTIATE_SEAL
    return token[:at + 20] + struct.pack("<I", flags) + token[at + 24:]
