# -*- test-case-name: tests.unit.test_plugin_ldap_auth -*-
"""One LDAP simple bind with ldap3, as a blocking call meant for a worker thread.

Why ldap3 in a thread: it is a well-kept, pure-Python LDAP client, but
synchronous; the handler runs :meth:`LdapBinder.bind` through the reactor's
thread pool with a timeout on the node's clock, so a slow or silent LDAP
server never blocks the reactor.  ldap3's own connect and receive timeouts are
set to the same value so that the worker thread ends too.

Connections are kept for ``keepalive`` (Kong's setting, ms in the plugin config):
after a bind (accepted or refused) the connection, StartTLS included, goes back to
a small idle pool and the next bind re-binds on it instead of opening a new TCP
(and TLS) session.  An idle connection older than ``keepalive`` is closed when the
pool is next used (Kong's cosockets closed it on a timer; nothing here runs
between binds).  A pooled connection the server has closed costs one retry on a
fresh one.  Successful binds are also cached for ``cache_ttl`` by the handler, so
the server only sees a bind per user and period.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class _Ldap3:
    """The ldap3 names this module uses, imported on first use.

    ldap3 (with pyasn1) adds megabytes to every process that imports it; a node
    whose APIs never use ldap-auth should not carry them.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # ldap3 2.9 imports names pyasn1 has deprecated; nothing we can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            import ldap3
            from ldap3.core import exceptions, results
            from ldap3.utils.dn import escape_rdn
        self.NONE = ldap3.NONE
        self.SIMPLE = ldap3.SIMPLE
        self.Connection = ldap3.Connection
        self.Server = ldap3.Server
        self.Tls = ldap3.Tls
        self.LDAPException: type[Exception] = exceptions.LDAPException
        self.LDAPPasswordIsMandatoryError: type[Exception] = exceptions.LDAPPasswordIsMandatoryError
        self.RESULT_INVALID_CREDENTIALS: int = results.RESULT_INVALID_CREDENTIALS
        self.escape_rdn: Callable[[str], str] = escape_rdn


_loaded: list[_Ldap3] = []


def ldap3_names() -> _Ldap3:
    """ldap3, imported once (from any thread: the import lock serialises it)."""
    if not _loaded:
        _loaded.append(_Ldap3())
    return _loaded[0]


__all__ = ["LdapBinder", "LdapUnavailable", "bind_dn"]

#: idle connections kept per LDAP server and plugin configuration
MAX_IDLE = 8


class LdapUnavailable(Exception):
    """The LDAP server could not be reached or talked to (the handler answers 500)."""


def bind_dn(attribute: str, username: str, base_dn: str) -> str:
    """``<attribute>=<username>,<base_dn>`` with the user's part escaped.

    Kong 0.9 pasted the username in as-is, so ``bob,ou=admins`` could pick another
    branch of the directory; escaping keeps the user inside ``base_dn``.
    """
    return f"{attribute}={ldap3_names().escape_rdn(username)},{base_dn}"


class LdapBinder:
    """Binds to one LDAP server (host, port, StartTLS, certificate checks, timeout)."""

    def __init__(
        self,
        host: str,
        port: int,
        start_tls: bool = False,
        verify_host: bool = False,
        timeout: float = 10.0,
        ca_file: str | None = None,
        keepalive: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.start_tls = start_tls
        self.verify_host = verify_host
        self.timeout = timeout
        self.ca_file = ca_file
        #: seconds an idle connection may wait in the pool; 0 closes each after use
        self.keepalive = keepalive
        self._now = now
        #: (idle since, connection); binds run in several worker threads at once
        self._idle: list[tuple[float, Any]] = []  # (since, ldap3 Connection)
        self._lock = threading.Lock()
        #: connections opened so far (what keepalive saves shows here)
        self.opened = 0

    def _server(self) -> Any:
        lib = ldap3_names()
        tls = lib.Tls(
            validate=ssl.CERT_REQUIRED if self.verify_host else ssl.CERT_NONE,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=self.ca_file,
        )
        return lib.Server(
            self.host,
            port=self.port,
            use_ssl=False,
            get_info=lib.NONE,
            connect_timeout=self.timeout,
            tls=tls,
        )

    def bind(self, dn: str, password: str) -> bool:
        """Whether ``dn`` binds with ``password`` (blocking: call it in a thread).

        Raises :class:`LdapUnavailable` when the server cannot be reached, StartTLS
        fails, or the server answers with anything but success or invalid credentials.
        """
        if not password:
            # an empty password is an unauthenticated bind, which servers accept
            return False
        pooled = self._take()
        if pooled is not None:
            try:
                return self._bind_on(pooled, dn, password)
            except LdapUnavailable:
                pass  # the server closed the idle connection: one try on a fresh one
        return self._bind_on(self._open(), dn, password)

    def close(self) -> None:
        """Close every idle connection (the plugin configuration went away)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            _quietly_unbind(conn)

    def _open(self) -> Any:
        conn = ldap3_names().Connection(
            self._server(),
            auto_bind=False,
            # ldap3 packs this into SO_RCVTIMEO as an integer: whole seconds, at least one
            receive_timeout=max(1, math.ceil(self.timeout)),
            raise_exceptions=False,
            read_only=True,
        )
        with self._closed_on_failure(conn):
            conn.open()
            self.opened += 1
            if self.start_tls and not conn.start_tls():
                raise LdapUnavailable(f"StartTLS with {self.host}:{self.port} failed")
        return conn

    def _bind_on(self, conn: Any, dn: str, password: str) -> bool:
        """One simple bind on an open connection; the connection is pooled or closed."""
        lib = ldap3_names()
        with self._closed_on_failure(conn):
            try:
                bound = conn.rebind(user=dn, password=password, authentication=lib.SIMPLE)
            except lib.LDAPPasswordIsMandatoryError:
                self._give_back(conn)
                return False
            result = conn.result or {}
            # invalid credentials, noSuchObject, invalidDNSyntax: a refusal, not an outage
            if bound or result.get("result") in (lib.RESULT_INVALID_CREDENTIALS, 32, 34):
                self._give_back(conn)
                return bool(bound)
            description = result.get("description") or conn.last_error
            raise LdapUnavailable(f"bind on {self.host}:{self.port} answered {description!r}")

    @contextmanager
    def _closed_on_failure(self, conn: Any) -> Iterator[None]:
        """Close ``conn`` when the block fails; ldap3's errors become LdapUnavailable."""
        try:
            yield
        except ldap3_names().LDAPException as e:
            _quietly_unbind(conn)
            raise LdapUnavailable(f"LDAP {self.host}:{self.port}: {type(e).__name__}: {e}") from e
        except LdapUnavailable:
            _quietly_unbind(conn)
            raise

    def _take(self) -> Any:
        """The most recently used idle connection; stale ones are closed on the way."""
        now = self._now()
        with self._lock:
            fresh = [(t, c) for t, c in self._idle if now - t <= self.keepalive and not c.closed]
            stale = [c for t, c in self._idle if (t, c) not in fresh]
            found = fresh.pop()[1] if fresh else None
            self._idle = fresh
        for conn in stale:
            _quietly_unbind(conn)
        return found

    def _give_back(self, conn: Any) -> None:
        if self.keepalive > 0:
            with self._lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append((self._now(), conn))
                    return
        _quietly_unbind(conn)


def _quietly_unbind(conn: Any) -> None:
    try:
        conn.unbind()
    except ldap3_names().LDAPException:
        pass
