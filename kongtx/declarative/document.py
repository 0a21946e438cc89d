# -*- test-case-name: tests.unit.test_declarative -*-
"""The declarative document as text: reading, parsing and dumping YAML or JSON.

Also the format's vocabulary (versions, top-level keys, nestable credential
collections) and :class:`DeclarativeError`, what every declarative failure raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from kongtx.config import ConfigError

#: The ``_format_version`` values this loader understands.
FORMAT_VERSIONS = ("1.1",)
#: What :func:`~kongtx.declarative.transfer.export_document` writes.
FORMAT_VERSION = "1.1"
#: Top-level keys of a document besides ``_format_version``.
TOP_LEVEL = ("apis", "consumers", "plugins", "upstreams")
#: The credential collections a consumer entry may nest, under Kong 1.x's names, each
#: with the column that names a credential (its deterministic id's natural key).
CREDENTIAL_COLLECTIONS = {
    "keyauth_credentials": "key",
    "basicauth_credentials": "username",
    "hmacauth_credentials": "username",
    "jwt_secrets": "key",
    "oauth2_credentials": "client_id",
    "acls": "group",
}


class DeclarativeError(ConfigError):
    """A document that cannot be loaded; ``errors`` holds one line per problem.

    A :class:`~kongtx.config.ConfigError` so that a node refusing its
    ``declarative_config`` stops like one refusing kong.conf: one line per error,
    no traceback, non-zero exit.
    """


def as_text(value: Any) -> str:
    """``value`` as it appears in an error line or a natural key (None is empty)."""
    return "" if value is None else str(value)


def parse(text: str | bytes, source: str = "<document>") -> dict[str, Any]:
    """A document from YAML or JSON text (JSON is read as YAML's subset); ``safe_load`` only."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DeclarativeError([f"{source}: is not UTF-8 text"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DeclarativeError([f"{source}: cannot parse{where}: {problem}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise DeclarativeError([f"{source}: the document must be a mapping (an object)"])
    return document


def read_file(path: str) -> dict[str, Any]:
    """Read and parse the file at ``path`` (errors name it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeclarativeError([f"{path}: cannot read: {e.strerror or e}"]) from None
    return parse(data, path)


def dump(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """``document`` as YAML (the default) or JSON text, keys in the order given."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    text: str = yaml.safe_dump(
        dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


def format_for(path: str | None) -> str:
    """``json`` for a ``.json`` file name, else ``yaml``."""
    return "json" if path is not None and path.lower().endswith(".json") else "yaml"
