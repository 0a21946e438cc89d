"""SPEC §2's validation messages, as an operator sees them through the Admin API."""

from __future__ import annotations

from typing import Any

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

UP = "http://up.test"
ALPHA = "must only contain alphanumeric and '., -, _, ~' characters"
HOST_OR_PATH = "At least a 'request_host' or a 'request_path' must be specified"

#: (path, JSON body, status, exact body) for every API rule of SPEC §2.1.
API_CASES: list[tuple[dict[str, Any], int, dict[str, Any]]] = [
    ({"name": "a b", "request_host": "x.com", "upstream_url": UP}, 400, {"name": f"name {ALPHA}"}),
    ({"request_host": "x.com"}, 400, {"upstream_url": "upstream_url is required"}),
    (
        {"request_host": "x.com", "upstream_url": "x"},
        400,
        {"upstream_url": "upstream_url is not a url"},
    ),
    (
        {"request_host": "x.com", "upstream_url": "ftp://x.com"},
        400,
        {"upstream_url": "Supported protocols are HTTP and HTTPS"},
    ),
    (
        {"upstream_url": UP, "request_host": " "},
        400,
        {"request_host": HOST_OR_PATH, "request_path": HOST_OR_PATH},
    ),
    (
        {"request_host": "a b.com", "upstream_url": UP},
        400,
        {"request_host": "Invalid value: a b.com"},
    ),
    (
        {"request_host": "x.com:80", "upstream_url": UP},
        400,
        {"request_host": "Invalid value: x.com:80"},
    ),
    (
        {"request_host": "*.a.*", "upstream_url": UP},
        400,
        {"request_host": "Only one wildcard is allowed: *.a.*"},
    ),
    (
        {"request_host": "a.*.com", "upstream_url": UP},
        400,
        {"request_host": "Invalid wildcard placement: a.*.com"},
    ),
    (
        {"request_path": "x", "upstream_url": UP},
        400,
        {"request_path": "must be prefixed with slash: 'x'"},
    ),
    ({"request_path": "/a//b", "upstream_url": UP}, 400, {"request_path": "invalid: '/a//b'"}),
    (
        {"request_path": "/a b", "upstream_url": UP},
        400,
        {"request_path": "must only contain alphanumeric and '., -, _, ~, /, %' characters"},
    ),
    (
        {"request_path": "/a%zz", "upstream_url": UP},
        400,
        {"request_path": "must use proper encoding; '%zz' is invalid"},
    ),
    (
        {"request_host": "x.com", "upstream_url": UP, "preserve_host": "maybe"},
        400,
        {"preserve_host": "preserve_host is not a boolean"},
    ),
    (
        {"request_host": "x.com", "upstream_url": UP, "foo": 1},
        400,
        {"foo": "foo is an unknown field"},
    ),
]


class ApiRuleTests(SynchronousTestCase):
    def test_api_rules(self) -> None:
        """Every API field rule answers 400 with SPEC's message, and writes nothing."""
        admin = AdminHarness(self)
        before = admin.snapshot()
        for body, status, expected in API_CASES:
            response = admin.call("POST", "/apis", json_body=body)
            self.assertEqual((response.status, response.json), (status, expected), body)
        self.assertEqual(admin.snapshot(), before)

    def test_accepted_hosts_and_paths(self) -> None:
        """Valid wildcards are accepted and a trailing slash of request_path is removed."""
        admin = AdminHarness(self)
        for host in ("*.example.org", "example.*"):
            admin.ok("POST", "/apis", 201, json_body={"request_host": host, "upstream_url": UP})
        api = admin.ok(
            "POST", "/apis", 201, json_body={"request_path": "/a/b/", "upstream_url": UP}
        )
        self.assertEqual(api["request_path"], "/a/b")
        self.assertEqual(api["name"], "a-b")

    def test_unique_host_and_path(self) -> None:
        """request_host and request_path are unique: 409 already exists."""
        admin = AdminHarness(self)
        admin.api("one", request_path="/p")
        self.assertEqual(
            admin.ok(
                "POST", "/apis", 409, json_body={"request_host": "one.com", "upstream_url": UP}
            ),
            {"request_host": "already exists with value 'one.com'"},
        )


class ConsumerRuleTests(SynchronousTestCase):
    def test_custom_id_is_unique(self) -> None:
        """custom_id is unique on every backend (kongtx closes Postgres's gap): 409."""
        admin = AdminHarness(self)
        admin.consumer("a", custom_id="c1")
        self.assertEqual(
            admin.ok("POST", "/consumers", 409, form={"custom_id": "c1"}),
            {"custom_id": "already exists with value 'c1'"},
        )


class CredentialRuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.admin.consumer("bob")

    def test_jwt_rs256_needs_a_key(self) -> None:
        """RS256 without rsa_public_key is 400 no mandatory 'rsa_public_key'."""
        self.assertEqual(
            self.admin.ok("POST", "/consumers/bob/jwt", 400, form={"algorithm": "RS256"}),
            {"message": "no mandatory 'rsa_public_key'"},
        )

    def test_jwt_rs256_bad_pem(self) -> None:
        """An unparsable PEM is 400 'rsa_public_key' format is invalid."""
        response = self.admin.call(
            "POST", "/consumers/bob/jwt", form={"algorithm": "RS256", "rsa_public_key": "nope"}
        )
        self.assertEqual(response.status, 400)
        self.assertIn("'rsa_public_key' format is invalid", response.body.decode())

    def test_jwt_algorithm_enum(self) -> None:
        """An algorithm outside HS256/RS256 is 400 with the enum message."""
        self.assertEqual(
            self.admin.ok("POST", "/consumers/bob/jwt", 400, form={"algorithm": "none"}),
            {"algorithm": '"none" is not allowed. Allowed values are: "HS256", "RS256"'},
        )

    def test_oauth2_redirect_uri_rules(self) -> None:
        """redirect_uri must parse and carry no fragment; name is required."""
        cases = [
            ({"name": "x", "redirect_uri": "nope"}, {"redirect_uri": "cannot parse 'nope'"}),
            (
                {"name": "x", "redirect_uri": "http://a.test/#f"},
                {"redirect_uri": "fragment not allowed in 'http://a.test/#f'"},
            ),
            ({"redirect_uri": "http://a.test"}, {"name": "name is required"}),
            ({"name": "x"}, {"redirect_uri": "redirect_uri is required"}),
        ]
        for form, expected in cases:
            self.assertEqual(
                self.admin.ok("POST", "/consumers/bob/oauth2", 400, form=form), expected
            )

    def test_acl_group_required(self) -> None:
        """An acl without group is 400 group is required."""
        self.assertEqual(
            self.admin.ok("POST", "/consumers/bob/acls", 400, json_body={}),
            {"group": "group is required"},
        )

    def test_token_rules(self) -> None:
        """oauth2 tokens need expires_in and only know the bearer type."""
        app = self.admin.ok(
            "POST",
            "/consumers/bob/oauth2",
            201,
            form={"name": "a", "redirect_uri": "http://a.test"},
        )
        self.assertEqual(
            self.admin.ok("POST", "/oauth2_tokens", 400, form={"credential_id": app["id"]}),
            {"expires_in": "expires_in is required"},
        )
        body = self.admin.ok(
            "POST",
            "/oauth2_tokens",
            400,
            form={"credential_id": app["id"], "expires_in": "5", "token_type": "mac"},
        )
        self.assertEqual(body, {"token_type": '"mac" is not allowed. Allowed values are: "bearer"'})


class GenericRuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.admin.api("one")

    def test_immutable(self) -> None:
        """Changing an immutable field is 400 <field> cannot be updated."""
        self.assertEqual(
            self.admin.ok("PATCH", "/apis/one", 400, json_body={"created_at": 5}),
            {"created_at": "created_at cannot be updated"},
        )

    def test_config_self_check(self) -> None:
        """A plugin config self_check failure is 400 {"config": reason}."""
        self.assertEqual(
            self.admin.ok("POST", "/plugins", 400, form={"name": "rate-limiting"}),
            {
                "config": "You need to set at least one limit: second, minute, hour, day, month, year"
            },
        )

    def test_several_fields(self) -> None:
        """Several bad fields are reported together, nested config keys as config.<field>."""
        body = self.admin.ok(
            "POST",
            "/plugins",
            400,
            json_body={"name": "rate-limiting", "config": {"minute": "x", "hour": [1]}},
        )
        self.assertEqual(
            body,
            {"config.minute": "minute is not a number", "config.hour": "hour is not a number"},
        )

    def test_forged_offset(self) -> None:
        """An offset this store did not hand out is 400 naming it."""
        self.assertEqual(
            self.admin.ok("GET", "/apis?offset=zz", 400), {"offset": "zz is not a valid offset"}
        )
