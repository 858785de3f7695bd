"""SASL for SMTP AUTH and POP3 AUTH, sans-IO: PLAIN, LOGIN and CRAM-MD5.

An Exchange is driven with base64 lines exactly as they travel (RFC 4954, RFC 5034): it
answers with a challenge to send, or with the outcome. CRAM-MD5 needs the password in
clear, so it is offered only when the store keeps it ([auth] keep_plaintext).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..credentials import Credentials


@dataclass(frozen=True)
class Outcome:
    user: str | None  # who logged in; None when the credentials were wrong
    login: str  # the name the client gave, for the journal
    secret: str  # what to mask in the journal
    error: str = ""  # "cancelled" or "malformed": the exchange itself failed


def mechanisms(credentials: Credentials, cram: bool) -> list[str]:
    return ["PLAIN", "LOGIN"] + (["CRAM-MD5"] if cram else [])


Step = Generator[bytes, bytes, Outcome]


def _plain(credentials: Credentials, hostname: str) -> Step:
    response = yield b""
    parts = response.split(b"\0")
    if len(parts) != 3:
        return Outcome(None, "", "", "malformed")
    authzid, login, password = (part.decode("utf-8", "replace") for part in parts)
    user = credentials.check(login, password)
    if authzid and user is not None and credentials.name(authzid) != user:
        user = None  # acting as someone else: not in this lab
    return Outcome(user, login, password)


def _login(credentials: Credentials, hostname: str) -> Step:
    login = (yield b"Username:").decode("utf-8", "replace")
    password = (yield b"Password:").decode("utf-8", "replace")
    return Outcome(credentials.check(login, password), login, password)


def _cram_md5(credentials: Credentials, hostname: str) -> Step:
    challenge = f"<{os.getpid()}.{os.urandom(6).hex()}.{int(time.time())}@{hostname}>".encode()
    response = (yield challenge).decode("utf-8", "replace")
    login, _, digest = response.rpartition(" ")
    known = credentials.plaintext(login) if login else None
    if known is None:
        return Outcome(None, login, digest)
    expected = hmac.new(known[1].encode(), challenge, "md5").hexdigest()
    ok = hmac.compare_digest(expected, digest.lower())
    return Outcome(known[0] if ok else None, login, digest)


MECHANISMS = {"PLAIN": _plain, "LOGIN": _login, "CRAM-MD5": _cram_md5}


class Exchange:
    """One AUTH exchange. `start()` and `respond()` return (challenge to send as base64,
    None) while it goes on, then (None, Outcome)."""

    def __init__(self, mechanism: str, credentials: Credentials, hostname: str) -> None:
        self.mechanism = mechanism
        self._steps = MECHANISMS[mechanism](credentials, hostname)

    def start(self, initial: str | None) -> tuple[str | None, Outcome | None]:
        challenge = next(self._steps)
        if initial is None:
            return base64.b64encode(challenge).decode(), None
        # "=" is an empty initial response (RFC 4954 section 4).
        return self.respond("" if initial == "=" else initial)

    def respond(self, line: str) -> tuple[str | None, Outcome | None]:
        if line.strip() == "*":
            return None, Outcome(None, "", "", "cancelled")
        try:
            data = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None, Outcome(None, "", "", "malformed")
        try:
            return base64.b64encode(self._steps.send(data)).decode(), None
        except StopIteration as done:
            return None, done.value
