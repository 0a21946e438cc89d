# -*- test-case-name: tests.unit.test_migrations -*-
"""Find the packaged migration scripts of a backend, in the order they must run.

Layout: ``kongtx/store/schema/<backend>/<identifier>/<NNN>_<name>.<sql|cql>``,
where ``identifier`` is ``core`` or a plugin name (``key-auth``, ``oauth2``...)
and ``name`` is Kong's migration name (SPEC §7.3), so that
``schema_migrations`` reads like Kong's.  ``NNN`` only orders the files; it is
not part of the recorded name.  Why files and not Python lists: the SQL/CQL is
reviewed as SQL/CQL, and operators can read what ``kong migrations up`` runs.

Running them is each store's ``migrate`` (it owns the lock that makes
concurrent starters migrate once); this module only reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from importlib.abc import Traversable

#: Backend -> the extension of its scripts.
EXTENSIONS: dict[str, str] = {"sqlite": "sql", "postgres": "sql", "cassandra": "cql"}

_FILE = re.compile(r"^(?P<number>\d+)_(?P<name>.+)$")


def _backend_dir(backend: str) -> Traversable:
    if backend not in EXTENSIONS:
        raise ValueError(f"unknown datastore backend {backend!r}")
    return resources.files("kongtx.store").joinpath("schema", backend)


def available_identifiers(backend: str) -> list[str]:
    """Every identifier that has migrations for ``backend``, ``core`` first, then by name."""
    root = _backend_dir(backend)
    if not root.is_dir():
        return []
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return sorted(names, key=lambda n: (n != "core", n))


def _load_identifier(backend: str, identifier: str) -> list[tuple[str, str]]:
    directory = _backend_dir(backend).joinpath(identifier)
    if not directory.is_dir():
        return []
    suffix = "." + EXTENSIONS[backend]
    numbered: dict[int, tuple[str, str]] = {}
    for entry in directory.iterdir():
        if not entry.is_file() or not entry.name.endswith(suffix):
            continue
        match = _FILE.match(entry.name[: -len(suffix)])
        if match is None:
            raise ValueError(
                f"{backend}/{identifier}/{entry.name}: a migration file is named <NNN>_<name>{suffix}"
            )
        number = int(match["number"])
        if number in numbered:
            raise ValueError(
                f"{backend}/{identifier}: two migrations numbered {number}: "
                f"{numbered[number][0]} and {match['name']}"
            )
        numbered[number] = (match["name"], entry.read_text(encoding="utf-8"))
    return [numbered[n] for n in sorted(numbered)]


def load_migrations(backend: str, identifiers: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Identifier -> ordered ``(name, script)`` list for each of ``identifiers`` that has any.

    ``core`` comes first whatever the order given (plugin tables reference
    consumers); the others keep their order.  An identifier without scripts (a
    plugin that owns no table, like ``cors``) is left out.  An unknown backend
    or a badly named file raises ``ValueError``.
    """
    ordered = sorted(dict.fromkeys(identifiers), key=lambda i: i != "core")
    result: dict[str, list[tuple[str, str]]] = {}
    for identifier in ordered:
        if not identifier or "/" in identifier or identifier.startswith("."):
            raise ValueError(f"invalid migration identifier {identifier!r}")
        scripts = _load_identifier(backend, identifier)
        if scripts:
            result[identifier] = scripts
    return result
