# -*- test-case-name: tests.unit.test_invalidation -*-
"""Which cache keys a committed change of a row makes stale (SPEC §6.4, §7.4).

One pure function, used twice: by the local DAO listener right after commit, and
by the cluster layer when a change made on another node arrives (from gossip or
from the durable event log).  Keys are taken from both the old and the new row,
and creates invalidate too, because our cache keeps negative entries (a key that
was looked up and not found must be forgotten once it exists).

Kong 0.9's known invalidation gaps (SPEC §6.4) are closed here: the SNI lookup
``apis:<host>`` is cleared with its API, and consumers are cached by id only.

A key ending in ``*`` means "every key with this prefix".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kongtx.cache import Cache
from kongtx.store.interface import ChangeType, Row

#: The router's cache key (Kong's name for the whole API table).
ROUTER_KEY = "ALL_APIS_BY_DIC"
#: Prefix of the compiled per-API plugin chains (kongtx.plugins.runtime).
CHAIN_PREFIX = "plugins_chain:"

# collection -> (cache key prefix, column) pairs: "<prefix>:<row[column]>"
_CREDENTIAL_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "keyauth_credentials": (("keyauth_credentials", "key"),),
    "basicauth_credentials": (("basicauth_credentials", "username"),),
    "hmacauth_credentials": (("hmacauth_credentials", "username"),),
    "jwt_secrets": (("jwtauth_credentials", "key"),),
    "oauth2_credentials": (("oauth2_credentials", "client_id"), ("oauth2_credentials", "id")),
    "oauth2_tokens": (("oauth2_token", "access_token"),),
    "acls": (("acls", "consumer_id"),),
}


def chain_key(api_id: str) -> str:
    """The cache key of an API's compiled plugin chain (``plugins_chain:<api_id>``)."""
    return f"{CHAIN_PREFIX}{api_id}"


def plugin_key(name: str, api_id: str | None, consumer_id: str | None) -> str:
    """``plugins:<name>[:<api_id>][:<consumer_id>]``, Kong's plugin-config cache key."""
    key = f"plugins:{name}"
    if api_id:
        key += f":{api_id}"
    if consumer_id:
        key += f":{consumer_id}"
    return key


def _rows(old: Row | None, new: Row | None) -> Iterable[Row]:
    return [r for r in (old, new) if r is not None]


def keys_for(collection: str, old: Row | None, new: Row | None) -> list[str]:
    """Every cache key a change of one row of ``collection`` invalidates."""
    keys: list[str] = []
    rows = _rows(old, new)
    if collection == "apis":
        keys.append(ROUTER_KEY)
        for row in rows:
            keys += [f"apis:{row['id']}", f"ssl:{row['id']}", chain_key(row["id"])]
            if row.get("request_host"):
                keys.append(f"apis:{str(row['request_host']).lower()}")
    elif collection == "consumers":
        for row in rows:
            keys += [f"consumers:{row['id']}", f"acls:{row['id']}"]
    elif collection == "plugins":
        for row in rows:
            api_id, consumer_id = row.get("api_id"), row.get("consumer_id")
            keys.append(plugin_key(row["name"], api_id, consumer_id))
            # a global plugin belongs to every API's chain
            keys.append(chain_key(api_id) if api_id else f"{CHAIN_PREFIX}*")
            if row["name"] == "ssl":
                keys.append(f"ssl:{api_id}" if api_id else "ssl")
            if row["name"] == "bot-detection":
                keys.append(f"bot_detection:{api_id}:*" if api_id else "bot_detection:*")
    elif collection == "upstreams":
        # issue 9: the balancer looks upstreams up by name (an API's upstream_url
        # host, with negative entries) and by id, and a target list by upstream id
        for row in rows:
            keys += [f"upstreams:{row['name']}", f"upstreams:{row['id']}", f"targets:{row['id']}"]
    elif collection == "targets":
        for row in rows:
            keys.append(f"targets:{row['upstream_id']}")
    elif collection in _CREDENTIAL_KEYS:
        for row in rows:
            for prefix, column in _CREDENTIAL_KEYS[collection]:
                if row.get(column) is not None:
                    keys.append(f"{prefix}:{row[column]}")
    return list(dict.fromkeys(keys))


def apply(cache: Cache, keys: Iterable[str]) -> None:
    """Invalidate ``keys`` (``*``-suffixed ones as prefixes) in ``cache``."""
    for key in keys:
        if key.endswith("*"):
            cache.invalidate_prefix(key[:-1])
        else:
            cache.invalidate(key)


def listener(cache: Cache) -> Callable[[str, ChangeType, Row | None, Row | None], None]:
    """A DAO listener that invalidates the local cache after each commit."""

    def on_change(collection: str, type: ChangeType, old: Row | None, new: Row | None) -> None:
        apply(cache, keys_for(collection, old, new))

    return on_change
