"""Bad input never breaks the Admin API: every write endpoint, random bodies, no 5xx, no trace.

For each generated request the answer must be a 2xx (the input happened to be
valid) or a 4xx; a 5xx or a traceback fails.  A rejected request must leave every
table, and the change log, exactly as they were.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_admin_support import AdminHarness, Response
from twisted.trial.unittest import SynchronousTestCase

MISSING = "00000000-0000-4000-8000-000000000000"
#: Stands for the seeded plugin's id (generated at seeding time) in drawn paths.
PLUGIN = "__plugin__"

#: Every field name any entity or common plugin config has, plus ids: the
#: generator mixes these with random names so that bodies hit real validators.
FIELDS = [
    "id",
    "created_at",
    "name",
    "request_host",
    "request_path",
    "strip_request_path",
    "preserve_host",
    "upstream_url",
    "username",
    "custom_id",
    "api_id",
    "consumer_id",
    "config",
    "enabled",
    "key",
    "password",
    "secret",
    "algorithm",
    "rsa_public_key",
    "client_id",
    "client_secret",
    "redirect_uri",
    "group",
    "credential_id",
    "expires_in",
    "access_token",
    "refresh_token",
    "token_type",
    "scope",
    "address",
    "config.minute",
    "config.key_names",
    "config.hide_credentials",
    "config.limits.sms.minute",
    "config.origin",
]

#: (route, natural key) of the credentials the seeded store holds.
SEEDED_CREDENTIALS = [
    ("key-auth", "k1"),
    ("basic-auth", "u1"),
    ("acls", "admins"),
    ("oauth2", "client1"),
    ("hmac-auth", "h1"),
    ("jwt", "j1"),
]

PLUGIN_NAMES = ["key-auth", "rate-limiting", "cors", "acl", "oauth2", "nope", ""]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "true", "FALSE", "10", "-1", "1e400", MISSING, "http://x.test"]),
    st.sampled_from(["a" * 5000, "/" * 300, "%zz", "*.*.com", "a,b,,c", "\x00\ud7ff"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
json_bodies = st.dictionaries(field_names, json_values, max_size=6)
form_values = st.one_of(st.text(max_size=40), st.sampled_from(["", "true", MISSING, "a" * 3000]))
form_fields = st.lists(st.tuples(field_names, form_values), max_size=8)


def segments(kind: str) -> st.SearchStrategy[str]:
    """Path segments for an item route: existing names, unknown uuids, garbage."""
    known = {
        "api": ["one"],
        "consumer": ["bob"],
        "credential": ["seeded"],
        "plugin": [PLUGIN],
        "token": ["tok1"],
    }[kind]
    odd = st.one_of(
        st.sampled_from([MISSING, "not-a-uuid", MISSING.upper(), "%00", "..", "a%2Fb"]),
        st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe="")),
    )
    # Mostly names that exist, so that most bodies reach the validators.
    return st.one_of(*[st.sampled_from(known)] * 3, odd) if known else odd


def endpoints() -> st.SearchStrategy[tuple[str, str]]:
    """(method, path) for every write route of the Admin API."""
    consumer = segments("consumer")
    credential_paths = ["key-auth", "basic-auth", "hmac-auth", "jwt", "oauth2", "acls"]
    return st.one_of(
        st.tuples(
            st.sampled_from(["POST", "PUT"]),
            st.sampled_from(["/apis", "/consumers", "/plugins", "/oauth2_tokens", "/cluster"]),
        ),
        st.tuples(
            st.sampled_from(["PATCH", "DELETE"]), segments("api").map(lambda s: f"/apis/{s}")
        ),
        st.tuples(
            st.sampled_from(["POST", "PUT"]), segments("api").map(lambda s: f"/apis/{s}/plugins")
        ),
        st.tuples(
            st.sampled_from(["PATCH", "DELETE"]),
            st.tuples(segments("api"), segments("plugin")).map(
                lambda t: f"/apis/{t[0]}/plugins/{t[1]}"
            ),
        ),
        st.tuples(st.sampled_from(["PATCH", "DELETE"]), consumer.map(lambda s: f"/consumers/{s}")),
        st.tuples(
            st.sampled_from(["PATCH", "DELETE"]), segments("plugin").map(lambda s: f"/plugins/{s}")
        ),
        st.tuples(
            st.sampled_from(["POST", "PUT"]),
            st.tuples(consumer, st.sampled_from(credential_paths)).map(
                lambda t: f"/consumers/{t[0]}/{t[1]}"
            ),
        ),
        st.tuples(
            st.sampled_from(["PATCH", "DELETE"]),
            st.tuples(consumer, st.sampled_from(SEEDED_CREDENTIALS), segments("credential")).map(
                lambda t: f"/consumers/{t[0]}/{t[1][0]}/{t[1][1] if t[2] == 'seeded' else t[2]}"
            ),
        ),
        st.tuples(
            st.sampled_from(["PATCH", "DELETE"]),
            segments("token").map(lambda s: f"/oauth2_tokens/{s}"),
        ),
        st.tuples(st.just("DELETE"), st.sampled_from(["/cluster", "/cache", "/cache/x"])),
    )


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, dict[str, str]]:
    """A body and its headers: JSON (valid or not), form, multipart, or nothing at all."""
    kind = draw(st.sampled_from(["json", "json", "form", "form", "multipart", "raw", "none"]))
    if kind == "json":
        body: Any = draw(json_bodies)
        if draw(st.booleans()) and "name" not in body:
            body["name"] = draw(st.sampled_from(PLUGIN_NAMES))
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    if kind == "form":
        pairs = draw(form_fields)
        return urlencode(pairs).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    if kind == "multipart":
        parts = "".join(
            f'--xx\r\nContent-Disposition: form-data; name="{quote(k)}"\r\n\r\n{v}\r\n'
            for k, v in draw(form_fields)
        )
        return (parts + "--xx--\r\n").encode(), {"Content-Type": "multipart/form-data; boundary=xx"}
    if kind == "raw":
        raw = draw(st.binary(max_size=60))
        ctype = draw(st.sampled_from(["application/json", "text/plain", "multipart/form-data"]))
        return raw, {"Content-Type": ctype}
    return draw(st.binary(max_size=20)), {}


def assert_clean(test: SynchronousTestCase, response: Response) -> None:
    """No 5xx and no traceback; a non-empty error body is JSON."""
    test.assertLess(response.status, 500, response)
    test.assertNotIn(b"Traceback", response.body)
    test.assertNotIn(b'File "', response.body)
    if response.status >= 400 and response.body:
        json.loads(response.body)


class BadInputTests(SynchronousTestCase):
    def seeded(self) -> AdminHarness:
        admin = AdminHarness(self)
        api = admin.api("one")
        consumer = admin.consumer("bob")
        self.plugin_id = admin.plugin("key-auth", api_id=api["id"])["id"]
        admin.insert("keyauth_credentials", {"consumer_id": consumer["id"], "key": "k1"})
        # Straight into the store: the DAO would spend ~0.2 s on the password KDF.
        admin.run(
            admin.store.insert(
                "basicauth_credentials",
                {
                    "id": "11111111-1111-4111-8111-111111111111",
                    "created_at": 1,
                    "consumer_id": consumer["id"],
                    "username": "u1",
                    "password": "not-a-real-hash",
                },
            )
        )
        admin.insert("acls", {"consumer_id": consumer["id"], "group": "admins"})
        admin.insert("hmacauth_credentials", {"consumer_id": consumer["id"], "username": "h1"})
        admin.insert("jwt_secrets", {"consumer_id": consumer["id"], "key": "j1"})
        app = admin.insert(
            "oauth2_credentials",
            {
                "consumer_id": consumer["id"],
                "name": "app",
                "client_id": "client1",
                "redirect_uri": ["http://a.test"],
            },
        )
        admin.insert(
            "oauth2_tokens", {"credential_id": app["id"], "expires_in": 10, "access_token": "tok1"}
        )
        return admin

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(endpoints(), bodies())
    def test_write_endpoints_reject_cleanly(
        self, endpoint: tuple[str, str], payload: tuple[bytes | None, dict[str, str]]
    ) -> None:
        """Any body on any write route is a 2xx or a 4xx, and a 4xx writes nothing."""
        admin = self.seeded()
        method, path = endpoint
        path = path.replace(PLUGIN, self.plugin_id)
        data, headers = payload
        before = admin.snapshot()
        response = admin.call(method, path, data=data, headers=headers)
        event(f"status {response.status}")
        assert_clean(self, response)
        if response.status >= 400:
            self.assertEqual(admin.snapshot(), before, (method, path, data, response))

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=4))
    def test_list_filters_reject_cleanly(self, query: dict[str, str]) -> None:
        """Any query string on any list route is a 200 or a 400, never a 5xx."""
        admin = self.seeded()
        qs = urlencode(query)
        for path in (
            "/apis",
            "/consumers",
            "/plugins",
            "/apis/one/plugins",
            "/consumers/bob/key-auth",
            "/oauth2_tokens",
            "/oauth2",
            "/cluster",
        ):
            response = admin.call("GET", f"{path}?{qs}")
            assert_clean(self, response)
            self.assertIn(response.status, (200, 400), (path, qs, response))

    def test_huge_strings(self) -> None:
        """Megabyte-sized field values are refused or stored, never a 5xx."""
        admin = self.seeded()
        big = "x" * 2_000_000
        for path, body in (
            ("/consumers", {"username": big}),
            ("/apis", {"request_host": big, "upstream_url": "http://x.test"}),
            ("/plugins", {"name": big}),
        ):
            response = admin.call("POST", path, json_body=body)
            assert_clean(self, response)

    def test_bad_offsets(self) -> None:
        """A forged paging offset is a 400, not a 5xx."""
        admin = self.seeded()
        for offset in ("zzz", "bm9wZQ==", "%FF", "1"):
            response = admin.call("GET", f"/apis?offset={offset}")
            assert_clean(self, response)
