# -*- test-case-name: tests.unit.test_dao -*-
"""The errors the DAO raises, one class per HTTP answer of SPEC §1.2.

Why a class per answer rather than one error with a code: the Admin API maps each
class to exactly one status and body shape, so a new caller (a CLI command, a
plugin API) cannot invent a third rendering of the same failure.
"""

from __future__ import annotations

from typing import Any


class DaoError(Exception):
    """Base class of every error the DAO raises on purpose."""


class SchemaError(DaoError):
    """Field-level validation failures -> 400 with the field map as body.

    ``fields`` maps a field name (``config.<field>`` for nested plugin config) to
    its message, or to a list of messages when one field collected several.
    """

    def __init__(self, fields: dict[str, str | list[str]]) -> None:
        super().__init__(fields)
        self.fields = fields


class EntityError(DaoError):
    """An entity-level check failed -> 400 ``{"message": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConflictError(DaoError):
    """A unique column already holds ``value`` -> 409 ``{field: "already exists with value '<value>'"}``."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} already exists with value '{value}'")
        self.field = field
        self.value = value


class PluginExistsError(DaoError):
    """Same (name, api_id, consumer_id) plugin already configured -> 409, empty body (SPEC §1.2)."""

    def __init__(self) -> None:
        super().__init__("Plugin configuration already exists")


class ForeignKeyError(DaoError):
    """A foreign key names no row -> 404 ``{field: "does not exist with value '<value>'"}``."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} does not exist with value '{value}'")
        self.field = field
        self.value = value


class NotFoundError(DaoError):
    """The row to replace does not exist -> 404 ``{"message": "Not found"}``."""

    def __init__(self) -> None:
        super().__init__("Not found")


class DatabaseError(DaoError):
    """The datastore is unavailable -> 503 ``{"message": "The datastore is unavailable"}``."""

    def __init__(self, message: str = "The datastore is unavailable") -> None:
        super().__init__(message)
        self.message = message
