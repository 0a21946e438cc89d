# -*- test-case-name: tests.unit.test_config -*-
"""One immutable, validated :class:`Config` and the property table it is built from.

Why it looks like this: operators' kong.conf files and ``KONG_*`` variables written for
Kong 0.9 must work unchanged (SPEC §5), and a bad value must stop the node before it
binds anything, with one line per problem that names the property.  So loading is a
pure function of (file text, environment, ``-p``) that either returns a fully typed
:class:`Config` or raises :class:`ConfigError` carrying *every* problem found.

This module holds the property table (which parser reads each property, its default)
and :class:`Config`; reading kong.conf and the ``KONG_*`` environment and validating them
into a Config is :mod:`kongtx.config_loading`; turning one raw value into its typed value,
and back into kong.conf text, is :mod:`kongtx.config_values`.

Precedence, lowest to highest (SPEC §5.1): :data:`DEFAULTS` < the file (``-c``, else the
first existing of :data:`kongtx.config_loading.DEFAULT_PATHS`) < ``KONG_<PROPERTY>`` <
``-p`` (prefix only).

An empty value at any layer means "unset" (as in Kong): the property falls back to
its unset value, which is ``None`` for optional properties, ``()`` for lists and the
built-in default for properties that always need a value.  Environment values are
taken literally (only trimmed): there is no comment syntax in a variable, so a
password containing ``#`` survives; in the file, ``\\#`` escapes a ``#``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from twisted.logger import LogLevel

from kongtx import config_values as parse
from kongtx.config_values import Address as Address
from kongtx.config_values import Parser, format_value
from kongtx.config_values import format_size as format_size
from kongtx.config_values import twisted_log_level as twisted_log_level

#: Properties whose values are replaced by ``******`` in ``GET /`` and debug output.
SENSITIVE: frozenset[str] = frozenset({"pg_password", "cassandra_password", "cluster_encrypt_key"})

#: Printed instead of a sensitive value.
MASK = "******"

LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
#: ``off`` is DB-less mode: the configuration lives in memory, from ``declarative_config``
#: or ``POST /config`` (docs/dbless.md).
DATABASES = ("sqlite", "postgres", "cassandra", "off")
CASSANDRA_CONSISTENCIES = (
    "ALL",
    "EACH_QUORUM",
    "QUORUM",
    "LOCAL_QUORUM",
    "ONE",
    "TWO",
    "THREE",
    "LOCAL_ONE",
)
CASSANDRA_REPL_STRATEGIES = ("SimpleStrategy", "NetworkTopologyStrategy")
CLUSTER_PROFILES = ("local", "lan", "wan")
#: The proxy listeners' HTTP server (kongtx/proxy/fast.py or twisted.web).
PROXY_FRONTENDS = ("fast", "web")

#: nginx's "on"/"off" flags: Kong shows them as strings in ``GET /`` (the rest are booleans).
_NGX_BOOLEANS = frozenset({"nginx_daemon", "lua_code_cache"})

#: Sizes in bytes, shown and written in nginx notation (``128m``).
_SIZES = frozenset({"mem_cache_size", "client_max_header_size", "client_body_buffer_size"})


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Property:
    default: str
    parse: Parser
    #: the value when unset and the default is empty
    empty: Any = None


#: Every property kongtx knows, in kong.conf order: its default and its parser.
PROPERTIES: dict[str, _Property] = {
    "prefix": _Property("/usr/local/kong/", parse.path),
    "log_level": _Property("notice", parse.enum(*LOG_LEVELS)),
    "custom_plugins": _Property("", parse.comma_list, ()),
    "anonymous_reports": _Property("on", parse.boolean),
    "proxy_listen": _Property("0.0.0.0:8000", parse.listen),
    "proxy_listen_ssl": _Property("0.0.0.0:8443", parse.listen),
    "admin_listen": _Property("127.0.0.1:8001", parse.listen),
    # Prometheus /metrics (docs/metrics.md); off unless an address is given
    "status_listen": _Property("off", parse.listen_or_off),
    "trusted_ips": _Property("", parse.trusted_ips, ()),
    "nginx_worker_processes": _Property("auto", parse.worker_processes),
    "nginx_daemon": _Property("on", parse.boolean),
    "nginx_optimizations": _Property("on", parse.boolean),
    "mem_cache_size": _Property("128m", parse.size),
    "ssl": _Property("on", parse.boolean),
    "ssl_cert": _Property("", parse.path),
    "ssl_cert_key": _Property("", parse.path),
    "database": _Property("sqlite", parse.enum(*DATABASES)),
    "sqlite_path": _Property("", parse.string, ""),
    "declarative_config": _Property("", parse.path),
    "pg_host": _Property("127.0.0.1", parse.string),
    "pg_port": _Property("5432", parse.integer(1, 65535)),
    "pg_user": _Property("kong", parse.string),
    "pg_password": _Property("", parse.string),
    "pg_database": _Property("kong", parse.string),
    "pg_ssl": _Property("off", parse.boolean),
    "pg_ssl_verify": _Property("off", parse.boolean),
    # Kong 1.x's key (0.9 had none): connect, pool wait and statement timeout, ms
    "pg_timeout": _Property("5000", parse.integer(1)),
    "cassandra_contact_points": _Property("127.0.0.1", parse.comma_list, ()),
    "cassandra_port": _Property("9042", parse.integer(1, 65535)),
    "cassandra_keyspace": _Property("kong", parse.string),
    "cassandra_consistency": _Property("ONE", parse.enum(*CASSANDRA_CONSISTENCIES)),
    "cassandra_timeout": _Property("5000", parse.integer(1)),
    "cassandra_ssl": _Property("off", parse.boolean),
    "cassandra_ssl_verify": _Property("off", parse.boolean),
    "cassandra_username": _Property("kong", parse.string),
    "cassandra_password": _Property("", parse.string),
    "cassandra_repl_strategy": _Property("SimpleStrategy", parse.enum(*CASSANDRA_REPL_STRATEGIES)),
    "cassandra_repl_factor": _Property("1", parse.integer(1)),
    "cassandra_data_centers": _Property("dc1:2,dc2:3", parse.data_centers, ()),
    "cluster_listen": _Property("0.0.0.0:7946", parse.ipv4_port),
    "cluster_listen_rpc": _Property("127.0.0.1:7373", parse.ipv4_port),
    "cluster_advertise": _Property("", parse.ipv4_port),
    "cluster_encrypt_key": _Property("", parse.encrypt_key),
    "cluster_profile": _Property("wan", parse.enum(*CLUSTER_PROFILES)),
    "cluster_ttl_on_failure": _Property("3600", parse.integer()),
    "dnsmasq": _Property("on", parse.boolean),
    "dnsmasq_port": _Property("8053", parse.integer(1, 65535)),
    "dns_resolver": _Property("", parse.dns_resolver, ()),
    "lua_code_cache": _Property("on", parse.boolean),
    "lua_ssl_trusted_certificate": _Property("", parse.path),
    "lua_ssl_verify_depth": _Property("1", parse.integer(0)),
    "lua_package_path": _Property("?/init.lua;./kong/?.lua", parse.string),
    "lua_package_cpath": _Property("", parse.string),
    "serf_path": _Property("serf", parse.string),
    # kongtx additions (docs/configuration.md says why each exists)
    "db_update_frequency": _Property("5", parse.positive_number),
    "upstream_connect_timeout": _Property("60000", parse.integer(1)),
    "upstream_send_timeout": _Property("60000", parse.integer(1)),
    "upstream_read_timeout": _Property("60000", parse.integer(1)),
    "upstream_keepalive": _Property("60", parse.integer(0)),
    "client_max_header_size": _Property("8k", parse.size),
    "client_body_buffer_size": _Property("8k", parse.size),
    "proxy_frontend": _Property("fast", parse.enum(*PROXY_FRONTENDS)),
}

#: Every property's built-in default, as it would be written in kong.conf ("" = none).
DEFAULTS: Mapping[str, str] = MappingProxyType({k: p.default for k, p in PROPERTIES.items()})


def parse_value(key: str, raw: str) -> Any:
    """Parse ``raw`` for ``key``; empty falls back to the default, then to the unset value."""
    prop = PROPERTIES[key]
    if raw == "":
        raw = prop.default
    if raw == "":
        return prop.empty
    return prop.parse(key, raw)


def _default(key: str) -> Any:
    return parse_value(key, "")


# --------------------------------------------------------------------------- Config


@dataclass(frozen=True)
class Config:
    """The resolved configuration: one attribute per kong.conf property, typed.

    Construct it with :func:`load_config`; ``Config()`` is the all-defaults
    configuration (handy in tests), and ``dataclasses.replace`` derives variants.
    """

    prefix: str = _default("prefix")
    log_level: str = _default("log_level")
    custom_plugins: tuple[str, ...] = _default("custom_plugins")
    anonymous_reports: bool = _default("anonymous_reports")
    proxy_listen: Address = _default("proxy_listen")
    proxy_listen_ssl: Address = _default("proxy_listen_ssl")
    admin_listen: Address = _default("admin_listen")
    status_listen: Address | None = _default("status_listen")
    trusted_ips: tuple[str, ...] = _default("trusted_ips")
    nginx_worker_processes: int | str = _default("nginx_worker_processes")
    nginx_daemon: bool = _default("nginx_daemon")
    nginx_optimizations: bool = _default("nginx_optimizations")
    mem_cache_size: int = _default("mem_cache_size")
    ssl: bool = _default("ssl")
    ssl_cert: str | None = _default("ssl_cert")
    ssl_cert_key: str | None = _default("ssl_cert_key")
    database: str = _default("database")
    sqlite_path: str = _default("sqlite_path")
    declarative_config: str | None = _default("declarative_config")
    pg_host: str = _default("pg_host")
    pg_port: int = _default("pg_port")
    pg_user: str = _default("pg_user")
    pg_password: str | None = _default("pg_password")
    pg_database: str = _default("pg_database")
    pg_ssl: bool = _default("pg_ssl")
    pg_ssl_verify: bool = _default("pg_ssl_verify")
    pg_timeout: int = _default("pg_timeout")
    cassandra_contact_points: tuple[str, ...] = _default("cassandra_contact_points")
    cassandra_port: int = _default("cassandra_port")
    cassandra_keyspace: str = _default("cassandra_keyspace")
    cassandra_consistency: str = _default("cassandra_consistency")
    cassandra_timeout: int = _default("cassandra_timeout")
    cassandra_ssl: bool = _default("cassandra_ssl")
    cassandra_ssl_verify: bool = _default("cassandra_ssl_verify")
    cassandra_username: str | None = _default("cassandra_username")
    cassandra_password: str | None = _default("cassandra_password")
    cassandra_repl_strategy: str = _default("cassandra_repl_strategy")
    cassandra_repl_factor: int = _default("cassandra_repl_factor")
    cassandra_data_centers: tuple[str, ...] = _default("cassandra_data_centers")
    cluster_listen: Address = _default("cluster_listen")
    cluster_listen_rpc: Address = _default("cluster_listen_rpc")
    cluster_advertise: Address | None = _default("cluster_advertise")
    cluster_encrypt_key: str | None = _default("cluster_encrypt_key")
    cluster_profile: str = _default("cluster_profile")
    cluster_ttl_on_failure: int = _default("cluster_ttl_on_failure")
    dnsmasq: bool = _default("dnsmasq")
    dnsmasq_port: int = _default("dnsmasq_port")
    dns_resolver: tuple[Address, ...] = _default("dns_resolver")
    lua_code_cache: bool = _default("lua_code_cache")
    lua_ssl_trusted_certificate: str | None = _default("lua_ssl_trusted_certificate")
    lua_ssl_verify_depth: int = _default("lua_ssl_verify_depth")
    lua_package_path: str = _default("lua_package_path")
    lua_package_cpath: str | None = _default("lua_package_cpath")
    serf_path: str = _default("serf_path")
    db_update_frequency: float = _default("db_update_frequency")
    upstream_connect_timeout: int = _default("upstream_connect_timeout")
    upstream_send_timeout: int = _default("upstream_send_timeout")
    upstream_read_timeout: int = _default("upstream_read_timeout")
    upstream_keepalive: int = _default("upstream_keepalive")
    client_max_header_size: int = _default("client_max_header_size")
    client_body_buffer_size: int = _default("client_body_buffer_size")
    proxy_frontend: str = _default("proxy_frontend")

    def __post_init__(self) -> None:
        # The prefix is always absolute and the sqlite file always a real path, so
        # that every later reader (node, CLI, migrations) agrees on one file.
        prefix = os.path.abspath(self.prefix)
        object.__setattr__(self, "prefix", prefix)
        sqlite_path = self.sqlite_path or "kong.db"
        object.__setattr__(self, "sqlite_path", os.path.join(prefix, sqlite_path))

    # ----------------------------------------------------------------- derived views

    @property
    def twisted_log_level(self) -> LogLevel:
        """``log_level`` as the twisted.logger level the node filters on."""
        return twisted_log_level(self.log_level)

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_ips`` parsed once, for the X-Forwarded-For check."""
        return tuple(ipaddress.ip_network(n) for n in self.trusted_ips)

    def text(self, key: str) -> str:
        """The kong.conf spelling of property ``key``'s value (``""`` when unset)."""
        return format_value(getattr(self, key), key in _SIZES)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The resolved configuration as Kong shows it under ``configuration`` in ``GET /``.

        JSON-able: addresses and sizes as kong.conf text, lists as lists, unset
        properties left out; plus the derived ``*_ip``/``*_port`` keys and the
        prefix file paths Kong adds.  Secrets are ``******`` unless asked otherwise.
        """
        from kongtx.prefix import prefix_paths

        result: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if mask_secrets and f.name in SENSITIVE:
                result[f.name] = MASK
            elif isinstance(value, Address):
                result[f.name] = str(value)
            elif f.name in _SIZES:
                result[f.name] = format_size(value)
            elif f.name in _NGX_BOOLEANS:
                result[f.name] = "on" if value else "off"
            elif isinstance(value, tuple):
                result[f.name] = [str(v) for v in value]
            else:
                result[f.name] = value
        for name, address in (
            ("admin", self.admin_listen),
            ("proxy", self.proxy_listen),
            ("proxy_ssl", self.proxy_listen_ssl),
        ):
            result[f"{name}_ip"] = address.host
            result[f"{name}_port"] = address.port
        result.update(prefix_paths(self))
        return result

    def render(self) -> str:
        """kong.conf text of every resolved value (secrets included: it is the working copy).

        Loading the result back gives an equal Config (``#`` in values is escaped).
        """
        lines = [
            "# Written by kongtx: the resolved configuration this node runs with.",
            "# Later `kong` commands read this file; edit the source file instead.",
            "",
        ]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            text = format_value(value, f.name in _SIZES).replace("#", "\\#")
            lines.append(f"{f.name} = {text}".rstrip())
        return "\n".join(lines) + "\n"


def property_names() -> tuple[str, ...]:
    """Every property kongtx knows, in kong.conf order."""
    return tuple(PROPERTIES)
