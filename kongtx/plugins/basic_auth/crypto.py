# -*- test-case-name: tests.unit.test_plugin_schemas -*-
"""basic-auth password storage: a slow KDF for new passwords, Kong's SHA-1 still verifies.

Why: Kong 0.9 stores SHA1(password .. consumer_id), which a leaked table gives
away at GPU speed.  New and changed passwords are stored as scrypt with a random
salt, in one self-describing string (``scrypt$<n>$<r>$<p>$<salt>$<hash>``, base64)
so the cost can be raised later without breaking stored values.  Values written
by Kong (40 hex digits) keep verifying.  Hashing is slow on purpose: callers run
:func:`hash_password` in a thread, never on the reactor thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

#: scrypt cost: 16 MiB of memory and ~50 ms per hash (the parameters travel with each value)
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_LEGACY_RE = re.compile(r"^[0-9a-f]{40}$")


def is_legacy_hash(stored: str) -> bool:
    """Whether ``stored`` is Kong 0.9's SHA1(password .. consumer_id) hex digest."""
    return _LEGACY_RE.match(stored) is not None


def is_kdf_hash(stored: str) -> bool:
    """Whether ``stored`` is a value produced by :func:`hash_password`."""
    return _parse(stored) is not None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt or not digest:
        return None
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=length,
        maxmem=256 * n * r * p + 2**20,
    )


def hash_password(password: str) -> str:
    """A new salted scrypt value for ``password`` (slow: call it in a thread)."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def legacy_hash(password: str, consumer_id: str) -> str:
    """Kong 0.9's stored form: hex SHA1(password .. consumer_id)."""
    return hashlib.sha1((password + consumer_id).encode("utf-8")).hexdigest()


def verify_basicauth_password(stored: str, password: str, consumer_id: str) -> bool:
    """Whether ``password`` matches ``stored`` (scrypt or legacy SHA-1), in constant time.

    Slow for scrypt values: the auth plugin should call it in a thread.
    """
    parsed = _parse(stored)
    if parsed is not None:
        n, r, p, salt, digest = parsed
        try:
            candidate = _scrypt(password, salt, n, r, p, len(digest))
        except (ValueError, MemoryError):
            return False
        return hmac.compare_digest(candidate, digest)
    if is_legacy_hash(stored):
        return hmac.compare_digest(legacy_hash(password, consumer_id or ""), stored)
    return False
