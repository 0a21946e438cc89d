# -*- test-case-name: tests.unit.test_plugin_ldap_auth -*-
"""ldap-auth at request time: ``Authorization: ldap <b64(user:pass)>`` checked by a bind (SPEC §4.2).

The bind runs in a worker thread with a timeout (:mod:`kongtx.plugins.ldap_auth.client`).
Where we differ from Kong 0.9, on purpose:

* ``cache_ttl`` is honoured (Kong 0.9 ignored it and kept successes forever);
* the cache holds a keyed digest of the password, never the password itself,
  and its key names the LDAP server and base DN as well as the user
  (``ldap_credentials/<host>:<port>/<base_dn>/<username>``), so a bind accepted by
  one API's directory is never reused for another API's;
* a password that differs from the cached one triggers a fresh bind instead of a
  403, so a user whose password changed is not locked out for ``cache_ttl``;
* identity headers a client sent (``X-Consumer-*``) are removed: ldap
  credentials belong to no consumer.

Concurrent checks of one user are not collapsed into one bind (the cache's
``get_or_load`` would hand one password's verdict to a request with another).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError

from kongtx.plugins.auth_common import CREDENTIAL_USERNAME, INTERNAL_ERROR, AuthPlugin
from kongtx.plugins.auth_secrets import (
    SecretDigests,
    parse_user_pass,
    run_in_thread,
    with_timeout,
)
from kongtx.plugins.base import PhaseResult, PluginServices, RequestContext
from kongtx.plugins.ldap_auth.client import LdapBinder, LdapUnavailable, bind_dn
from kongtx.store.interface import Row

REALM = 'LDAP realm="kong"'
INVALID = {"message": "Invalid authentication credentials"}
_LDAP = re.compile(r"\s*[Ll][Dd][Aa][Pp]\s+(.+)")


def parse_ldap(value: str | None) -> tuple[str, str] | None:
    """``(username, password)`` of an ``ldap <b64(user:pass)>`` header value, or None."""
    return parse_user_pass(value, _LDAP)


class Handler(AuthPlugin):
    """The ldap-auth plugin's request-time half."""

    PRIORITY = 1000

    def __init__(self, config: Mapping[str, Any], services: PluginServices | None = None) -> None:
        super().__init__(config, services)
        assert services is not None  # AuthPlugin refused None already
        self.reactor = services.reactor
        self.clock = services.clock
        self.cache = services.cache
        self.host = str(config["ldap_host"])
        self.port = int(config["ldap_port"])
        self.base_dn = str(config["base_dn"])
        self.attribute = str(config["attribute"])
        self.cache_ttl = float(config.get("cache_ttl", 60))
        #: seconds; the thread's own socket timeouts use the same value
        self.timeout = max(0.001, float(config.get("timeout") or 10000) / 1000)
        self.binder = LdapBinder(
            self.host,
            self.port,
            start_tls=bool(config.get("start_tls")),
            verify_host=bool(config.get("verify_ldap_host")),
            timeout=self.timeout,
            keepalive=float(config.get("keepalive") or 0) / 1000,
        )
        self.digests = SecretDigests()
        reactor = self.reactor

        async def in_thread(fn: Callable[[], bool]) -> bool:
            return await run_in_thread(reactor, fn)

        #: how a blocking bind is run off the reactor thread (tests substitute it)
        self.in_thread: Callable[[Callable[[], bool]], Awaitable[bool]] = in_thread

    def cache_key(self, username: str) -> str:
        """Where a successful bind of ``username`` is remembered."""
        return f"ldap_credentials/{self.host}:{self.port}/{self.base_dn}/{username}"

    def authenticate(self, ctx: RequestContext) -> PhaseResult:
        authorization = ctx.headers.get("authorization")
        proxy_authorization = ctx.headers.get("proxy-authorization")
        if authorization is None and proxy_authorization is None:
            return self.reject(ctx, 401, None, {"WWW-Authenticate": REALM})
        return self._authenticate(ctx, proxy_authorization, authorization)

    async def _authenticate(
        self, ctx: RequestContext, proxy_authorization: str | None, authorization: str | None
    ) -> None:
        try:
            credential = await self._check(parse_ldap(proxy_authorization))
            if credential is None:
                credential = await self._check(parse_ldap(authorization))
        except CancelledError:
            raise
        except (LdapUnavailable, TimeoutError) as e:
            self._log.error(
                "ldap-auth: LDAP server {host}:{port} unavailable: {reason}",
                host=self.host,
                port=self.port,
                reason=str(e),
            )
            ctx.respond(500, INTERNAL_ERROR)
            return
        except Exception:
            # never the password: only where and what failed
            self._log.failure(
                "ldap-auth: checking credentials with {host}:{port} failed",
                host=self.host,
                port=self.port,
            )
            ctx.respond(500, INTERNAL_ERROR)
            return
        if credential is None:
            await self.reject_async(ctx, 403, INVALID)
            return
        if self.hide_credentials:
            ctx.headers.remove("authorization")
            ctx.headers.remove("proxy-authorization")
        self.success(ctx, None, credential)
        ctx.headers.set(CREDENTIAL_USERNAME, str(credential["username"]))

    async def _check(self, given: tuple[str, str] | None) -> Row | None:
        """The credential for ``(username, password)`` when the directory accepts it."""
        if given is None:
            return None
        username, password = given
        key = self.cache_key(username)
        digest = self.digests.digest(password)
        hit, cached = self.cache.peek(key)
        if hit and cached is not None and hmac.compare_digest(cached["digest"], digest):
            return {"username": username}
        dn = bind_dn(self.attribute, username, self.base_dn)
        binder = self.binder
        ok = await with_timeout(
            self.clock, self.timeout + 1, self.in_thread(lambda: binder.bind(dn, password))
        )
        if not ok:
            return None
        self.cache.set(key, {"username": username, "digest": digest}, ttl=self.cache_ttl)
        return {"username": username}
