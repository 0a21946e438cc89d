# -*- test-case-name: tests.unit.test_plugin_basic_auth -*-
"""Checking a client's secret: what basic-auth and ldap-auth share (oauth2 reads one too).

Both read ``<scheme> <base64(user:password)>`` from a header the way Kong does
(:func:`parse_user_pass`; :func:`b64decode_loose` is ``ngx.decode_base64``), verify
the password with slow work kept off the reactor thread (:func:`run_in_thread`: a
KDF, an LDAP bind; :func:`with_timeout` bounds the wait on the node's clock), and
remember a verified one as a keyed digest (:class:`SecretDigests`) so that the
slow work runs once per stored secret, not once per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

__all__ = [
    "SecretDigests",
    "b64decode_loose",
    "parse_user_pass",
    "run_in_thread",
    "with_timeout",
]

T = TypeVar("T")


def b64decode_loose(text: str) -> bytes | None:
    """Standard base64 like ``ngx.decode_base64``: padding optional, anything else fails."""
    text = text.strip()
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


_USER_PASS = re.compile(r"([^:]+):(.+)")


def parse_user_pass(value: str | None, scheme: re.Pattern[str]) -> tuple[str, str] | None:
    """``(username, password)`` of a ``<scheme> <b64(user:pass)>`` header value, or None.

    ``scheme`` captures the base64 part in group 1 (basic-auth's ``Basic``,
    ldap-auth's ``ldap``); both plugins decode and split the same way.
    """
    if value is None:
        return None
    m = scheme.search(value)
    if m is None:
        return None
    raw = b64decode_loose(m.group(1))
    if raw is None:
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = _USER_PASS.search(decoded)
    if parts is None:
        return None
    return parts.group(1), parts.group(2)


async def run_in_thread(reactor: Any, fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in the reactor's thread pool (inline for test clocks without one)."""
    if reactor is not None and IReactorThreads.providedBy(reactor):
        result: T = await deferToThreadPool(reactor, reactor.getThreadPool(), fn)
        return result
    return fn()


async def with_timeout(clock: Any, seconds: float, work: Awaitable[T]) -> T:
    """``work``, or :class:`TimeoutError` after ``seconds`` on the node's clock.

    The timer goes through :class:`kongtx.clock.Clock` (the one timer owner);
    ``work`` is cancelled when the time is up.
    """
    d: Deferred[T] = Deferred.fromCoroutine(_awaiting(work))
    timed_out = []

    def expire() -> None:
        timed_out.append(True)
        d.cancel()

    call = clock.call_later(seconds, expire)
    try:
        return await d
    except CancelledError:
        if timed_out:
            raise TimeoutError(f"timed out after {seconds}s") from None
        raise
    finally:
        if call.active():
            call.cancel()


async def _awaiting(work: Awaitable[T]) -> T:
    return await work


class SecretDigests:
    """Remember, per stored secret, a keyed digest of the secret that matched it.

    Why: basic-auth passwords are stored with a slow KDF (SPEC's top table), and
    running scrypt on every request would cost ~50 ms of CPU each.  After one
    slow verification the handler keeps ``HMAC(process key, password)`` for that
    stored value; later requests compare digests in constant time.  The process
    key is random and never leaves memory, so the digests are useless elsewhere,
    and a changed stored value (a new password) misses the memo.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._key = os.urandom(32)
        self._limit = limit
        self._memo: dict[str, bytes] = {}

    def digest(self, secret: str) -> bytes:
        """The keyed digest of ``secret``."""
        return hmac.new(
            self._key, secret.encode("utf-8", "surrogateescape"), hashlib.sha256
        ).digest()

    def matches(self, stored: str, secret: str) -> bool | None:
        """True/False when ``stored`` was verified before, ``None`` when unknown."""
        known = self._memo.get(stored)
        if known is None:
            return None
        return hmac.compare_digest(known, self.digest(secret))

    def remember(self, stored: str, secret: str) -> None:
        """Remember that ``secret`` matched ``stored``."""
        if len(self._memo) >= self._limit:
            self._memo.pop(next(iter(self._memo)))
        self._memo[stored] = self.digest(secret)
