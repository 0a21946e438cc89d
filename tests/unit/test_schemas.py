"""The validator and the core entity schemas (SPEC §1.1, §1.2, §2.1-2.4)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kongtx.errors import EntityError, SchemaError
from kongtx.store.schemas import (
    APIS,
    CONSUMERS,
    NODES,
    CheckContext,
    Field,
    Schema,
    add_error,
    coerce,
    core_schemas,
    default_api_name,
    is_uuid,
    merge_patch,
    random_hex,
    schema_to_json,
    validate,
)

API = {"request_host": "example.com", "upstream_url": "http://up.test"}


def errors_of(
    case: SynchronousTestCase, schema: Schema, values: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """The field map of the SchemaError ``validate`` raises."""
    e = case.assertRaises(SchemaError, validate, schema, values, **kw)
    return dict(e.fields)


class CoercionTests(SynchronousTestCase):
    def test_strings_are_trimmed(self) -> None:
        """Form strings lose surrounding whitespace (SPEC §1.1)."""
        self.assertEqual(coerce("string", "  a b  "), "a b")

    def test_booleans_from_strings(self) -> None:
        """'true'/'false' in any case are booleans; anything else is not."""
        self.assertIs(coerce("boolean", "TRUE"), True)
        self.assertIs(coerce("boolean", " false "), False)
        self.assertIs(coerce("boolean", True), True)
        s = Schema(fields={"b": Field(type="boolean")})
        self.assertEqual(errors_of(self, s, {"b": "yes"}), {"b": "b is not a boolean"})
        self.assertEqual(errors_of(self, s, {"b": 1}), {"b": "b is not a boolean"})

    def test_numbers_from_strings(self) -> None:
        """Numeric strings are numbers; integral values come back as ints; bools are not numbers."""
        self.assertEqual(coerce("number", "10"), 10)
        self.assertIsInstance(coerce("number", "10"), int)
        self.assertEqual(coerce("number", "1.5"), 1.5)
        self.assertEqual(coerce("timestamp", 5.0), 5)
        s = Schema(fields={"n": Field(type="number"), "t": Field(type="timestamp")})
        self.assertEqual(
            errors_of(self, s, {"n": "ten", "t": True}),
            {"n": "n is not a number", "t": "t is not a timestamp"},
        )
        self.assertEqual(errors_of(self, s, {"n": "nan"}), {"n": "n is not a number"})

    def test_arrays_from_strings_and_lists(self) -> None:
        """A comma-separated string is split and trimmed; '' is an empty array; lists stay lists."""
        s = Schema(fields={"a": Field(type="array")})
        self.assertEqual(validate(s, {"a": " x , y "})["a"], ["x", "y"])
        self.assertEqual(validate(s, {"a": ""})["a"], [])
        self.assertEqual(validate(s, {"a": ["p", " q "]})["a"], ["p", "q"])
        self.assertEqual(validate(s, {"a": {}})["a"], [])
        self.assertEqual(validate(s, {"a": {"2": "b", "1": "a"}})["a"], ["a", "b"])
        self.assertEqual(errors_of(self, s, {"a": 3}), {"a": "a is not an array"})
        self.assertEqual(errors_of(self, s, {"a": {"k": "v"}}), {"a": "a is not an array"})

    def test_tables(self) -> None:
        """A table is an object; an empty JSON array is an empty table; a string is not."""
        s = Schema(fields={"t": Field(type="table")})
        self.assertEqual(validate(s, {"t": []})["t"], {})
        self.assertEqual(errors_of(self, s, {"t": "x"}), {"t": "t is not a table"})

    def test_urls(self) -> None:
        """A url needs a scheme and a host."""
        s = Schema(fields={"u": Field(type="url")})
        self.assertEqual(validate(s, {"u": "http://h/p"})["u"], "http://h/p")
        self.assertEqual(errors_of(self, s, {"u": "nohost"}), {"u": "u is not a url"})
        self.assertEqual(errors_of(self, s, {"u": "http://h:x"}), {"u": "u is not a url"})

    def test_strings_are_not_numbers(self) -> None:
        """A JSON number for a string field is a type error, not silently converted."""
        s = Schema(fields={"s": Field(type="string")})
        self.assertEqual(errors_of(self, s, {"s": 12}), {"s": "s is not a string"})


class RuleTests(SynchronousTestCase):
    def test_required_and_unknown(self) -> None:
        """Missing required fields and unknown fields are reported to the letter."""
        s = Schema(fields={"r": Field(type="string", required=True)})
        self.assertEqual(
            errors_of(self, s, {"zz": 1}),
            {"r": "r is required", "zz": "zz is an unknown field"},
        )
        self.assertEqual(errors_of(self, s, {"r": "  "}), {"r": "r is required"})

    def test_enum_message(self) -> None:
        """An enum lists the allowed values, quoted; arrays report their first bad element."""
        s = Schema(
            fields={
                "e": Field(type="string", enum=("a", "b")),
                "arr": Field(type="array", enum=("x", "y")),
            }
        )
        self.assertEqual(
            errors_of(self, s, {"e": "c", "arr": "x,z,w"}),
            {
                "e": '"c" is not allowed. Allowed values are: "a", "b"',
                "arr": '"z" is not allowed. Allowed values are: "x", "y"',
            },
        )

    def test_regex(self) -> None:
        """A value not matching the regex has an invalid value."""
        s = Schema(fields={"r": Field(type="string", regex=r"^[a-z]+$")})
        self.assertEqual(errors_of(self, s, {"r": "A1"}), {"r": "r has an invalid value"})

    def test_several_errors_become_a_list(self) -> None:
        """One field collecting two messages renders both as a list."""
        s = Schema(
            fields={"e": Field(type="string", enum=("a",), regex="^b$", func=lambda v, t: "bad")}
        )
        errors = errors_of(self, s, {"e": "c"})
        self.assertEqual(
            errors["e"], ['"c" is not allowed. Allowed values are: "a"', "e has an invalid value"]
        )
        found: dict[str, str | list[str]] = {}
        add_error(found, "f", "one")
        add_error(found, "f", "two")
        add_error(found, "f", "three")
        self.assertEqual(found, {"f": ["one", "two", "three"]})

    def test_defaults_value_and_callable(self) -> None:
        """Defaults fill unset fields on insert (deep-copied values, callables see the row)."""
        shared: list[str] = ["x"]
        s = Schema(
            fields={
                "a": Field(type="array", default=shared),
                "b": Field(type="string"),
                "c": Field(type="string", default=lambda t: f"from-{t['b']}"),
            }
        )
        out = validate(s, {"b": "q"})
        self.assertEqual(out, {"a": ["x"], "b": "q", "c": "from-q"})
        out["a"].append("y")
        self.assertEqual(shared, ["x"])

    def test_defaults_not_applied_on_patch(self) -> None:
        """A patch keeps what the merged row holds; defaults are for inserts and replaces."""
        s = Schema(fields={"a": Field(type="number", default=5), "b": Field(type="string")})
        self.assertEqual(validate(s, {"b": "x"}, "patch", patch={"b": "x"}, old={})["a"], None)
        self.assertEqual(validate(s, {"b": "x"}, "full", old={})["a"], 5)

    def test_generate_replaces_blank(self) -> None:
        """A generated field gets 32 hex chars when missing or blank, on insert and when patched blank."""
        s = Schema(fields={"k": Field(type="string", generate=random_hex)})
        self.assertRegex(validate(s, {})["k"], "^[0-9a-f]{32}$")
        self.assertRegex(validate(s, {"k": " "})["k"], "^[0-9a-f]{32}$")
        self.assertEqual(validate(s, {"k": "mine"})["k"], "mine")
        patched = validate(s, {"k": ""}, "patch", patch={"k": ""}, old={"k": "old"})
        self.assertRegex(patched["k"], "^[0-9a-f]{32}$")
        kept = validate(s, {"k": "old"}, "patch", patch={}, old={"k": "old"})
        self.assertEqual(kept["k"], "old")

    def test_immutable_only_when_sent(self) -> None:
        """Non-required immutable fields cannot be patched; required ones only cannot change."""
        s = Schema(
            fields={
                "imm": Field(type="string", immutable=True),
                "req": Field(type="string", immutable=True, required=True),
                "other": Field(type="string"),
            }
        )
        old = {"imm": "a", "req": "r", "other": "o"}
        self.assertEqual(
            errors_of(self, s, {**old, "imm": "a"}, mode="patch", patch={"imm": "a"}, old=old),
            {"imm": "imm cannot be updated"},
        )
        self.assertEqual(
            errors_of(self, s, {**old, "req": "z"}, mode="patch", patch={"req": "z"}, old=old),
            {"req": "req cannot be updated"},
        )
        ok = validate(s, {**old, "other": "n"}, "patch", patch={"req": "r", "other": "n"}, old=old)
        self.assertEqual(ok["other"], "n")
        self.assertEqual(validate(s, {"req": "r"}, "full", old=old)["imm"], None)

    def test_required_on_patch_only_for_sent_keys(self) -> None:
        """A patch that blanks a required field fails; one that leaves it alone does not."""
        s = Schema(fields={"r": Field(type="string", required=True), "o": Field(type="string")})
        self.assertEqual(
            errors_of(self, s, {"r": "", "o": None}, mode="patch", patch={"r": ""}, old={}),
            {"r": "r is required"},
        )
        self.assertEqual(validate(s, {"o": "x"}, "patch", patch={"o": "x"}, old={})["o"], "x")

    def test_func_may_normalise(self) -> None:
        """A custom func returns a message or edits the values in place."""

        def upper(v: Any, t: dict[str, Any]) -> str | None:
            t["f"] = v.upper()
            return None

        s = Schema(fields={"f": Field(type="string", func=upper)})
        self.assertEqual(validate(s, {"f": "ab"})["f"], "AB")

    def test_self_check_runs_only_when_fields_pass(self) -> None:
        """self_check messages become EntityError; field maps merge; skipped on field errors."""
        calls: list[CheckContext] = []

        def check(t: dict[str, Any], ctx: CheckContext) -> str | None:
            calls.append(ctx)
            return "whole thing is wrong"

        s = Schema(fields={"n": Field(type="number")}, self_check=check)
        e = self.assertRaises(EntityError, validate, s, {"n": 1})
        self.assertEqual(e.message, "whole thing is wrong")
        self.assertEqual(calls[0].mode, "insert")
        self.assertFalse(calls[0].is_update)
        errors_of(self, s, {"n": "x"})
        self.assertEqual(len(calls), 1)
        s2 = Schema(fields={}, self_check=lambda t, ctx: {"a": "m1", "b": "m2"})
        self.assertEqual(errors_of(self, s2, {}), {"a": "m1", "b": "m2"})


class SubSchemaTests(SynchronousTestCase):
    inner = Schema(
        fields={
            "minute": Field(type="number"),
            "name": Field(type="string", required=True),
            "flag": Field(type="boolean", default=True),
        },
        self_check=lambda t, ctx: "inner says no" if t.get("minute") == 13 else None,
    )
    outer = Schema(fields={"config": Field(type="table", schema=inner)})

    def test_nested_errors_are_prefixed(self) -> None:
        """Errors inside a sub-schema are keyed '<column>.<field>' with the inner message."""
        self.assertEqual(
            errors_of(self, self.outer, {"config": {"minute": "x", "bogus": 1}}),
            {
                "config.minute": "minute is not a number",
                "config.name": "name is required",
                "config.bogus": "bogus is an unknown field",
            },
        )

    def test_nested_self_check_keys_the_column(self) -> None:
        """A sub-schema self_check message is reported on the column ({"config": msg})."""
        self.assertEqual(
            errors_of(self, self.outer, {"config": {"minute": 13, "name": "n"}}),
            {"config": "inner says no"},
        )

    def test_missing_table_gets_defaults(self) -> None:
        """An absent sub-table becomes {} with the sub-schema's defaults; nulls are dropped."""
        s = Schema(fields={"config": Field(type="table", schema=Schema(fields=self.inner.fields))})
        out = validate(s, {"config": {"name": "n"}})
        self.assertEqual(out["config"], {"name": "n", "flag": True})

    def test_flexible_tables(self) -> None:
        """A flexible table checks each value against the fields, errors keyed by entry."""
        s = Schema(
            fields={
                "limits": Field(
                    type="table",
                    schema=Schema(flexible=True, fields={"minute": Field(type="number")}),
                )
            }
        )
        out = validate(s, {"limits": {"sms": {"minute": "10"}}})
        self.assertEqual(out["limits"], {"sms": {"minute": 10}})
        self.assertEqual(
            errors_of(self, s, {"limits": {"sms": {"minute": "x"}, "v": 3}}),
            {"limits.sms.minute": "minute is not a number", "limits.v": "v is not a table"},
        )

    def test_merge_patch_merges_sub_tables(self) -> None:
        """PATCH merges config key by key, one level per sub-schema, without touching the old row."""
        old = {"config": {"minute": 1, "name": "n"}, "x": 1}
        merged = merge_patch(self.outer, old, {"config": {"minute": 2}})
        self.assertEqual(merged, {"config": {"minute": 2, "name": "n"}, "x": 1})
        self.assertEqual(old["config"], {"minute": 1, "name": "n"})
        plain = merge_patch(Schema(fields={"t": Field(type="table")}), {"t": {"a": 1}}, {"t": {}})
        self.assertEqual(plain, {"t": {}})


class ApiSchemaTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """An API gets name from request_host and false booleans."""
        out = validate(APIS, dict(API))
        self.assertEqual(out["name"], "example.com")
        self.assertIs(out["strip_request_path"], False)
        self.assertIs(out["preserve_host"], False)
        self.assertIsNone(out["request_path"])

    def test_default_name_from_path(self) -> None:
        """Without a host the name is the path minus its leading '/', '/' -> '-', odd chars -> '-'."""
        self.assertEqual(default_api_name({"request_path": "/a/b"}), "a-b")
        self.assertEqual(default_api_name({"request_path": "/a/b/"}), "a-b")
        self.assertEqual(default_api_name({"request_path": "/"}), "")
        self.assertEqual(default_api_name({"request_path": "/a%20b"}), "a-20b")
        self.assertEqual(default_api_name({"request_host": "h.com", "request_path": "/x"}), "h.com")
        self.assertIsNone(default_api_name({}))
        out = validate(APIS, {"request_path": "/x/y", "upstream_url": "http://u"})
        self.assertEqual(out["name"], "x-y")

    def test_name_characters(self) -> None:
        """Names are limited to alphanumerics and '.-_~'."""
        self.assertEqual(
            errors_of(self, APIS, {**API, "name": "a b"}),
            {"name": "name must only contain alphanumeric and '., -, _, ~' characters"},
        )

    def test_host_or_path_required(self) -> None:
        """Without request_host and request_path both fields carry the message."""
        msg = "At least a 'request_host' or a 'request_path' must be specified"
        self.assertEqual(
            errors_of(self, APIS, {"upstream_url": "http://u", "request_host": " "}),
            {"request_host": msg, "request_path": msg},
        )

    def test_request_host_rules(self) -> None:
        """Hosts: characters and labels, wildcard placement, a single wildcard."""
        cases = {
            "bad host": "Invalid value: bad host",
            "h.com:80": "Invalid value: h.com:80",
            "a..b": "Invalid value: a..b",
            "a-.b": "Invalid value: a-.b",
            "a.*.b": "Invalid wildcard placement: a.*.b",
            "*example.com": "Invalid wildcard placement: *example.com",
            ".*": "Invalid wildcard placement: .*",
            "*.a.*": "Only one wildcard is allowed: *.a.*",
        }
        for host, msg in cases.items():
            self.assertEqual(
                errors_of(self, APIS, {**API, "request_host": host}),
                {"request_host": msg},
                host,
            )
        for host in ("*.example.org", "example.*", "Example.COM", "a_b-c.d"):
            self.assertEqual(validate(APIS, {**API, "request_host": host})["request_host"], host)

    def test_request_path_rules(self) -> None:
        """Paths: leading slash, no empty segment, characters, percent-encoding, in that order."""
        base = {"upstream_url": "http://u"}
        cases = {
            "a": "must be prefixed with slash: 'a'",
            "/a//b": "invalid: '/a//b'",
            "/a b": "must only contain alphanumeric and '., -, _, ~, /, %' characters",
            "/a%2": "must use proper encoding; '%2' is invalid",
            "/a%zz/b": "must use proper encoding; '%zz' is invalid",
        }
        for path, msg in cases.items():
            self.assertEqual(
                errors_of(self, APIS, {**base, "request_path": path}),
                {"request_path": msg},
                path,
            )
        self.assertEqual(validate(APIS, {**base, "request_path": "/a/"})["request_path"], "/a")
        self.assertEqual(validate(APIS, {**base, "request_path": "/"})["request_path"], "/")
        self.assertEqual(
            validate(APIS, {**base, "request_path": "/a%2Fb"})["request_path"], "/a%2Fb"
        )

    def test_blank_host_is_unset(self) -> None:
        """A blank request_host next to a path is stored as NULL, so blanks never collide."""
        out = validate(APIS, {**API, "request_host": "", "request_path": "/p"})
        self.assertIsNone(out["request_host"])

    def test_upstream_url(self) -> None:
        """upstream_url is required, must be a URL, and http(s) only."""
        self.assertEqual(
            errors_of(self, APIS, {"request_host": "h"}),
            {"upstream_url": "upstream_url is required"},
        )
        self.assertEqual(
            errors_of(self, APIS, {"request_host": "h", "upstream_url": "nope"}),
            {"upstream_url": "upstream_url is not a url"},
        )
        self.assertEqual(
            errors_of(self, APIS, {"request_host": "h", "upstream_url": "ftp://h"}),
            {"upstream_url": "Supported protocols are HTTP and HTTPS"},
        )

    def test_put_needs_created_at(self) -> None:
        """A full replace without created_at fails like Kong's (SPEC §1.4)."""
        self.assertEqual(
            errors_of(self, APIS, {**API, "id": "x"}, mode="full", old={}),
            {"created_at": "created_at is required"},
        )


class ConsumerAndNodeTests(SynchronousTestCase):
    def test_username_or_custom_id(self) -> None:
        """A consumer needs a username or a custom_id; both fields carry the message."""
        msg = "At least a 'custom_id' or a 'username' must be specified"
        self.assertEqual(
            errors_of(self, CONSUMERS, {"username": " "}), {"custom_id": msg, "username": msg}
        )
        self.assertEqual(validate(CONSUMERS, {"custom_id": "c"})["custom_id"], "c")

    def test_nodes(self) -> None:
        """A node row needs its name and address."""
        self.assertEqual(
            errors_of(self, NODES, {}),
            {
                "name": "name is required",
                "cluster_listening_address": "cluster_listening_address is required",
            },
        )


class PluginsEntityTests(SynchronousTestCase):
    config = Schema(fields={"hide": Field(type="boolean", default=False)}, no_consumer=True)

    def schemas(self) -> dict[str, Any]:
        return core_schemas({"thing": self.config}.get, lambda: RuntimeError("exists"))

    def test_config_chosen_by_name(self) -> None:
        """config is validated against the named plugin's schema, with its defaults."""
        plugins = self.schemas()["plugins"]
        out = validate(plugins, {"name": "thing"})
        self.assertEqual(out["config"], {"hide": False})
        self.assertIs(out["enabled"], True)
        self.assertEqual(
            errors_of(self, plugins, {"name": "thing", "config": {"hide": "x"}}),
            {"config.hide": "hide is not a boolean"},
        )

    def test_unknown_plugin(self) -> None:
        """An unknown plugin name is reported on config."""
        plugins = self.schemas()["plugins"]
        self.assertEqual(
            errors_of(self, plugins, {"name": "foo"}), {"config": 'Plugin "foo" not found'}
        )
        self.assertEqual(errors_of(self, plugins, {}), {"name": "name is required"})

    def test_no_consumer(self) -> None:
        """A no_consumer plugin with a consumer_id is an entity-level error."""
        plugins = self.schemas()["plugins"]
        e = self.assertRaises(EntityError, validate, plugins, {"name": "thing", "consumer_id": "c"})
        self.assertEqual(e.message, "No consumer can be configured for that plugin")

    def test_put_key_is_id_and_name(self) -> None:
        """Plugins are replaced by (id, name), other collections by their primary key."""
        schemas = self.schemas()
        self.assertEqual(schemas["plugins"].replace_key, ("id", "name"))
        self.assertEqual(schemas["apis"].replace_key, ("id",))
        self.assertEqual(schemas["nodes"].replace_key, ("name",))


class RenderingTests(SynchronousTestCase):
    def test_functions_render_as_function(self) -> None:
        """schema_to_json shows every callable as "function" and keeps plain values (SPEC §1.5)."""
        s = Schema(
            no_consumer=True,
            fields={
                "a": Field(type="array", required=True, default=[]),
                "b": Field(type="string", default=lambda t: "x", func=lambda v, t: None),
                "e": Field(type="string", enum=("p", "q")),
                "t": Field(type="table", schema=Schema(fields={"n": Field(type="number")})),
            },
            self_check=lambda t, ctx: None,
        )
        self.assertEqual(
            schema_to_json(s),
            {
                "no_consumer": True,
                "self_check": "function",
                "fields": {
                    "a": {"type": "array", "required": True, "default": []},
                    "b": {"type": "string", "default": "function", "func": "function"},
                    "e": {"type": "string", "enum": ["p", "q"]},
                    "t": {"type": "table", "schema": {"fields": {"n": {"type": "number"}}}},
                },
            },
        )

    def test_is_uuid(self) -> None:
        """The uuid check is case-insensitive and anchored."""
        self.assertTrue(is_uuid("4A3B2C1D-0000-4000-8000-000000000000"))
        self.assertFalse(is_uuid("4a3b2c1d-0000-4000-8000-000000000000x"))
        self.assertFalse(is_uuid(None))
