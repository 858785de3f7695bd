"""Users: a salted hash for password checks, and the derived secrets other schemes need.

SMB's NTLM needs the NT hash (MD4 of the UTF-16LE password), so it is derived when the
password is set. APOP and CRAM-MD5 need the password itself: it is kept only when the
config asks ([auth] keep_plaintext).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ..config import Invalid, check_name
from .db import Database, StoreError, Tx

MIGRATIONS = [
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        pw_hash TEXT NOT NULL,
        nt_hash BLOB NOT NULL,
        plaintext TEXT,
        created REAL NOT NULL,
        changed REAL NOT NULL
    );
    """,
]

ITERATIONS = 100_000  # PBKDF2-SHA256: about 25 ms here; verified logins are cached below
# For a password the lab drew itself, uniformly at random with at least 64 bits (the
# class roster's, services/classroom/roster.py), 1000 rounds (0.25 ms): the iterations
# only slow the guessing of a stolen hash, and 2^64 guesses (x 1000 rounds) is out of
# reach anyway, while the same store keeps the password's NT hash (one unsalted MD4, for
# SMB) beside it: no rounds count would protect a guessable password there. A class of
# 30 is then made in milliseconds instead of 30 x 25 ms of CPU. Human-chosen passwords
# keep ITERATIONS.
RANDOM_ITERATIONS = 1000
RANDOM_BITS = 64


class UserError(StoreError):
    pass


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"pbkdf2_sha256${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_hash(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, got)


def nt_hash(password: str) -> bytes:
    # OpenSSL 3 hides MD4 in its legacy provider; pycryptodomex (an impacket dependency) has it.
    from Cryptodome.Hash import MD4

    return MD4.new(password.encode("utf-16-le")).digest()


@dataclass(frozen=True)
class User:
    name: str
    nt_hash: bytes
    plaintext: str | None
    created: float
    changed: float


class Users:
    def __init__(self, db: Database, keep_plaintext: bool = False) -> None:
        self.db = db
        self.keep_plaintext = keep_plaintext
        # (name, stored hash) -> keyed digest of a password that verified against it, so a
        # lab full of clients logging in again and again pays PBKDF2 once per password.
        self._verified: dict[tuple[str, str], bytes] = {}
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # Called inside the transaction that creates a user: its mailboxes are made this way.
        self.on_add: list[Callable[[Tx, str], None]] = []

    def _secrets(self, password: str, iterations: int = ITERATIONS
                 ) -> tuple[str, bytes, str | None]:
        if not password:
            raise UserError("the password must not be empty")
        return (hash_password(password, iterations=iterations), nt_hash(password),
                password if self.keep_plaintext else None)

    def add(self, name: str, password: str) -> User:
        try:
            check_name(name)
        except Invalid as error:
            raise UserError(error.message) from None
        pw_hash, nt, plain = self._secrets(password)
        now = time.time()
        with self.db.write() as tx:
            if tx.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserError(f"user {name!r} already exists")
            tx.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", (name, pw_hash, nt, plain, now, now)
            )
            tx.changed("users", f"user:{name}")
            for hook in self.on_add:
                hook(tx, name)
        return self.get(name)  # type: ignore[return-value]

    def add_many(self, users: list[tuple[str, str]], random: Collection[str] = ()) -> None:
        """Add (name, password) pairs in one transaction (one fsync for a class of 30, not
        30), hashing in threads first: PBKDF2 releases the GIL. All or none. The names in
        `random` have passwords the lab drew at random with RANDOM_BITS bits or more:
        RANDOM_ITERATIONS rounds for them (see there why that is enough)."""
        from concurrent.futures import ThreadPoolExecutor

        for name, _ in users:
            try:
                check_name(name)
            except Invalid as error:
                raise UserError(error.message) from None
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            hashed = list(pool.map(self._secrets, [password for _, password in users],
                                   [RANDOM_ITERATIONS if name in random else ITERATIONS
                                    for name, _ in users]))
        now = time.time()
        with self.db.write() as tx:
            for (name, _), (pw_hash, nt, plain) in zip(users, hashed, strict=True):
                if tx.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                    raise UserError(f"user {name!r} already exists")
                tx.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                           (name, pw_hash, nt, plain, now, now))
                tx.changed("users", f"user:{name}")
                for hook in self.on_add:
                    hook(tx, name)

    def set_password(self, name: str, password: str) -> None:
        pw_hash, nt, plain = self._secrets(password)
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE users SET pw_hash = ?, nt_hash = ?, plaintext = ?, changed = ? "
                "WHERE name = ?",
                (pw_hash, nt, plain, time.time(), name),
            )
            if not cursor.rowcount:
                raise UserError(f"no user {name!r}")
            tx.changed("users", f"user:{name}")

    def delete(self, name: str) -> None:
        with self.db.write() as tx:
            if not tx.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise UserError(f"no user {name!r}")
            tx.changed("users", f"user:{name}")

    def get(self, name: str) -> User | None:
        row = self.db.one(
            "SELECT name, nt_hash, plaintext, created, changed FROM users WHERE name = ?", (name,)
        )
        return User(*row) if row else None

    def list(self) -> list[User]:
        rows = self.db.query(
            "SELECT name, nt_hash, plaintext, created, changed FROM users ORDER BY name"
        )
        return [User(*row) for row in rows]

    def check(self, name: str, password: str) -> bool:
        """Whether `password` is `name`'s password (False for unknown users)."""
        row = self.db.one("SELECT pw_hash FROM users WHERE name = ?", (name,))
        if row is None:
            # Spend the same time as for a real user so timing does not tell who exists.
            verify_hash(password, hash_password("x", b"0" * 16))
            return False
        key = (name, row[0])
        token = hmac.digest(self._cache_key, password.encode(), "sha256")
        with self._lock:
            if hmac.compare_digest(self._verified.get(key, b""), token):
                return True
        if not verify_hash(password, row[0]):
            return False
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = token
        return True
