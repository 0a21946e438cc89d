"""kongtx.config: defaults, lookup order, parsing, every validation message (SPEC §5)."""

from __future__ import annotations

import base64
import ipaddress
import os
import shutil
import tempfile
from dataclasses import FrozenInstanceError, fields, replace

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from kongtx import config_loading
from kongtx.config import (
    DEFAULTS,
    MASK,
    Address,
    Config,
    ConfigError,
    format_size,
    property_names,
    twisted_log_level,
)
from kongtx.config_loading import env_name, load_config, parse_conf

SPEC_PROPERTIES = {
    "prefix",
    "log_level",
    "custom_plugins",
    "anonymous_reports",
    "proxy_listen",
    "proxy_listen_ssl",
    "admin_listen",
    "nginx_worker_processes",
    "nginx_daemon",
    "nginx_optimizations",
    "mem_cache_size",
    "ssl",
    "ssl_cert",
    "ssl_cert_key",
    "database",
    "pg_host",
    "pg_port",
    "pg_user",
    "pg_password",
    "pg_database",
    "pg_ssl",
    "pg_ssl_verify",
    "cassandra_contact_points",
    "cassandra_port",
    "cassandra_keyspace",
    "cassandra_consistency",
    "cassandra_timeout",
    "cassandra_ssl",
    "cassandra_ssl_verify",
    "cassandra_username",
    "cassandra_password",
    "cassandra_repl_strategy",
    "cassandra_repl_factor",
    "cassandra_data_centers",
    "cluster_listen",
    "cluster_listen_rpc",
    "cluster_advertise",
    "cluster_encrypt_key",
    "cluster_profile",
    "cluster_ttl_on_failure",
    "dnsmasq",
    "dnsmasq_port",
    "dns_resolver",
    "lua_code_cache",
    "lua_ssl_trusted_certificate",
    "lua_ssl_verify_depth",
    "lua_package_path",
    "lua_package_cpath",
    "serf_path",
}
KONGTX_PROPERTIES = {
    "sqlite_path",
    "trusted_ips",
    "db_update_frequency",
    "upstream_connect_timeout",
    "upstream_send_timeout",
    "upstream_read_timeout",
    "upstream_keepalive",
    "client_max_header_size",
    "client_body_buffer_size",
    "proxy_frontend",
    "status_listen",
    "declarative_config",
    "pg_timeout",
}


class ConfigTestCase(SynchronousTestCase):
    """Isolated from the machine: no /etc/kong.conf, no KONG_* of the test runner."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="kongtx-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.patch(config_loading, "DEFAULT_PATHS", (self.mktemp(), self.mktemp()))

    def mktemp(self) -> str:
        """A fresh absolute path in this test's own temporary directory."""
        return tempfile.mktemp(dir=self.tmp)

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str | None = None, **env: str) -> Config:
        path = self.write(text) if text is not None else None
        return load_config(path, {env_name(k): v for k, v in env.items()})

    def errors(self, text: str | None = None, **env: str) -> list[str]:
        error = self.assertRaises(ConfigError, self.load, text, **env)
        return error.errors


class DefaultsTests(ConfigTestCase):
    def test_every_spec_property_exists(self) -> None:
        """Every property of SPEC §5.2 and every kongtx addition is a Config attribute."""
        names = {f.name for f in fields(Config)}
        self.assertEqual(names, SPEC_PROPERTIES | KONGTX_PROPERTIES)
        self.assertEqual(set(property_names()), names)
        self.assertEqual(set(DEFAULTS), names)

    def test_spec_defaults(self) -> None:
        """With no file and no environment every property has SPEC's default (typed)."""
        c = self.load()
        self.assertEqual(c.prefix, "/usr/local/kong")
        self.assertEqual(c.log_level, "notice")
        self.assertEqual(c.custom_plugins, ())
        self.assertIs(c.anonymous_reports, True)
        self.assertEqual(c.proxy_listen, Address("0.0.0.0", 8000))
        self.assertEqual(c.proxy_listen_ssl, Address("0.0.0.0", 8443))
        self.assertEqual(c.nginx_worker_processes, "auto")
        self.assertIs(c.nginx_daemon, True)
        self.assertIs(c.nginx_optimizations, True)
        self.assertEqual(c.mem_cache_size, 128 * 1024 * 1024)
        self.assertIs(c.ssl, True)
        self.assertIsNone(c.ssl_cert)
        self.assertIsNone(c.ssl_cert_key)
        self.assertEqual(
            (c.pg_host, c.pg_port, c.pg_user, c.pg_password, c.pg_database),
            ("127.0.0.1", 5432, "kong", None, "kong"),
        )
        self.assertEqual((c.pg_ssl, c.pg_ssl_verify), (False, False))
        self.assertEqual(c.pg_timeout, 5000)
        self.assertEqual(c.cassandra_contact_points, ("127.0.0.1",))
        self.assertEqual(c.cassandra_port, 9042)
        self.assertEqual(c.cassandra_keyspace, "kong")
        self.assertEqual(c.cassandra_consistency, "ONE")
        self.assertEqual(c.cassandra_timeout, 5000)
        self.assertEqual((c.cassandra_ssl, c.cassandra_ssl_verify), (False, False))
        self.assertEqual((c.cassandra_username, c.cassandra_password), ("kong", None))
        self.assertEqual(c.cassandra_repl_strategy, "SimpleStrategy")
        self.assertEqual(c.cassandra_repl_factor, 1)
        self.assertEqual(c.cassandra_data_centers, ("dc1:2", "dc2:3"))
        self.assertEqual(c.cluster_listen, Address("0.0.0.0", 7946))
        self.assertEqual(c.cluster_listen_rpc, Address("127.0.0.1", 7373))
        self.assertIsNone(c.cluster_advertise)
        self.assertIsNone(c.cluster_encrypt_key)
        self.assertEqual(c.cluster_profile, "wan")
        self.assertEqual(c.cluster_ttl_on_failure, 3600)
        self.assertIs(c.dnsmasq, True)
        self.assertEqual(c.dnsmasq_port, 8053)
        self.assertEqual(c.dns_resolver, ())
        self.assertIs(c.lua_code_cache, True)
        self.assertIsNone(c.lua_ssl_trusted_certificate)
        self.assertEqual(c.lua_ssl_verify_depth, 1)
        self.assertEqual(c.lua_package_path, "?/init.lua;./kong/?.lua")
        self.assertIsNone(c.lua_package_cpath)
        self.assertEqual(c.serf_path, "serf")

    def test_deliberate_differences(self) -> None:
        """admin_listen is loopback, the database is the embedded sqlite file, no IP is trusted."""
        c = self.load()
        self.assertEqual(c.admin_listen, Address("127.0.0.1", 8001))
        self.assertEqual(c.database, "sqlite")
        self.assertEqual(c.sqlite_path, "/usr/local/kong/kong.db")
        self.assertEqual(c.trusted_ips, ())

    def test_kongtx_additions_defaults(self) -> None:
        """The kongtx-only properties default to 5 s, 60 s timeouts, 60 idle connections, 8k."""
        c = self.load()
        self.assertEqual(c.db_update_frequency, 5.0)
        self.assertEqual(
            (c.upstream_connect_timeout, c.upstream_send_timeout, c.upstream_read_timeout),
            (60000, 60000, 60000),
        )
        self.assertEqual(c.upstream_keepalive, 60)
        self.assertEqual(c.client_max_header_size, 8192)
        self.assertEqual(c.client_body_buffer_size, 8192)

    def test_config_constructor_equals_loaded_defaults(self) -> None:
        """``Config()`` is exactly what loading nothing gives."""
        self.assertEqual(Config(), self.load())


class LookupOrderTests(ConfigTestCase):
    def test_file_overrides_default(self) -> None:
        """A value in the file beats the built-in default."""
        self.assertEqual(self.load("pg_host = db.example\n").pg_host, "db.example")

    def test_env_overrides_file(self) -> None:
        """KONG_<PROPERTY> beats the file."""
        c = self.load("pg_host = from-file\n", pg_host="from-env")
        self.assertEqual(c.pg_host, "from-env")

    def test_prefix_argument_overrides_env(self) -> None:
        """``-p`` beats KONG_PREFIX and the file, and is made absolute."""
        path = self.write("prefix = /from/file\n")
        c = load_config(path, {"KONG_PREFIX": "/from/env"}, prefix="relative/dir")
        self.assertEqual(c.prefix, os.path.abspath("relative/dir"))

    def test_first_existing_default_path_is_read(self) -> None:
        """Without -c the first existing default path is read."""
        second = self.write("pg_user = second\n")
        self.patch(config_loading, "DEFAULT_PATHS", (self.mktemp(), second))
        self.assertEqual(load_config(None, {}).pg_user, "second")
        first = self.write("pg_user = first\n")
        self.patch(config_loading, "DEFAULT_PATHS", (first, second))
        self.assertEqual(load_config(None, {}).pg_user, "first")

    def test_missing_conf_file_is_an_error(self) -> None:
        """``-c`` naming no file fails with ``no file at: <path>``."""
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertEqual(error.errors, [f"no file at: {path}"])

    def test_env_names(self) -> None:
        """The variable of a property is KONG_ + its name upper-cased."""
        self.assertEqual(env_name("pg_host"), "KONG_PG_HOST")
        c = load_config(None, {"KONG_PG_HOST": "x", "kong_pg_port": "1"})
        self.assertEqual((c.pg_host, c.pg_port), ("x", 5432))

    def test_empty_value_unsets(self) -> None:
        """An empty value at a higher layer unsets the property (default, None or empty list)."""
        c = self.load(
            "pg_password = secret\npg_host = h\ncustom_plugins = a\n",
            pg_password="",
            pg_host="",
            custom_plugins="",
        )
        self.assertIsNone(c.pg_password)
        self.assertEqual(c.pg_host, "127.0.0.1")
        self.assertEqual(c.custom_plugins, ())

    def test_env_value_is_trimmed_and_literal(self) -> None:
        """Environment values are trimmed but a ``#`` in them is kept (no comment syntax)."""
        self.assertEqual(self.load(pg_password="  a#b  ").pg_password, "a#b")


class FileSyntaxTests(ConfigTestCase):
    def test_comments_and_blank_lines(self) -> None:
        """Full-line and trailing comments are ignored, values trimmed."""
        c = self.load("# a comment\n\n   pg_host =   h1   # trailing\n  # indented\n")
        self.assertEqual(c.pg_host, "h1")

    def test_escaped_hash_is_kept(self) -> None:
        """``\\#`` inside a value is a literal ``#`` (a password, say)."""
        c = self.load("pg_password = pa\\#ss # comment\n")
        self.assertEqual(c.pg_password, "pa#ss")

    def test_unknown_keys_and_garbage_lines_are_dropped(self) -> None:
        """Unknown keys and lines without ``=`` are ignored, not errors."""
        values = parse_conf("nope = 1\njust words\n= no key\npg_user = u\n")
        self.assertEqual(values, {"pg_user": "u"})

    def test_last_occurrence_wins(self) -> None:
        """A key given twice takes its last value."""
        self.assertEqual(parse_conf("pg_user = a\npg_user = b\n"), {"pg_user": "b"})

    def test_empty_value_in_file(self) -> None:
        """``key =`` leaves the property unset."""
        self.assertIsNone(self.load("cluster_advertise =\n").cluster_advertise)

    def test_line_break_in_env_value_rejected(self) -> None:
        """A line break (only possible from the environment) is refused: it cannot be written back."""
        self.assertEqual(
            self.errors(pg_password="a\nb"), ["pg_password must not contain a line break"]
        )

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.text())
    def test_parser_never_crashes(self, text: str) -> None:
        """Whatever the file holds, parse_conf returns known keys with trimmed, line-free values."""
        values = parse_conf(text)
        for key, value in values.items():
            self.assertIn(key, DEFAULTS)
            self.assertEqual(value, value.strip())
            self.assertNotIn("\n", value)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(DEFAULTS)),
                st.one_of(
                    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
                    st.from_regex(
                        r"[+-]?\d{0,30}(\.\d*)?([eE][+-]?\d{1,4})?[kmg]?", fullmatch=True
                    ),
                    st.from_regex(r"\[?[0-9a-f:.]{0,20}\]?:\d{0,7}", fullmatch=True),
                ),
            ),
            max_size=8,
        )
    )
    def test_loading_never_crashes(self, pairs: list[tuple[str, str]]) -> None:
        """Any values for any properties give a Config or a ConfigError, never another exception."""
        env = {env_name(k): v for k, v in pairs}
        try:
            load_config(None, env)
        except ConfigError as e:
            self.assertTrue(e.errors)


class TypeTests(ConfigTestCase):
    def test_booleans(self) -> None:
        """on/off/true/false are booleans; anything else is ``<k> is not a boolean``."""
        self.assertIs(self.load(pg_ssl="on").pg_ssl, True)
        self.assertIs(self.load(pg_ssl="true").pg_ssl, True)
        self.assertIs(self.load(ssl="off").ssl, False)
        self.assertIs(self.load(ssl="false").ssl, False)
        self.assertEqual(self.errors(pg_ssl="yes"), ["pg_ssl is not a boolean: 'yes'"])

    def test_numbers(self) -> None:
        """Numbers parse; words are ``<k> is not a number``; fractions of integers are refused."""
        self.assertEqual(self.load(pg_port="6543").pg_port, 6543)
        self.assertEqual(self.errors(pg_port="abc"), ["pg_port is not a number: 'abc'"])
        self.assertEqual(
            self.errors(cassandra_timeout="1.5"), ["cassandra_timeout is not an integer: '1.5'"]
        )
        self.assertEqual(self.load(db_update_frequency="0.5").db_update_frequency, 0.5)
        self.assertEqual(self.load(cluster_ttl_on_failure="1e3").cluster_ttl_on_failure, 1000)
        self.assertEqual(
            self.load(cluster_ttl_on_failure="123456789012345678901").cluster_ttl_on_failure,
            123456789012345678901,
        )
        for huge in ("1e999", "-1e999"):
            self.assertEqual(
                self.errors(cluster_ttl_on_failure=huge),
                [f"cluster_ttl_on_failure is not a number: '{huge}'"],
            )
        self.assertEqual(
            self.errors(db_update_frequency="1e999"),
            ["db_update_frequency is not a number: '1e999'"],
        )

    def test_number_ranges(self) -> None:
        """Ports stay within 1-65535, timeouts and frequencies above zero."""
        self.assertEqual(
            self.errors(pg_port="70000"), ["pg_port has an invalid value: '70000' (1-65535)"]
        )
        self.assertEqual(
            self.errors(upstream_read_timeout="0"),
            ["upstream_read_timeout has an invalid value: '0' (>= 1)"],
        )
        self.assertEqual(
            self.errors(db_update_frequency="0"),
            ["db_update_frequency has an invalid value: '0' (> 0)"],
        )
        self.assertEqual(self.load(upstream_keepalive="0").upstream_keepalive, 0)

    def test_enums(self) -> None:
        """Enumerated properties list the allowed values, as Kong does."""
        self.assertEqual(
            self.errors(database="mysql"),
            ["database has an invalid value: 'mysql' (sqlite, postgres, cassandra, off)"],
        )
        self.assertEqual(
            self.errors(cassandra_consistency="FOUR"),
            [
                "cassandra_consistency has an invalid value: 'FOUR' (ALL, EACH_QUORUM, QUORUM, "
                "LOCAL_QUORUM, ONE, TWO, THREE, LOCAL_ONE)"
            ],
        )
        self.assertEqual(
            self.errors(log_level="verbose"),
            [
                "log_level has an invalid value: 'verbose' "
                "(debug, info, notice, warn, error, crit, alert, emerg)"
            ],
        )
        self.assertEqual(
            self.errors(cluster_profile="x"),
            ["cluster_profile has an invalid value: 'x' (local, lan, wan)"],
        )
        self.assertEqual(
            self.errors(cassandra_repl_strategy="x"),
            [
                "cassandra_repl_strategy has an invalid value: 'x' "
                "(SimpleStrategy, NetworkTopologyStrategy)"
            ],
        )
        for database in ("sqlite", "postgres", "cassandra"):
            self.assertEqual(self.load(database=database).database, database)

    def test_sizes(self) -> None:
        """nginx sizes become bytes; anything else is ``<k> is not a size``."""
        self.assertEqual(self.load(mem_cache_size="10k").mem_cache_size, 10240)
        self.assertEqual(self.load(mem_cache_size="2M").mem_cache_size, 2 * 1024 * 1024)
        self.assertEqual(self.load(mem_cache_size="1g").mem_cache_size, 1024**3)
        self.assertEqual(self.load(client_max_header_size="512").client_max_header_size, 512)
        self.assertEqual(
            self.errors(mem_cache_size="lots"), ["mem_cache_size is not a size: 'lots'"]
        )

    def test_format_size(self) -> None:
        """Sizes print back in the largest exact unit."""
        self.assertEqual(format_size(128 * 1024 * 1024), "128m")
        self.assertEqual(format_size(8192), "8k")
        self.assertEqual(format_size(1000), "1000")
        self.assertEqual(format_size(0), "0")

    def test_lists(self) -> None:
        """Lists are comma-separated, items trimmed, empty items dropped."""
        c = self.load(cassandra_contact_points=" a , b,,c ", custom_plugins="x")
        self.assertEqual(c.cassandra_contact_points, ("a", "b", "c"))
        self.assertEqual(c.custom_plugins, ("x",))

    def test_listen_addresses(self) -> None:
        """``address:port`` parses to an Address; IPv6 in brackets too; else Kong's message."""
        c = self.load(
            proxy_listen="127.0.0.1:9000", admin_listen="[::1]:9001", proxy_listen_ssl="localhost:1"
        )
        self.assertEqual(c.proxy_listen, Address("127.0.0.1", 9000))
        self.assertEqual(c.admin_listen, Address("::1", 9001))
        self.assertEqual(str(c.admin_listen), "[::1]:9001")
        self.assertEqual(c.proxy_listen_ssl, Address("localhost", 1))
        for bad in ("127.0.0.1", "127.0.0.1:x", ":8000", "1.2.3.4:70000", "[nope]:1"):
            self.assertEqual(
                self.errors(admin_listen=bad), ["admin_listen must be of form 'address:port'"]
            )

    def test_connect_host(self) -> None:
        """A wildcard bind is dialled on loopback; other hosts as they are."""
        self.assertEqual(Address("0.0.0.0", 1).connect_host, "127.0.0.1")
        self.assertEqual(Address("::", 1).connect_host, "::1")
        self.assertEqual(Address("10.0.0.1", 1).connect_host, "10.0.0.1")

    def test_cluster_addresses_are_ipv4(self) -> None:
        """cluster_listen, cluster_listen_rpc and cluster_advertise must be IPv4:port."""
        for key in ("cluster_listen", "cluster_listen_rpc", "cluster_advertise"):
            for bad in ("1.1.1.1", "123", "host:1", "[::1]:1", "300.1.1.1:1"):
                self.assertEqual(
                    self.errors(**{key: bad}), [f"{key} must be in the form of IPv4:port"]
                )
        c = self.load(cluster_listen="1.1.1.1:3333", cluster_advertise="10.0.0.2:7946")
        self.assertEqual(c.cluster_listen, Address("1.1.1.1", 3333))
        self.assertEqual(c.cluster_advertise, Address("10.0.0.2", 7946))

    def test_trusted_ips(self) -> None:
        """trusted_ips takes IPs and CIDRs (v4 and v6), normalised; anything else names the item."""
        c = self.load(trusted_ips="10.0.0.0/8, 192.168.1.7,::1, 2001:db8::/32")
        self.assertEqual(
            c.trusted_ips, ("10.0.0.0/8", "192.168.1.7/32", "::1/128", "2001:db8::/32")
        )
        self.assertIn(ipaddress.ip_address("10.1.2.3"), c.trusted_networks[0])
        self.assertEqual(
            self.errors(trusted_ips="10.0.0.1, nope"),
            [
                "trusted_ips must be a comma separated list in the form of IPv4 or IPv6 "
                "address or CIDR block, got 'nope'"
            ],
        )

    def test_worker_processes(self) -> None:
        """nginx_worker_processes is ``auto`` or a positive integer."""
        self.assertEqual(self.load(nginx_worker_processes="4").nginx_worker_processes, 4)
        for bad in ("0", "-1", "many"):
            self.assertEqual(
                self.errors(nginx_worker_processes=bad),
                [
                    f"nginx_worker_processes has an invalid value: '{bad}' "
                    "(auto, a positive integer)"
                ],
            )

    def test_paths_made_absolute(self) -> None:
        """prefix is absolute; a relative sqlite_path lives under the prefix."""
        c = load_config(None, {"KONG_PREFIX": "some/where", "KONG_SQLITE_PATH": "data/k.db"})
        self.assertEqual(c.prefix, os.path.abspath("some/where"))
        self.assertEqual(c.sqlite_path, os.path.join(os.path.abspath("some/where"), "data/k.db"))
        self.assertEqual(self.load(sqlite_path="/abs/k.db").sqlite_path, "/abs/k.db")

    def test_log_level_as_twisted_level(self) -> None:
        """nginx log levels map onto twisted.logger levels."""
        self.assertEqual(self.load().twisted_log_level, LogLevel.info)
        self.assertEqual(twisted_log_level("debug"), LogLevel.debug)
        self.assertEqual(twisted_log_level("warn"), LogLevel.warn)
        self.assertEqual(twisted_log_level("error"), LogLevel.error)
        for level in ("crit", "alert", "emerg"):
            self.assertEqual(twisted_log_level(level), LogLevel.critical)


class CrossCheckTests(ConfigTestCase):
    def test_ssl_cert_needs_key_and_back(self) -> None:
        """ssl_cert and ssl_cert_key come together."""
        cert = self.write("cert")
        key = self.write("key")
        self.assertEqual(self.errors(ssl_cert=cert), ["ssl_cert_key must be specified"])
        self.assertEqual(self.errors(ssl_cert_key=key), ["ssl_cert must be specified"])
        c = self.load(ssl_cert=cert, ssl_cert_key=key)
        self.assertEqual((c.ssl_cert, c.ssl_cert_key), (cert, key))

    def test_ssl_files_must_exist(self) -> None:
        """Each certificate file must exist."""
        cert, key = self.mktemp(), self.mktemp()
        self.assertEqual(
            self.errors(ssl_cert=cert, ssl_cert_key=key),
            [f"ssl_cert: no such file at {cert}", f"ssl_cert_key: no such file at {key}"],
        )

    def test_ssl_off_skips_certificate_checks(self) -> None:
        """With ssl off the certificate properties are not checked (as Kong)."""
        self.assertEqual(self.load(ssl="off", ssl_cert=self.mktemp()).ssl, False)

    def test_dnsmasq_versus_resolver(self) -> None:
        """Exactly one of dnsmasq and dns_resolver."""
        self.assertEqual(
            self.errors(dns_resolver="8.8.8.8"),
            ["must disable dnsmasq when a custom DNS resolver is specified"],
        )
        self.assertEqual(
            self.errors(dnsmasq="off"),
            ["must specify a custom DNS resolver when dnsmasq is turned off"],
        )
        c = self.load(dnsmasq="off", dns_resolver="8.8.8.8, 1.1.1.1:5353")
        self.assertEqual(c.dns_resolver, (Address("8.8.8.8", 53), Address("1.1.1.1", 5353)))
        self.assertEqual(
            self.errors(dnsmasq="off", dns_resolver="dns.google"),
            ["dns_resolver must be a comma separated list in the form of IPv4 or IPv4:port"],
        )

    def test_cluster_ttl_minimum(self) -> None:
        """cluster_ttl_on_failure below 60 is refused with Kong's message."""
        self.assertEqual(
            self.errors(cluster_ttl_on_failure="59"),
            ["cluster_ttl_on_failure must be at least 60 seconds"],
        )
        self.assertEqual(self.load(cluster_ttl_on_failure="60").cluster_ttl_on_failure, 60)

    def test_cluster_encrypt_key(self) -> None:
        """The key is base64 of 16 bytes (24 and 32 too, as Serf accepts)."""
        for size in (16, 24, 32):
            key = base64.b64encode(os.urandom(size)).decode()
            self.assertEqual(self.load(cluster_encrypt_key=key).cluster_encrypt_key, key)
        for bad in ("not base64!", base64.b64encode(b"short").decode()):
            self.assertEqual(
                self.errors(cluster_encrypt_key=bad),
                ["cluster_encrypt_key must be a base64 encoded 16, 24 or 32 byte key"],
            )

    def test_cassandra_data_centers_form(self) -> None:
        """Each data centre is ``<name>:<replication factor>``."""
        c = self.load(cassandra_data_centers="east:3, west:2")
        self.assertEqual(c.cassandra_data_centers, ("east:3", "west:2"))
        self.assertEqual(
            self.errors(cassandra_data_centers="east:3,west"),
            [
                "cassandra_data_centers has an invalid value: 'west' "
                "(<dc_name>:<replication_factor>)"
            ],
        )

    def test_every_error_is_reported(self) -> None:
        """All problems are collected, in property order, cross-checks last."""
        self.assertEqual(
            self.errors(pg_port="x", cluster_listen="nope", dnsmasq="off"),
            [
                "pg_port is not a number: 'x'",
                "cluster_listen must be in the form of IPv4:port",
                "must specify a custom DNS resolver when dnsmasq is turned off",
            ],
        )

    def test_error_message_joins_lines(self) -> None:
        """str(ConfigError) shows every problem, one per line."""
        self.assertEqual(str(ConfigError(["a", "b"])), "a\nb")


class OutputTests(ConfigTestCase):
    def test_to_dict_masks_secrets(self) -> None:
        """pg_password, cassandra_password and cluster_encrypt_key show as ``******``."""
        key = base64.b64encode(bytes(16)).decode()
        c = self.load(pg_password="p", cassandra_password="c", cluster_encrypt_key=key)
        shown = c.to_dict()
        for name in ("pg_password", "cassandra_password", "cluster_encrypt_key"):
            self.assertEqual(shown[name], MASK)
        clear = c.to_dict(mask_secrets=False)
        self.assertEqual(
            (clear["pg_password"], clear["cassandra_password"], clear["cluster_encrypt_key"]),
            ("p", "c", key),
        )

    def test_to_dict_shape(self) -> None:
        """Kong's GET / shapes: address and size text, lists, on/off nginx flags, derived keys."""
        shown = self.load(prefix="/srv/k").to_dict()
        self.assertEqual(shown["admin_listen"], "127.0.0.1:8001")
        self.assertEqual(shown["mem_cache_size"], "128m")
        self.assertEqual(shown["cassandra_contact_points"], ["127.0.0.1"])
        self.assertEqual(shown["nginx_daemon"], "on")
        self.assertIs(shown["ssl"], True)
        self.assertNotIn("pg_password", shown)
        self.assertEqual((shown["admin_ip"], shown["admin_port"]), ("127.0.0.1", 8001))
        self.assertEqual((shown["proxy_ip"], shown["proxy_port"]), ("0.0.0.0", 8000))
        self.assertEqual(shown["proxy_ssl_port"], 8443)
        self.assertEqual(shown["kong_conf"], "/srv/k/kong.conf")
        self.assertEqual(shown["nginx_pid"], "/srv/k/pids/kong.pid")

    def test_render_round_trips(self) -> None:
        """Loading the rendered text gives an equal Config, secrets with ``#`` included."""
        key = base64.b64encode(bytes(range(16))).decode()
        original = self.load(
            prefix="/srv/kong",
            pg_password="pa#ss\\word",
            custom_plugins="a, b",
            trusted_ips="10.0.0.0/8",
            dnsmasq="off",
            dns_resolver="8.8.8.8:53",
            cluster_advertise="10.1.1.1:7946",
            cluster_encrypt_key=key,
            mem_cache_size="1000",
            db_update_frequency="2.5",
            nginx_worker_processes="3",
            admin_listen="[::1]:8001",
        )
        self.assertEqual(self.load(original.render()), original)
        self.assertEqual(self.load(Config().render()), Config())

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1
        ).filter(lambda s: s.strip() == s)
    )
    def test_render_round_trips_any_password(self, password: str) -> None:
        """Any single-line password without outer spaces survives render -> load."""
        original = self.load(pg_password=password)
        self.assertEqual(self.load(original.render()).pg_password, password)

    def test_replace_keeps_types(self) -> None:
        """dataclasses.replace derives a variant (the Config is frozen)."""
        c = replace(Config(), pg_port=1)
        self.assertEqual(c.pg_port, 1)
        self.assertRaises(FrozenInstanceError, setattr, c, "pg_port", 2)
