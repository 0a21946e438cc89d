# -*- test-case-name: tests.unit.test_schemas -*-
"""Entity and plugin-config schemas, and the validator that enforces them (SPEC §1.2, §2, §4).

Why a declarative schema: every rule of Kong 0.9 (types, defaults, enums, custom
checks, messages to the letter) must hold for Admin writes on every backend, and
``GET /plugins/schema/{name}`` renders the same object as JSON.  One description
serves validation, defaults and rendering, so they cannot disagree.

The package, by concern:

- :mod:`.model`: what a schema is (``Field``, ``Schema``, ``EntitySchema``,
  ``UniqueTogether``, ``CheckContext``) and the ``tags`` field every tagged entity gets;
- :mod:`.engine`: the validator (``coerce``, ``validate``, ``merge_patch``,
  ``schema_to_json``);
- :mod:`.fields`: pieces the entity schemas share (ids, ``created_at``, consumer keys);
- :mod:`.core`: apis, consumers, nodes, plugins and ``core_schemas``;
- :mod:`.upstreams`: upstreams, targets, their healthchecks and host:port rules.

Importers use ``kongtx.store.schemas`` itself; every public name is re-exported here.
"""

from kongtx.store.schemas.core import (
    APIS,
    CONSUMERS,
    NODES,
    PluginSchemaLookup,
    check_api_name,
    check_request_host,
    check_request_path,
    check_upstream_url,
    core_schemas,
    default_api_name,
    plugins_schema,
)
from kongtx.store.schemas.engine import (
    INVALID,
    add_error,
    coerce,
    merge_patch,
    parse_url,
    schema_to_json,
    validate,
)
from kongtx.store.schemas.fields import (
    UUID_RE,
    created_at_field,
    credential_fields,
    id_field,
    is_uuid,
    random_hex,
)
from kongtx.store.schemas.model import (
    MAX_FILTER_TAGS,
    BeforeWrite,
    CheckContext,
    EntitySchema,
    Errors,
    Field,
    FieldFunc,
    FieldType,
    Mode,
    RunInThread,
    Schema,
    SelfCheck,
    UniqueTogether,
    check_tags,
    tag_problem,
    tags_field,
)
from kongtx.store.schemas.upstreams import (
    ALGORITHMS,
    DEFAULT_TARGET_PORT,
    HASH_ON,
    HEALTHCHECKS,
    TARGETS,
    UPSTREAMS,
    check_target,
    check_upstream_name,
    is_hostname,
    normalize_target,
    split_host_port,
)

__all__ = [
    "ALGORITHMS",
    "APIS",
    "BeforeWrite",
    "CONSUMERS",
    "CheckContext",
    "DEFAULT_TARGET_PORT",
    "EntitySchema",
    "Errors",
    "Field",
    "FieldFunc",
    "FieldType",
    "HASH_ON",
    "HEALTHCHECKS",
    "INVALID",
    "MAX_FILTER_TAGS",
    "Mode",
    "NODES",
    "PluginSchemaLookup",
    "RunInThread",
    "Schema",
    "SelfCheck",
    "TARGETS",
    "UPSTREAMS",
    "UUID_RE",
    "UniqueTogether",
    "add_error",
    "check_api_name",
    "check_request_host",
    "check_request_path",
    "check_tags",
    "check_target",
    "check_upstream_name",
    "check_upstream_url",
    "coerce",
    "core_schemas",
    "created_at_field",
    "credential_fields",
    "default_api_name",
    "id_field",
    "is_hostname",
    "is_uuid",
    "merge_patch",
    "normalize_target",
    "parse_url",
    "plugins_schema",
    "random_hex",
    "schema_to_json",
    "split_host_port",
    "tag_problem",
    "tags_field",
    "validate",
]
