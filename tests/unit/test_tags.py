"""Kong 1.1 tags: the tag rule, the ``?tags=`` filter syntax and the Admin API on every entity."""

from __future__ import annotations

from typing import Any

from test_admin_support import AdminHarness
from twisted.trial.unittest import SynchronousTestCase

from kongtx.dao_checks import parse_tag_filter
from kongtx.store.rules import TagFilter, matches_filter
from kongtx.store.schemas import check_tags, tag_problem
from kongtx.store.tables import TAGGED

BAD = "invalid tag '{}': expected printable ascii (except `,` and `/`)"


class TagRuleTests(SynchronousTestCase):
    def test_printable_ascii_is_a_tag(self) -> None:
        """Letters, digits and ASCII punctuation other than , and / make a tag."""
        for tag in ("prod", "team-a", "v1.2", "x_y~z", "!#$%&'()*+-.:;<=>?@[]^_`{|}~"):
            self.assertIsNone(tag_problem(tag), tag)

    def test_refused_tags(self) -> None:
        """Empty, spaces, comma, slash, non-ASCII and non-strings break the rule."""
        for tag in ("", "a b", "a,b", "a/b", "é", "tab\t"):
            self.assertEqual(tag_problem(tag), BAD.format(tag))
        self.assertEqual(tag_problem(3), BAD.format("3"))

    def test_check_tags_dedupes_and_empties(self) -> None:
        """A valid list loses its repeats; an empty list stores as no tags."""
        values: dict[str, Any] = {"tags": ["a", "b", "a"]}
        self.assertIsNone(check_tags(values["tags"], values))
        self.assertEqual(values["tags"], ["a", "b"])
        values = {"tags": []}
        self.assertIsNone(check_tags([], values))
        self.assertIsNone(values["tags"])

    def test_check_tags_reports_every_bad_tag(self) -> None:
        """Each bad tag gets its own message."""
        self.assertEqual(
            check_tags(["ok", "a b", "c/d"], {}), [BAD.format("a b"), BAD.format("c/d")]
        )

    def test_every_admin_entity_is_tagged(self) -> None:
        """apis, consumers, plugins, upstreams, targets and every credential table carry tags; tokens do not."""
        self.assertEqual(
            TAGGED,
            {
                "apis",
                "consumers",
                "plugins",
                "keyauth_credentials",
                "basicauth_credentials",
                "hmacauth_credentials",
                "jwt_secrets",
                "oauth2_credentials",
                "acls",
                "upstreams",
                "targets",
            },
        )


class FilterSyntaxTests(SynchronousTestCase):
    def test_comma_means_all(self) -> None:
        """``a,b`` wants both tags."""
        self.assertEqual(parse_tag_filter("a,b"), TagFilter(("a", "b"), "all"))

    def test_slash_means_any(self) -> None:
        """``a/b`` wants either tag."""
        self.assertEqual(parse_tag_filter("a/b"), TagFilter(("a", "b"), "any"))

    def test_single_and_empty(self) -> None:
        """One tag is that tag; an empty value is no filter; a repeated argument counts once."""
        self.assertEqual(parse_tag_filter("a"), TagFilter(("a",), "all"))
        self.assertIsNone(parse_tag_filter(""))
        self.assertEqual(parse_tag_filter(["x", "y"]), TagFilter(("x",), "all"))

    def test_at_most_five(self) -> None:
        """Six tags are refused with Kong's reason."""
        with self.assertRaises(ValueError) as caught:
            parse_tag_filter("a,b,c,d,e,f")
        self.assertEqual(str(caught.exception), "cannot query more than 5 tags")

    def test_bad_tags_and_mixed_separators(self) -> None:
        """A bad tag, or ``,`` mixed with ``/``, is refused with Kong's reason."""
        for raw in ("a b", "a,b/c", "a,,b"):
            with self.assertRaises(ValueError) as caught:
                parse_tag_filter(raw)
            self.assertEqual(
                str(caught.exception), "must only contain printable ascii (except `,` and `/`)"
            )

    def test_matching(self) -> None:
        """all/any membership on a stored list; a row without tags matches neither."""
        both = TagFilter(("a", "b"), "all")
        either = TagFilter(("a", "b"), "any")
        self.assertTrue(both.matches(["b", "c", "a"]))
        self.assertFalse(both.matches(["a"]))
        self.assertTrue(either.matches(["b"]))
        self.assertFalse(either.matches(None))
        self.assertTrue(matches_filter(3, 3))
        self.assertTrue(matches_filter(["a"], TagFilter(("a",))))


class AdminTagTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.admin = AdminHarness(self)

    def test_create_with_tags_json_and_form(self) -> None:
        """Tags come as a JSON array or a comma-separated form value and render as an array."""
        api = self.admin.ok(
            "POST",
            "/apis",
            201,
            json_body={
                "name": "a",
                "request_host": "a.com",
                "upstream_url": "http://u",
                "tags": ["x", "y"],
            },
        )
        self.assertEqual(api["tags"], ["x", "y"])
        consumer = self.admin.ok(
            "POST", "/consumers", 201, form={"username": "bob", "tags": "p, q"}
        )
        self.assertEqual(consumer["tags"], ["p", "q"])
        self.assertEqual(self.admin.ok("GET", "/consumers/bob")["tags"], ["p", "q"])

    def test_no_tags_no_key(self) -> None:
        """An entity without tags has no ``tags`` key, like every null column."""
        self.assertNotIn("tags", self.admin.consumer("bob"))

    def test_invalid_tag_is_400(self) -> None:
        """A bad tag is a field error with Kong's message."""
        self.assertEqual(
            self.admin.ok(
                "POST", "/consumers", 400, json_body={"username": "b", "tags": ["ok", "a b"]}
            ),
            {"tags": BAD.format("a b")},
        )
        self.assertEqual(
            self.admin.ok("POST", "/consumers", 400, json_body={"username": "b", "tags": "x/y"}),
            {"tags": BAD.format("x/y")},
        )
        self.assertEqual(
            self.admin.ok("POST", "/consumers", 400, json_body={"username": "b", "tags": {"a": 1}}),
            {"tags": "tags is not an array"},
        )

    def test_patch_sets_and_clears(self) -> None:
        """PATCH replaces the tags; an empty value removes them."""
        self.admin.consumer("bob", tags=["a"])
        self.assertEqual(
            self.admin.ok("PATCH", "/consumers/bob", form={"tags": "b,c"})["tags"], ["b", "c"]
        )
        self.assertNotIn("tags", self.admin.ok("PATCH", "/consumers/bob", form={"tags": ""}))

    def test_filter_all_and_any(self) -> None:
        """``?tags=a,b`` lists entities with both, ``?tags=a/b`` those with either."""
        self.admin.consumer("ab", tags=["a", "b"])
        self.admin.consumer("a", tags=["a"])
        self.admin.consumer("b", tags=["b", "z"])
        self.admin.consumer("none")

        def names(query: str) -> tuple[list[str], int]:
            page = self.admin.ok("GET", f"/consumers?tags={query}")
            return sorted(c["username"] for c in page["data"]), page["total"]

        self.assertEqual(names("a,b"), (["ab"], 1))
        self.assertEqual(names("a/b"), (["a", "ab", "b"], 3))
        self.assertEqual(names("z"), (["b"], 1))
        self.assertEqual(names("nope"), ([], 0))

    def test_filter_pages_and_total(self) -> None:
        """Paging a tag filter neither skips nor repeats, and total counts the matches."""
        for i in range(5):
            self.admin.consumer(f"t{i}", tags=["keep"] if i % 2 == 0 else ["drop"])
        seen: list[str] = []
        path = "/consumers?tags=keep&size=1"
        while True:
            page = self.admin.ok("GET", path)
            self.assertEqual(page["total"], 3)
            seen += [c["username"] for c in page["data"]]
            if "offset" not in page:
                break
            path = f"/consumers?tags=keep&size=1&offset={page['offset']}"
        self.assertEqual(sorted(seen), ["t0", "t2", "t4"])

    def test_filter_with_other_filters(self) -> None:
        """A tag filter ANDs with equality filters."""
        self.admin.consumer("a", custom_id="x", tags=["t"])
        self.admin.consumer("b", custom_id="y", tags=["t"])
        page = self.admin.ok("GET", "/consumers?tags=t&custom_id=y")
        self.assertEqual([c["username"] for c in page["data"]], ["b"])

    def test_bad_filter_is_400(self) -> None:
        """Bad filters are 400 with Kong's reason keyed by ``tags``."""
        self.assertEqual(
            self.admin.ok("GET", "/apis?tags=a,b,c,d,e,f", 400),
            {"tags": "cannot query more than 5 tags"},
        )
        self.assertEqual(
            self.admin.ok("GET", "/apis?tags=a%20b", 400),
            {"tags": "must only contain printable ascii (except `,` and `/`)"},
        )

    def test_plugins_and_credentials(self) -> None:
        """Plugins and consumer credentials take tags and filter on them too."""
        self.admin.api("svc")
        plugin = self.admin.ok(
            "POST", "/apis/svc/plugins", 201, form={"name": "key-auth", "tags": "edge"}
        )
        self.assertEqual(plugin["tags"], ["edge"])
        self.assertEqual(self.admin.ok("GET", "/plugins?tags=edge")["total"], 1)
        self.assertEqual(self.admin.ok("GET", "/apis/svc/plugins?tags=other")["total"], 0)
        self.admin.consumer("bob")
        key = self.admin.ok(
            "POST", "/consumers/bob/key-auth", 201, form={"key": "k1", "tags": "ci"}
        )
        self.assertEqual(key["tags"], ["ci"])
        self.admin.ok("POST", "/consumers/bob/key-auth", 201, form={"key": "k2"})
        page = self.admin.ok("GET", "/consumers/bob/key-auth?tags=ci")
        self.assertEqual([k["key"] for k in page["data"]], ["k1"])
        acl = self.admin.ok("POST", "/consumers/bob/acls", 201, form={"group": "g", "tags": "x"})
        self.assertEqual(acl["tags"], ["x"])
