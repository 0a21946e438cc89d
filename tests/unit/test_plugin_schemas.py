"""Every bundled plugin's config schema and plugin-owned entity schema (SPEC §2.5, §4)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from kongtx.errors import EntityError, SchemaError
from kongtx.plugins.basic_auth.crypto import (
    hash_password,
    is_kdf_hash,
    is_legacy_hash,
    legacy_hash,
    verify_basicauth_password,
)
from kongtx.plugins.basic_auth.schema import CREDENTIALS as BASIC_CREDENTIALS
from kongtx.plugins.basic_auth.schema import hash_before_write
from kongtx.plugins.ip_restriction.schema import parse_cidr
from kongtx.plugins.jwt.schema import CREDENTIALS as JWT_SECRETS
from kongtx.plugins.oauth2.schema import AUTHORIZATION_CODES, TOKENS
from kongtx.plugins.oauth2.schema import CREDENTIALS as OAUTH2_CREDENTIALS
from kongtx.plugins.registry import PluginRegistry
from kongtx.store.schemas import Schema, core_schemas, schema_to_json, validate

REGISTRY = PluginRegistry.load()
HEX32 = "^[0-9a-f]{32}$"


def config_schema(name: str) -> Schema:
    spec = REGISTRY.get(name)
    assert spec is not None, name
    return spec.config_schema


def check(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The validated config of plugin ``name``."""
    return validate(config_schema(name), config)


def rejects(case: SynchronousTestCase, name: str, config: dict[str, Any]) -> Any:
    """The field map, or entity message, a bad ``config`` of plugin ``name`` gives."""
    try:
        validate(config_schema(name), config)
    except SchemaError as e:
        return e.fields
    except EntityError as e:
        return e.message
    case.fail(f"{name} accepted {config!r}")


def through_plugins(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Errors of a POST /plugins with this config (the keys the Admin API shows)."""
    plugins = core_schemas(
        lambda n: REGISTRY.get(n).config_schema if REGISTRY.get(n) else None,  # type: ignore[union-attr]
        lambda: RuntimeError("exists"),
    )["plugins"]
    try:
        validate(plugins, {"name": name, "config": config})
    except SchemaError as e:
        return dict(e.fields)
    return {}


class DefaultsTests(SynchronousTestCase):
    """Each plugin's defaults, exactly as SPEC §4 lists them."""

    def test_defaults(self) -> None:
        """A minimal valid config of every plugin comes back with SPEC's defaults."""
        expected: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
            "key-auth": ({}, {"key_names": ["apikey"], "hide_credentials": False}),
            "basic-auth": ({}, {"hide_credentials": False}),
            "hmac-auth": ({}, {"hide_credentials": False, "clock_skew": 300}),
            "jwt": (
                {},
                {"uri_param_names": ["jwt"], "key_claim_name": "iss", "secret_is_base64": False},
            ),
            "ldap-auth": (
                {"ldap_host": "h", "ldap_port": "389", "base_dn": "dc=x", "attribute": "cn"},
                {
                    "ldap_host": "h",
                    "ldap_port": 389,
                    "base_dn": "dc=x",
                    "attribute": "cn",
                    "start_tls": False,
                    "verify_ldap_host": False,
                    "cache_ttl": 60,
                    "hide_credentials": False,
                    "timeout": 10000,
                    "keepalive": 60000,
                },
            ),
            "cors": ({}, {"credentials": False, "preflight_continue": False}),
            "request-size-limiting": ({}, {"allowed_payload_size": 128}),
            "rate-limiting": (
                {"minute": 10},
                {
                    "minute": 10,
                    "limit_by": "consumer",
                    "policy": "cluster",
                    "fault_tolerant": True,
                    "redis_port": 6379,
                    "redis_timeout": 2000,
                },
            ),
            "udp-log": ({"host": "h", "port": 9}, {"host": "h", "port": 9, "timeout": 10000}),
            "tcp-log": (
                {"host": "h", "port": 9},
                {"host": "h", "port": 9, "timeout": 10000, "keepalive": 60000},
            ),
            "http-log": (
                {"http_endpoint": "http://h/p"},
                {
                    "http_endpoint": "http://h/p",
                    "method": "POST",
                    "timeout": 10000,
                    "keepalive": 60000,
                },
            ),
            "syslog": (
                {},
                {
                    "log_level": "info",
                    "successful_severity": "info",
                    "client_errors_severity": "info",
                    "server_errors_severity": "info",
                },
            ),
            "loggly": (
                {"key": "k"},
                {
                    "host": "logs-01.loggly.com",
                    "port": 514,
                    "key": "k",
                    "tags": ["kong"],
                    "log_level": "info",
                    "successful_severity": "info",
                    "client_errors_severity": "info",
                    "server_errors_severity": "info",
                    "timeout": 10000,
                },
            ),
            "galileo": (
                {"service_token": "t"},
                {
                    "service_token": "t",
                    "log_bodies": False,
                    "retry_count": 10,
                    "connection_timeout": 30,
                    "flush_timeout": 2,
                    "queue_size": 1000,
                    "host": "collector.galileo.mashape.com",
                    "port": 443,
                    "https": True,
                    "https_verify": False,
                },
            ),
            "runscope": (
                {"bucket_key": "b"},
                {
                    "access_token": "",
                    "bucket_key": "b",
                    "log_body": False,
                    "api_endpoint": "https://api.runscope.com",
                    "timeout": 10000,
                    "keepalive": 30,
                },
            ),
            "correlation-id": (
                {},
                {
                    "header_name": "Kong-Request-ID",
                    "generator": "uuid#counter",
                    "echo_downstream": False,
                },
            ),
        }
        for name, (given, want) in expected.items():
            got = {k: v for k, v in check(name, given).items() if v is not None}
            self.assertEqual(got, want, name)

    def test_metrics_default_to_all(self) -> None:
        """statsd and datadog send every metric by default, to localhost:8125."""
        metrics = [
            "request_count",
            "latency",
            "request_size",
            "status_count",
            "response_size",
            "unique_users",
            "request_per_user",
            "upstream_latency",
        ]
        for name in ("statsd", "datadog"):
            out = check(name, {})
            self.assertEqual(out["metrics"], metrics)
            self.assertEqual((out["host"], out["port"], out["timeout"]), ("localhost", 8125, 10000))

    def test_transformer_defaults_render_as_arrays(self) -> None:
        """Empty-array defaults are JSON [] (Kong's cjson rendered {}; we do not copy that quirk)."""
        out = check("request-transformer", {})
        self.assertEqual(out["remove"], {"body": [], "headers": [], "querystring": []})
        self.assertIn('"headers": []', json.dumps(out["add"]))
        self.assertEqual(check("response-transformer", {})["append"], {"headers": [], "json": []})

    def test_schema_json(self) -> None:
        """GET /plugins/schema/key-auth renders Kong's shape (plus Kong 0.10's anonymous)."""
        self.assertEqual(
            schema_to_json(config_schema("key-auth")),
            {
                "no_consumer": True,
                "fields": {
                    "key_names": {"type": "array", "required": True, "default": ["apikey"]},
                    "hide_credentials": {"type": "boolean", "default": False},
                    "anonymous": {"type": "string", "func": "function"},
                },
            },
        )
        rendered = schema_to_json(config_schema("rate-limiting"))
        self.assertEqual(rendered["self_check"], "function")
        json.dumps({n: schema_to_json(config_schema(n)) for n in REGISTRY.names()})


class TrafficControlTests(SynchronousTestCase):
    def test_rate_limiting_periods(self) -> None:
        """At least one limit, all > 0, longer periods never lower than shorter ones."""
        self.assertEqual(
            rejects(self, "rate-limiting", {}),
            "You need to set at least one limit: second, minute, hour, day, month, year",
        )
        self.assertEqual(
            rejects(self, "rate-limiting", {"minute": 0}),
            "Value for minute must be greater than zero",
        )
        self.assertEqual(
            rejects(self, "rate-limiting", {"second": 10, "hour": 5}),
            "The limit for hour cannot be lower than the limit for second",
        )
        self.assertEqual(
            rejects(self, "rate-limiting", {"minute": 5, "policy": "redis"}),
            "You need to specify a Redis host",
        )
        self.assertEqual(
            rejects(self, "rate-limiting", {"minute": 5, "limit_by": "header"}),
            {
                "limit_by": '"header" is not allowed. Allowed values are: "consumer", "credential", "ip"'
            },
        )
        check("rate-limiting", {"second": 1, "minute": 1, "year": 100, "policy": "local"})

    def test_rate_limiting_config_message_through_plugins(self) -> None:
        """A config self_check failure is {"config": msg} on POST /plugins."""
        self.assertEqual(
            through_plugins({"minute": -1}, "rate-limiting"),
            {"config": "Value for minute must be greater than zero"},
        )
        self.assertEqual(
            through_plugins({"minute": "x"}, "rate-limiting"),
            {"config.minute": "minute is not a number"},
        )

    def test_response_ratelimiting(self) -> None:
        """Named limits: at least one name, each checked like rate-limiting."""
        self.assertEqual(
            rejects(self, "response-ratelimiting", {}), "You need to set at least one limit name"
        )
        self.assertEqual(
            rejects(self, "response-ratelimiting", {"limits": {"sms": {"minute": 0}}}),
            "Value for minute must be greater than zero",
        )
        self.assertEqual(
            rejects(self, "response-ratelimiting", {"limits": {"sms": {}}}),
            "You need to set at least one limit: second, minute, hour, day, month, year",
        )
        out = check("response-ratelimiting", {"limits": {"sms": {"minute": "10"}}})
        self.assertEqual(out["limits"], {"sms": {"minute": 10}})
        self.assertEqual(out["header_name"], "x-kong-limit")
        self.assertIs(out["block_on_first_violation"], False)
        self.assertEqual(
            through_plugins({"limits": {"sms": {"minute": "x"}}}, "response-ratelimiting"),
            {"config.limits.sms.minute": "minute is not a number"},
        )

    def test_ip_restriction(self) -> None:
        """IPs and CIDRs must parse; exactly one of whitelist/blacklist."""
        self.assertEqual(
            rejects(self, "ip-restriction", {"whitelist": "1.2.3.4, 10.0.0.0/40"}),
            {"whitelist": "cannot parse '10.0.0.0/40': Invalid prefix: /40"},
        )
        self.assertEqual(
            rejects(self, "ip-restriction", {"blacklist": ["bad"]}),
            {"blacklist": "cannot parse 'bad': Invalid IP"},
        )
        self.assertEqual(
            rejects(self, "ip-restriction", {"whitelist": "1.1.1.1", "blacklist": "2.2.2.2"}),
            "you cannot set both a whitelist and a blacklist",
        )
        self.assertEqual(
            rejects(self, "ip-restriction", {"whitelist": ""}),
            "you must set at least a whitelist or blacklist",
        )
        self.assertEqual(
            check("ip-restriction", {"whitelist": "127.0.0.1, 10.0.0.0/8"})["whitelist"],
            ["127.0.0.1", "10.0.0.0/8"],
        )
        self.assertEqual(str(parse_cidr("10.1.2.3/8")), "10.0.0.0/8")

    def test_acl(self) -> None:
        """Exactly one of whitelist/blacklist, with Kong's capitalised messages."""
        self.assertEqual(
            rejects(self, "acl", {"whitelist": "a", "blacklist": "b"}),
            "You cannot set both a whitelist and a blacklist",
        )
        self.assertEqual(rejects(self, "acl", {}), "You must set at least a whitelist or blacklist")
        self.assertEqual(check("acl", {"whitelist": "a, b"})["whitelist"], ["a", "b"])

    def test_bot_detection_regex(self) -> None:
        """Lists must hold valid regexes."""
        self.assertEqual(
            rejects(self, "bot-detection", {"blacklist": ["ok", "(bad"]}),
            {"blacklist": "value '(bad' is not a valid regex"},
        )
        self.assertEqual(check("bot-detection", {}), {"whitelist": [], "blacklist": []})

    def test_cors_methods(self) -> None:
        """CORS methods are limited to Kong's enum."""
        self.assertEqual(
            rejects(self, "cors", {"methods": "GET,TRACE"}),
            {
                "methods": '"TRACE" is not allowed. Allowed values are: '
                '"HEAD", "GET", "POST", "PUT", "PATCH", "DELETE"'
            },
        )


class TransformerTests(SynchronousTestCase):
    def test_name_value_entries(self) -> None:
        """add/replace/append entries need a colon; the value may hold more colons."""
        self.assertEqual(
            through_plugins({"add": {"headers": "x-a:1, nocolon"}}, "request-transformer"),
            {"config.add.headers": "key 'nocolon' has no value"},
        )
        out = check("request-transformer", {"replace": {"querystring": ["a:b:c"]}})
        self.assertEqual(out["replace"]["querystring"], ["a:b:c"])
        self.assertEqual(
            check("request-transformer", {"remove": {"headers": "a,b"}})["remove"]["headers"],
            ["a", "b"],
        )
        self.assertEqual(
            through_plugins({"append": {"json": ["k"]}}, "response-transformer"),
            {"config.append.json": "key 'k' has no value"},
        )

    def test_datadog_tags(self) -> None:
        """datadog tags are key:value with a value."""
        self.assertEqual(
            through_plugins({"tags": {"latency": ["env:"]}}, "datadog"),
            {"config.tags.latency": "key 'env:' has no value"},
        )
        out = check("datadog", {"tags": {"latency": "env:prod"}})
        self.assertEqual(out["tags"], {"latency": ["env:prod"]})


class LoggingTests(SynchronousTestCase):
    def test_file_log_path(self) -> None:
        """file-log touches its file; a path that cannot be created is refused."""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "kong.log")
            self.assertEqual(check("file-log", {"path": path})["path"], path)
            self.assertTrue(os.path.exists(path))
            self.assertEqual(
                rejects(self, "file-log", {"path": os.path.join(d, "missing", "x.log")}),
                {
                    "path": "Cannot create file. Make sure the path is valid, "
                    "and has the right permissions"
                },
            )
        self.assertEqual(rejects(self, "file-log", {}), {"path": "path is required"})

    def test_severities(self) -> None:
        """syslog severities are an enum."""
        self.assertEqual(
            rejects(self, "syslog", {"log_level": "loud"}),
            {
                "log_level": '"loud" is not allowed. Allowed values are: "debug", "info", '
                '"notice", "warning", "err", "crit", "alert", "emerg"'
            },
        )

    def test_required_log_fields(self) -> None:
        """Transport plugins need their endpoint."""
        self.assertEqual(
            rejects(self, "udp-log", {}), {"host": "host is required", "port": "port is required"}
        )
        self.assertEqual(
            rejects(self, "http-log", {"http_endpoint": "nope"}),
            {"http_endpoint": "http_endpoint is not a url"},
        )
        self.assertEqual(
            rejects(self, "statsd", {"metrics": "latency,bogus"})["metrics"][:7], '"bogus"'
        )


def self_signed(key: Any) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class SslTests(SynchronousTestCase):
    def test_pem_checked_and_der_cached(self) -> None:
        """A valid cert/key pair is accepted and their base64 DER forms are cached."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = self_signed(key)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        out = check("ssl", {"cert": cert_pem, "key": key_pem})
        der = base64.b64decode(out["_cert_der_cache"])
        self.assertEqual(
            x509.load_der_x509_certificate(der).subject.rfc4514_string(), "CN=example.com"
        )
        serialization.load_der_private_key(base64.b64decode(out["_key_der_cache"]), None)
        self.assertIs(out["only_https"], False)
        self.assertIs(out["accept_http_if_already_terminated"], False)

    def test_invalid_pem(self) -> None:
        """Garbage cert or key gives Kong's messages; both are required."""
        self.assertEqual(
            rejects(self, "ssl", {"cert": "nope", "key": "nope"}),
            {"cert": "Invalid SSL certificate", "key": "Invalid SSL certificate key"},
        )
        self.assertEqual(
            rejects(self, "ssl", {}), {"cert": "cert is required", "key": "key is required"}
        )


class AuthConfigTests(SynchronousTestCase):
    def test_oauth2(self) -> None:
        """OAuth2 needs a flow, a mandatory scope needs scopes, provision_key is generated."""
        self.assertEqual(rejects(self, "oauth2", {}), "You need to enable at least one OAuth flow")
        self.assertEqual(
            rejects(self, "oauth2", {"enable_password_grant": True, "mandatory_scope": True}),
            {
                "mandatory_scope": "To set a mandatory scope you also need to create available scopes"
            },
        )
        out = check("oauth2", {"enable_authorization_code": "true", "scopes": "a,b"})
        self.assertRegex(out["provision_key"], HEX32)
        self.assertEqual(out["token_expiration"], 7200)
        self.assertEqual(out["scopes"], ["a", "b"])
        self.assertIs(out["hide_credentials"], False)
        self.assertIs(out["enable_implicit_grant"], False)

    def test_hmac_clock_skew(self) -> None:
        """A negative clock skew is refused."""
        self.assertEqual(
            rejects(self, "hmac-auth", {"clock_skew": -1}),
            {"clock_skew": "Clock Skew should be positive"},
        )

    def test_jwt_claims(self) -> None:
        """Only exp and nbf can be verified."""
        self.assertEqual(
            rejects(self, "jwt", {"claims_to_verify": "exp,iat"}),
            {"claims_to_verify": '"iat" is not allowed. Allowed values are: "exp", "nbf"'},
        )

    def test_no_consumer_flags(self) -> None:
        """Auth plugins (except ldap-auth), cors, acl, bot-detection and ssl are no_consumer."""
        no_consumer = {s.name for s in REGISTRY.specs() if s.no_consumer}
        self.assertEqual(
            no_consumer,
            {
                "key-auth",
                "basic-auth",
                "hmac-auth",
                "jwt",
                "oauth2",
                "acl",
                "cors",
                "bot-detection",
                "ssl",
            },
        )
        for spec in REGISTRY.specs():
            self.assertEqual(spec.config_schema.no_consumer, spec.no_consumer, spec.name)


class CredentialEntityTests(SynchronousTestCase):
    consumer = "0b1b2b3b-0000-4000-8000-000000000001"

    def test_jwt_secret_defaults_and_rs256(self) -> None:
        """Keys/secrets are generated; RS256 needs a parsable public key."""
        out = validate(JWT_SECRETS, {"consumer_id": self.consumer})
        self.assertRegex(out["key"], HEX32)
        self.assertRegex(out["secret"], HEX32)
        self.assertNotEqual(out["key"], out["secret"])
        self.assertEqual(out["algorithm"], "HS256")
        e = self.assertRaises(
            EntityError, validate, JWT_SECRETS, {"consumer_id": self.consumer, "algorithm": "RS256"}
        )
        self.assertEqual(e.message, "no mandatory 'rsa_public_key'")
        e = self.assertRaises(
            EntityError,
            validate,
            JWT_SECRETS,
            {"consumer_id": self.consumer, "algorithm": "RS256", "rsa_public_key": "x"},
        )
        self.assertEqual(e.message, "'rsa_public_key' format is invalid")
        pem = (
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        ok = validate(
            JWT_SECRETS,
            {"consumer_id": self.consumer, "algorithm": "RS256", "rsa_public_key": pem},
        )
        self.assertEqual(ok["algorithm"], "RS256")

    def test_oauth2_redirect_uris(self) -> None:
        """Redirect URIs: parsable, no fragment, at least one; client id/secret generated."""
        base = {"consumer_id": self.consumer, "name": "app"}

        def err(uris: Any) -> Any:
            e = self.assertRaises(
                SchemaError, validate, OAUTH2_CREDENTIALS, {**base, "redirect_uri": uris}
            )
            return e.fields

        self.assertEqual(err("nope"), {"redirect_uri": "cannot parse 'nope'"})
        self.assertEqual(
            err(["http://a/cb#frag"]),
            {"redirect_uri": "fragment not allowed in 'http://a/cb#frag'"},
        )
        self.assertEqual(err(""), {"redirect_uri": "at least one URI is required"})
        e = self.assertRaises(SchemaError, validate, OAUTH2_CREDENTIALS, base)
        self.assertEqual(e.fields, {"redirect_uri": "redirect_uri is required"})
        out = validate(OAUTH2_CREDENTIALS, {**base, "redirect_uri": "http://a/cb, https://b/x"})
        self.assertEqual(out["redirect_uri"], ["http://a/cb", "https://b/x"])
        self.assertRegex(out["client_id"], HEX32)
        self.assertRegex(out["client_secret"], HEX32)

    def test_oauth2_tokens_and_codes(self) -> None:
        """Tokens: bearer, refresh token and 14-day TTL only when expiring; codes live 5 minutes."""
        cred = "0b1b2b3b-0000-4000-8000-000000000002"
        token = validate(TOKENS, {"credential_id": cred, "expires_in": "7200"})
        self.assertEqual(token["token_type"], "bearer")
        self.assertRegex(token["access_token"], HEX32)
        self.assertRegex(token["refresh_token"], HEX32)
        assert TOKENS.ttl is not None and AUTHORIZATION_CODES.ttl is not None
        self.assertEqual(TOKENS.ttl(token), 1_209_600)
        forever = validate(TOKENS, {"credential_id": cred, "expires_in": 0})
        self.assertIsNone(forever["refresh_token"])
        self.assertIsNone(TOKENS.ttl(forever))
        e = self.assertRaises(SchemaError, validate, TOKENS, {"credential_id": cred})
        self.assertEqual(e.fields, {"expires_in": "expires_in is required"})
        code = validate(AUTHORIZATION_CODES, {"credential_id": cred})
        self.assertRegex(code["code"], HEX32)
        self.assertEqual(AUTHORIZATION_CODES.ttl(code), 300)


class BasicAuthPasswordTests(SynchronousTestCase):
    def test_kdf_round_trip(self) -> None:
        """A new password is stored as salted scrypt and verifies; a wrong one does not."""
        stored = hash_password("s3cret")
        self.assertTrue(stored.startswith("scrypt$"))
        self.assertTrue(is_kdf_hash(stored))
        self.assertNotEqual(stored, hash_password("s3cret"))
        self.assertTrue(verify_basicauth_password(stored, "s3cret", "any"))
        self.assertFalse(verify_basicauth_password(stored, "wrong", "any"))

    def test_legacy_sha1_verifies(self) -> None:
        """Kong's SHA1(password .. consumer_id) values keep verifying for that consumer only."""
        cid = "0b1b2b3b-0000-4000-8000-000000000001"
        stored = hashlib.sha1(("pw" + cid).encode()).hexdigest()
        self.assertEqual(legacy_hash("pw", cid), stored)
        self.assertTrue(is_legacy_hash(stored))
        self.assertTrue(verify_basicauth_password(stored, "pw", cid))
        self.assertFalse(verify_basicauth_password(stored, "pw", "other"))
        self.assertFalse(verify_basicauth_password("plain", "plain", cid))
        self.assertFalse(verify_basicauth_password("scrypt$3$8$1$AA==$AA==", "x", cid))

    def _run_hook(self, row: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        """Run the before_write hook with a recording thread runner; returns what ran."""
        ran: list[str] = []

        async def runner(fn: Callable[[], Any]) -> Any:
            ran.append("thread")
            return fn()

        coro = hash_before_write(row, old, runner)
        try:
            coro.send(None)
        except StopIteration:
            pass
        return ran

    def test_hook_hashes_in_thread_and_keeps_stored_value(self) -> None:
        """The hook hashes through run_in_thread, and keeps a value equal to the stored one."""
        row = {"password": "pw", "consumer_id": "c"}
        self.assertEqual(self._run_hook(row, None), ["thread"])
        self.assertTrue(verify_basicauth_password(row["password"], "pw", "c"))
        legacy = legacy_hash("pw", "c")
        same = {"password": legacy}
        self.assertEqual(self._run_hook(same, {"password": legacy}), [])
        self.assertEqual(same["password"], legacy)
        none: dict[str, Any] = {"password": None}
        self.assertEqual(self._run_hook(none, None), [])
        self.assertIs(BASIC_CREDENTIALS.before_write, hash_before_write)
