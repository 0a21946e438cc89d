"""/upstreams and /upstreams/{u}/targets (Kong 1.x load balancing entities, issue 9)."""

from __future__ import annotations

from typing import Any

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

from kongtx.invalidation import keys_for
from kongtx.store.schemas import normalize_target

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class UpstreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def upstream(self, name: str = "svc.local", **kw: Any) -> dict[str, Any]:
        row: dict[str, Any] = self.admin.ok(
            "POST", "/upstreams", 201, json_body={"name": name, **kw}
        )
        return row

    def test_create_with_defaults(self) -> None:
        """A name alone gets Kong 1.x's defaults, healthchecks included, in full."""
        up = self.upstream()
        self.assertEqual(up["algorithm"], "round-robin")
        self.assertEqual((up["hash_on"], up["hash_fallback"], up["slots"]), ("none", "none", 10000))
        active = up["healthchecks"]["active"]
        self.assertEqual(
            (active["type"], active["timeout"], active["concurrency"], active["http_path"]),
            ("http", 1, 10, "/"),
        )
        self.assertEqual(
            active["healthy"], {"interval": 0, "http_statuses": [200, 302], "successes": 0}
        )
        self.assertEqual(
            up["healthchecks"]["passive"]["unhealthy"],
            {
                "http_statuses": [429, 500, 503],
                "tcp_failures": 0,
                "timeouts": 0,
                "http_failures": 0,
            },
        )
        self.assertEqual(self.admin.ok("GET", "/upstreams/svc.local"), up)
        self.assertEqual(self.admin.ok("GET", f"/upstreams/{up['id']}"), up)

    def test_hash_on_defaults_to_consistent_hashing(self) -> None:
        """hash_on without an algorithm picks consistent-hashing; an explicit one is kept."""
        self.assertEqual(self.upstream("a", hash_on="ip")["algorithm"], "consistent-hashing")
        given = self.upstream("b", hash_on="ip", algorithm="least-connections")
        self.assertEqual(given["algorithm"], "least-connections")

    def test_form_dotted_healthchecks_merge_over_defaults(self) -> None:
        """Form-encoded dotted keys set nested healthcheck fields; the rest keep defaults."""
        up = self.admin.ok(
            "POST",
            "/upstreams",
            201,
            data=b"name=svc&healthchecks.active.timeout=2.5"
            b"&healthchecks.active.unhealthy.http_statuses=500,502"
            b"&healthchecks.passive.unhealthy.tcp_failures=3",
            headers=FORM,
        )
        active = up["healthchecks"]["active"]
        self.assertEqual(active["timeout"], 2.5)
        self.assertEqual(active["unhealthy"]["http_statuses"], [500, 502])
        self.assertEqual(active["unhealthy"]["timeouts"], 0)
        self.assertEqual(active["healthy"]["http_statuses"], [200, 302])
        self.assertEqual(up["healthchecks"]["passive"]["unhealthy"]["tcp_failures"], 3)

    def test_validation_field_map(self) -> None:
        """Bad names, ranges, nested types and unknown nested fields: one 400 keyed by dotted path."""
        body = {
            "name": "bad name",
            "slots": 5,
            "algorithm": "random",
            "healthchecks": {
                "active": {"timeout": "x", "concurrency": 0, "http_path": "health", "foo": 1},
                "passive": {"unhealthy": {"http_statuses": [99, "abc"], "timeouts": 256}},
            },
        }
        self.assertEqual(
            self.admin.ok("POST", "/upstreams", 400, json_body=body),
            {
                "name": "Invalid name; must be a valid hostname",
                "slots": "value should be between 10 and 65536",
                "algorithm": '"random" is not allowed. Allowed values are: '
                '"round-robin", "consistent-hashing", "least-connections"',
                "healthchecks.active.timeout": "timeout is not a number",
                "healthchecks.active.concurrency": "value should be between 1 and 2147483648",
                "healthchecks.active.http_path": "should start with: /",
                "healthchecks.active.foo": "foo is an unknown field",
                "healthchecks.passive.unhealthy.http_statuses": [
                    "value should be between 100 and 999: 99",
                    "expected an integer: abc",
                ],
                "healthchecks.passive.unhealthy.timeouts": "value should be between 0 and 255",
            },
        )
        self.assertEqual(self.admin.ok("GET", "/upstreams")["total"], 0)

    def test_http_path_is_a_path(self) -> None:
        """A probe path with a space, a line break or non-ASCII would break (or inject into)
        the probe's request line: 400, as Kong 1.x's path rule."""
        for bad in ("/a b", "/\r\nX-Evil: 1", "/\u00e9"):
            body = {"name": "p.test", "healthchecks": {"active": {"http_path": bad}}}
            self.assertEqual(
                self.admin.ok("POST", "/upstreams", 400, json_body=body),
                {
                    "healthchecks.active.http_path": f"invalid path: '{bad}' "
                    "(characters outside of the reserved list of RFC 3986 found)"
                },
            )
        good = {"name": "p.test", "healthchecks": {"active": {"http_path": "/st%20atus?x=1&y=~"}}}
        self.admin.ok("POST", "/upstreams", 201, json_body=good)

    def test_name_rules(self) -> None:
        """A name is required, a hostname, no IP address, no port."""
        cases = {
            "": "name is required",
            "10.0.0.1": "Invalid name; no ip addresses allowed",
            "svc:80": "Invalid name; no port allowed",
            "http://svc": "Invalid name; must be a valid hostname",
            "-svc": "Invalid name; must be a valid hostname",
        }
        for name, message in cases.items():
            self.assertEqual(
                self.admin.ok("POST", "/upstreams", 400, json_body={"name": name}),
                {"name": message},
                name,
            )

    def test_cleared_hash_fields_count_as_none(self) -> None:
        """PATCH null clears a field; a cleared hash_on / hash_fallback is "none" to the hash
        rules: clearing hash_on under a fallback is refused, clearing the fallback is fine."""
        fields = {"name": "h.test", "hash_on": "header", "hash_on_header": "x-a"}
        self.admin.ok("POST", "/upstreams", 201, json_body={**fields, "hash_fallback": "ip"})
        self.assertEqual(
            self.admin.ok("PATCH", "/upstreams/h.test", 400, json_body={"hash_on": None}),
            {"hash_fallback": "Cannot set fallback if primary 'hash_on' is not set"},
        )
        self.admin.ok("PATCH", "/upstreams/h.test", 200, json_body={"hash_fallback": None})
        self.admin.ok("PATCH", "/upstreams/h.test", 200, json_body={"hash_on": None})

    def test_hash_rules(self) -> None:
        """Kong's hash rules: headers named, fallback only with hash_on, never the same hash."""
        cases: list[tuple[dict[str, Any], dict[str, str]]] = [
            (
                {"hash_on": "header"},
                {"hash_on_header": "hash_on_header is required when hash_on is 'header'"},
            ),
            (
                {"hash_fallback": "ip"},
                {"hash_fallback": "Cannot set fallback if primary 'hash_on' is not set"},
            ),
            (
                {"hash_on": "ip", "hash_fallback": "ip"},
                {"hash_fallback": "Cannot set fallback and primary hashes to the same value"},
            ),
            (
                {
                    "hash_on": "header",
                    "hash_on_header": "X-A",
                    "hash_fallback": "header",
                    "hash_fallback_header": "x-a",
                },
                {"hash_fallback": "Cannot set fallback and primary hashes to the same value"},
            ),
            (
                {"hash_on": "header", "hash_on_header": "bad header"},
                {
                    "hash_on_header": "bad header name 'bad header', allowed characters "
                    "are A-Z, a-z, 0-9, '_', and '-'"
                },
            ),
        ]
        for extra, expected in cases:
            self.assertEqual(
                self.admin.ok("POST", "/upstreams", 400, json_body={"name": "u", **extra}),
                expected,
                extra,
            )
        ok = self.upstream(
            "u",
            hash_on="header",
            hash_on_header="X-A",
            hash_fallback="header",
            hash_fallback_header="X-B",
        )
        self.assertEqual(ok["algorithm"], "consistent-hashing")
        # a blank header clears it (forms cannot send null); hash_on back to none first
        cleared = self.admin.ok(
            "PATCH",
            "/upstreams/u",
            data=b"hash_on=none&hash_fallback=none&hash_on_header=&hash_fallback_header=",
            headers=FORM,
        )
        self.assertNotIn("hash_on_header", cleared)
        self.assertNotIn("hash_fallback_header", cleared)

    def test_duplicate_name_is_409(self) -> None:
        self.upstream("svc")
        self.assertEqual(
            self.admin.ok("POST", "/upstreams", 409, json_body={"name": "svc"}),
            {"name": "already exists with value 'svc'"},
        )

    def test_patch_deep_merges_healthchecks(self) -> None:
        """PATCH of one nested field keeps every other healthcheck field."""
        self.upstream("svc")
        patched = self.admin.ok(
            "PATCH",
            "/upstreams/svc",
            json_body={"healthchecks": {"active": {"healthy": {"interval": 5}}}},
        )
        healthy = patched["healthchecks"]["active"]["healthy"]
        self.assertEqual(healthy, {"interval": 5, "http_statuses": [200, 302], "successes": 0})
        self.assertEqual(patched["healthchecks"]["active"]["timeout"], 1)
        self.assertEqual(
            self.admin.ok(
                "PATCH", "/upstreams/svc", 400, json_body={"healthchecks": {"active": {"oops": 1}}}
            ),
            {"healthchecks.active.oops": "oops is an unknown field"},
        )
        self.admin.ok("PATCH", "/upstreams/nope", 404, json_body={"slots": 100})

    def test_put_by_name_creates_then_replaces(self) -> None:
        """PUT /upstreams/{name} creates it; a second PUT replaces it (defaults back)."""
        created = self.admin.ok("PUT", "/upstreams/svc", 201, json_body={"slots": 100})
        self.assertEqual((created["name"], created["slots"]), ("svc", 100))
        replaced = self.admin.ok("PUT", "/upstreams/svc", 200, json_body={"hash_on": "ip"})
        self.assertEqual(replaced["id"], created["id"])
        self.assertEqual(replaced["created_at"], created["created_at"])
        self.assertEqual((replaced["slots"], replaced["algorithm"]), (10000, "consistent-hashing"))
        unknown = "7c9a7f14-6a7b-4b0a-9a4e-0e6d2b3b6f00"
        self.admin.ok("PUT", f"/upstreams/{unknown}", 404, json_body={"slots": 100})

    def test_list_paginates_and_filters_by_tags(self) -> None:
        self.upstream("a", tags=["prod"])
        self.upstream("b", tags=["dev"])
        self.upstream("c", tags=["prod", "eu"])
        page = self.admin.ok("GET", "/upstreams?size=2")
        self.assertEqual((len(page["data"]), page["total"]), (2, 3))
        self.assertIn("next", page)
        prod = self.admin.ok("GET", "/upstreams?tags=prod")
        self.assertEqual(sorted(u["name"] for u in prod["data"]), ["a", "c"])
        both = self.admin.ok("GET", "/upstreams?tags=prod,eu")
        self.assertEqual([u["name"] for u in both["data"]], ["c"])

    def test_dbless_is_read_only(self) -> None:
        """With database = off, writes on upstream and target routes are 405."""
        self.admin.resource.declarative = object()  # type: ignore[assignment]
        for method, path in (
            ("POST", "/upstreams"),
            ("PATCH", "/upstreams/x"),
            ("DELETE", "/upstreams/x"),
            ("POST", "/upstreams/x/targets"),
            ("DELETE", "/upstreams/x/targets/y"),
        ):
            self.assertEqual(self.admin.call(method, path, json_body={}).status, 405, path)


class TargetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)
        self.up = self.admin.ok("POST", "/upstreams", 201, json_body={"name": "svc"})

    def target(self, target: str, status: int = 201, **kw: Any) -> Any:
        return self.admin.ok(
            "POST", "/upstreams/svc/targets", status, json_body={"target": target, **kw}
        )

    def test_create_normalises(self) -> None:
        """The port defaults to 8000, names are lower-cased, IPv6 is bracketed."""
        self.assertEqual(self.target("Example.COM")["target"], "example.com:8000")
        self.assertEqual(self.target("10.0.0.1:81")["target"], "10.0.0.1:81")
        self.assertEqual(self.target("::1")["target"], "[::1]:8000")
        self.assertEqual(self.target("[0:0::2]:9")["target"], "[::2]:9")
        row = self.target("b.example", weight=0)
        self.assertEqual((row["weight"], row["upstream_id"]), (0, self.up["id"]))
        self.assertEqual(self.target("c.example")["weight"], 100)

    def test_invalid_targets(self) -> None:
        message = "Invalid target; not a valid hostname or ip address"
        for bad in ("a b", "host:0", "host:65536", "host:x", "[::1", "[10.0.0.1]:80", "1.2.3"):
            self.assertEqual(self.target(bad, 400), {"target": message}, bad)
        self.assertEqual(self.target("", 400), {"target": "target is required"})
        self.assertEqual(
            self.target("a", 400, weight=1001), {"weight": "value should be between 0 and 1000"}
        )
        self.assertEqual(self.target("a", 400, weight=1.5), {"weight": "expected an integer"})
        self.assertEqual(self.admin.ok("GET", "/upstreams/svc/targets")["total"], 0)

    def test_duplicate_target_is_409(self) -> None:
        """(upstream, target) is unique after normalisation; another upstream may hold it."""
        self.target("a.example:8000")
        self.assertEqual(
            self.target("A.example", 409), {"target": "already exists with value 'a.example:8000'"}
        )
        self.admin.ok("POST", "/upstreams", 201, json_body={"name": "other"})
        self.admin.ok("POST", "/upstreams/other/targets", 201, json_body={"target": "a.example"})
        second = self.target("b.example")
        self.assertEqual(
            self.admin.ok(
                "PATCH",
                f"/upstreams/svc/targets/{second['id']}",
                409,
                json_body={"target": "a.example"},
            ),
            {"target": "already exists with value 'a.example:8000'"},
        )

    def test_unknown_upstream_is_404(self) -> None:
        """A target of an upstream that does not exist: 404, nothing written."""
        self.admin.ok("POST", "/upstreams/nope/targets", 404, json_body={"target": "a"})
        self.admin.ok("GET", "/upstreams/nope/targets", 404)
        self.assertEqual(self.admin.run(self.admin.store.select("targets", {})), [])

    def test_get_patch_delete_by_target_or_id(self) -> None:
        row = self.target("a.example")
        self.assertEqual(self.admin.ok("GET", "/upstreams/svc/targets/a.example"), row)
        self.assertEqual(self.admin.ok("GET", "/upstreams/svc/targets/a.example:8000"), row)
        self.assertEqual(
            self.admin.ok("GET", f"/upstreams/{self.up['id']}/targets/{row['id']}"), row
        )
        self.admin.ok("GET", "/upstreams/svc/targets/b.example", 404)
        self.admin.ok("GET", "/upstreams/svc/targets/not%20a%20target", 404)
        patched = self.admin.ok(
            "PATCH", "/upstreams/svc/targets/a.example", json_body={"weight": 5}
        )
        self.assertEqual((patched["weight"], patched["id"]), (5, row["id"]))
        self.admin.ok("PATCH", "/upstreams/svc/targets/a.example", 400, json_body={})
        self.admin.ok("DELETE", f"/upstreams/svc/targets/{row['id']}", 204)
        self.admin.ok("DELETE", f"/upstreams/svc/targets/{row['id']}", 404)

    def test_target_of_another_upstream_is_404(self) -> None:
        """A target id from another upstream is not found under this one, nor moved by PUT."""
        self.admin.ok("POST", "/upstreams", 201, json_body={"name": "other"})
        theirs = self.admin.ok(
            "POST", "/upstreams/other/targets", 201, json_body={"target": "x.example"}
        )
        self.admin.ok("GET", f"/upstreams/svc/targets/{theirs['id']}", 404)
        self.admin.ok("DELETE", f"/upstreams/svc/targets/{theirs['id']}", 404)
        self.admin.ok(
            "PUT",
            "/upstreams/svc/targets",
            404,
            json_body={"id": theirs["id"], "target": "x.example", "created_at": 1},
        )
        self.assertEqual(self.admin.ok("GET", "/upstreams/other/targets")["total"], 1)

    def test_list_in_creation_order_with_tags(self) -> None:
        self.target("a.example", tags=["blue"])
        self.admin.reactor.advance(1)
        self.target("b.example", tags=["green"])
        listed = self.admin.ok("GET", "/upstreams/svc/targets")
        self.assertEqual(
            [t["target"] for t in listed["data"]], ["a.example:8000", "b.example:8000"]
        )
        green = self.admin.ok("GET", "/upstreams/svc/targets?tags=green")
        self.assertEqual([t["target"] for t in green["data"]], ["b.example:8000"])

    def test_delete_upstream_cascades(self) -> None:
        """Deleting an upstream deletes its targets (and says so to listeners)."""
        self.target("a.example")
        self.target("b.example")
        seen: list[tuple[str, str]] = []
        self.admin.dao.add_listener(lambda c, k, old, new: seen.append((c, k)))
        self.admin.ok("DELETE", "/upstreams/svc", 204)
        self.assertEqual(self.admin.run(self.admin.store.select("targets", {})), [])
        self.assertEqual(
            sorted(seen), [("targets", "delete"), ("targets", "delete"), ("upstreams", "delete")]
        )


class HelperTests(SynchronousTestCase):
    def test_normalize_target(self) -> None:
        self.assertEqual(normalize_target(" host "), "host:8000")
        self.assertEqual(normalize_target("HOST:1"), "host:1")
        self.assertEqual(normalize_target("[::FFFF:1.2.3.4]:80"), "[::ffff:102:304]:80")
        self.assertIsNone(normalize_target("host:"))
        self.assertIsNone(normalize_target(5))
        # only ASCII digits make a port ("\u0663" is an Arabic-Indic 3, int() reads it)
        self.assertIsNone(normalize_target("host:\u0663"))
        self.assertIsNone(normalize_target("host:\u00b2"))
        # an IPv6 zone ("%eth0") names an interface of one machine, not an address
        self.assertIsNone(normalize_target("[fe80::1%eth0]:80"))
        self.assertIsNone(normalize_target("fe80::1%1"))

    def test_cache_keys(self) -> None:
        """The contract's keys: a rename clears both names; a target its upstream's list."""
        old = {"id": "u1", "name": "a"}
        new = {"id": "u1", "name": "b"}
        self.assertEqual(
            sorted(keys_for("upstreams", old, new)),
            ["targets:u1", "upstreams:a", "upstreams:b", "upstreams:u1"],
        )
        self.assertEqual(
            keys_for("targets", None, {"id": "t1", "upstream_id": "u1"}), ["targets:u1"]
        )
