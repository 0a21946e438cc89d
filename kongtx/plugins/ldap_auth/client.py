# -*- test-case-name: tests.unit.test_plugin_ldap_auth -*-
"""One LDAP simple bind with ldap3, as a blocking call meant for a worker thread.

Why ldap3 in a thread: it is a well-kept, pure-Python LDAP client, but
synchronous; the handler runs :meth:`LdapBinder.bind` through the reactor's
thread pool with a timeout on the node's clock, so a slow or silent LDAP
server never blocks the reactor.  ldap3's own connect and receive timeouts are
set to the same value so that the worker thread ends too.

Each check opens its own connection (optionally upgraded with StartTLS) and
closes it: successful binds are cached for ``cache_ttl`` by the handler, so the
server only sees a bind per user and period.
"""

from __future__ import annotations

import math
import ssl
import warnings

with warnings.catch_warnings():
    # ldap3 2.9 imports names pyasn1 has deprecated; nothing we can act on
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldap3 import NONE, SIMPLE, Connection, Server, Tls
    from ldap3.core.exceptions import LDAPException, LDAPPasswordIsMandatoryError
    from ldap3.core.results import RESULT_INVALID_CREDENTIALS
    from ldap3.utils.dn import escape_rdn

__all__ = ["LdapBinder", "LdapUnavailable", "bind_dn"]


class LdapUnavailable(Exception):
    """The LDAP server could not be reached or talked to (the handler answers 500)."""


def bind_dn(attribute: str, username: str, base_dn: str) -> str:
    """``<attribute>=<username>,<base_dn>`` with the user's part escaped.

    Kong 0.9 pasted the username in as-is, so ``bob,ou=admins`` could pick another
    branch of the directory; escaping keeps the user inside ``base_dn``.
    """
    return f"{attribute}={escape_rdn(username)},{base_dn}"


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
    ) -> None:
        self.host = host
        self.port = port
        self.start_tls = start_tls
        self.verify_host = verify_host
        self.timeout = timeout
        self.ca_file = ca_file

    def _server(self) -> Server:
        tls = Tls(
            validate=ssl.CERT_REQUIRED if self.verify_host else ssl.CERT_NONE,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=self.ca_file,
        )
        return Server(
            self.host,
            port=self.port,
            use_ssl=False,
            get_info=NONE,
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
        conn = Connection(
            self._server(),
            user=dn,
            password=password,
            authentication=SIMPLE,
            auto_bind=False,
            # ldap3 packs this into SO_RCVTIMEO as an integer: whole seconds, at least one
            receive_timeout=max(1, math.ceil(self.timeout)),
            raise_exceptions=False,
            read_only=True,
        )
        try:
            conn.open()
            if self.start_tls and not conn.start_tls():
                raise LdapUnavailable(f"StartTLS with {self.host}:{self.port} failed")
            if conn.bind():
                return True
            result = conn.result or {}
            if result.get("result") == RESULT_INVALID_CREDENTIALS:
                return False
            if result.get("result") in (32, 34):  # noSuchObject, invalidDNSyntax
                return False
            raise LdapUnavailable(
                f"bind on {self.host}:{self.port} answered {result.get('description')!r}"
            )
        except LDAPPasswordIsMandatoryError:
            return False
        except LDAPException as e:
            raise LdapUnavailable(f"LDAP {self.host}:{self.port}: {type(e).__name__}: {e}") from e
        finally:
            try:
                conn.unbind()
            except LDAPException:
                pass
