"""HTTP basic auth against bcrypt hashes, with successful checks remembered.

bcrypt is slow on purpose (tens to hundreds of milliseconds a check), far too slow to run
for every scrape: a user and password that matched once are remembered, keyed by a
SHA-256 of the two, so later requests with them cost a hash, not a bcrypt. Failed checks
are not remembered. An unknown user is checked against a dummy hash, so that the time
taken does not tell which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Mapping

import bcrypt

__all__ = ["BasicAuth", "parse_basic"]

_CACHE_SIZE = 1024


def parse_basic(header: bytes | None) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic ...`` header; None when it is
    missing or not basic auth.

    >>> parse_basic(b"Basic " + base64.b64encode(b"prometheus:s3cr:t"))
    ('prometheus', 's3cr:t')
    >>> parse_basic(b"Bearer abc") is None, parse_basic(b"Basic !!") is None
    (True, True)
    """
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class BasicAuth:
    """Checks users and passwords against ``users`` (user name to bcrypt hash)."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._known: set[bytes] = set()
        self._lock = threading.Lock()
        self._dummy: bytes | None = None

    @staticmethod
    def _key(user: str, password: str) -> bytes:
        return hashlib.sha256(f"{len(user)}:{user}:{password}".encode()).digest()

    def remembered(self, user: str, password: str) -> bool:
        """Whether this user and password matched before (cheap: no bcrypt)."""
        with self._lock:
            return self._key(user, password) in self._known

    def check(self, user: str, password: str) -> bool:
        """Whether the password is the user's (runs bcrypt unless it matched before)."""
        key = self._key(user, password)
        with self._lock:
            if key in self._known:
                return True
        hashed = self._users.get(user)
        if hashed is None:
            hashed = self._dummy_hash()
        try:
            ok = bcrypt.checkpw(password.encode(), hashed) and user in self._users
        except ValueError:  # longer than bcrypt's 72 bytes, or a malformed hash
            ok = False
        if ok:
            with self._lock:
                if len(self._known) >= _CACHE_SIZE:
                    self._known.clear()
                self._known.add(key)
        return ok

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            cost = next(iter(self._users.values()), b"$2b$10$")[4:6]
            rounds = int(cost) if cost.isdigit() else 10
            self._dummy = bcrypt.hashpw(b"driftline", bcrypt.gensalt(rounds))
        return self._dummy
