# -*- test-case-name: tests.unit.test_declarative -*-
"""Declarative configuration: a whole gateway configuration in one YAML or JSON file.

Why: a node with ``database = off`` keeps its configuration in memory and takes
it from a file (``declarative_config``) or from ``POST /config``, and ``kong
config db_import/db_export`` moves the same document into and out of a real
datastore.  The format is Kong 1.x's declarative format adapted to the 0.9
entities (docs/dbless.md)::

    _format_version: "1.1"
    apis:
      - name: example
        request_host: example.com
        upstream_url: http://upstream:8080
        plugins:                      # api_id implied
          - name: key-auth
    consumers:
      - username: alice
        keyauth_credentials:          # Kong 1.x's collection names
          - key: secret
        acls:
          - group: admins
        plugins:                      # consumer_id implied
          - name: rate-limiting
            api: example              # an API's name or id
            config: {minute: 10}
    plugins:                          # global, or naming ``api``/``consumer``
      - name: cors
    upstreams:                        # Kong 1.x load balancing (issue 9)
      - name: backend.internal        # what an API's upstream_url host names
        targets:                      # upstream_id implied
          - target: 10.0.0.1:8080
            weight: 50

Every entity goes through the same DAO validation as the Admin API (defaults,
generated keys, SPEC's messages), so a file can never hold what the Admin API
would refuse.  Entities without an ``id`` get a deterministic one (uuid5 of the
entity's natural key), so reloading a file keeps every id stable: cache keys,
``/apis/{id}`` URLs and ``consumer_id`` references in plugin configs survive.
Errors name the entity by its path in the document (0-based indexes), e.g.
``apis[2].request_host: Invalid value: a b``.

A configuration is always loaded into a fresh :class:`~kongtx.store.memory.MemoryStore`
first; only a fully valid one is swapped in (:class:`DeclarativeState`) or written
to a datastore (:func:`import_document`), so nothing ever sees half of one.

The modules: ``document`` (the format: reading, parsing, dumping), ``load``
(validating a document into a store: entity walking, deterministic ids, error
paths), ``transfer`` (``db_import`` / ``db_export`` against a datastore) and
``state`` (a DB-less node's configuration, replaced whole by ``POST /config``).
"""

from kongtx.declarative.document import (
    CREDENTIAL_COLLECTIONS,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    TOP_LEVEL,
    DeclarativeError,
    dump,
    format_for,
    parse,
    read_file,
)
from kongtx.declarative.load import (
    ID_NAMESPACE,
    LoadingDAO,
    LoadResult,
    error_lines,
    load_document,
    validate_document,
)
from kongtx.declarative.state import DeclarativeState, load_declarative_config
from kongtx.declarative.transfer import export_document, import_document

__all__ = [
    "CREDENTIAL_COLLECTIONS",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "ID_NAMESPACE",
    "TOP_LEVEL",
    "DeclarativeError",
    "DeclarativeState",
    "LoadResult",
    "LoadingDAO",
    "dump",
    "error_lines",
    "export_document",
    "format_for",
    "import_document",
    "load_declarative_config",
    "load_document",
    "parse",
    "read_file",
    "validate_document",
]
