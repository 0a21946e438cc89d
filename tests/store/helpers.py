"""Helpers of the store suites: row factories and a set of stores stopped at teardown."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from kongtx.store.interface import IStore, Row
from tests.reactor_thread import run
from tests.store.backends import Harness


class StoreSet:
    """Opens stores on the test's database and stops every one of them at teardown."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.opened: list[IStore] = []

    def open(self, origin: str, *, start: bool = True, migrate: bool = False) -> IStore:
        store = self.harness.new_store(origin)
        self.opened.append(store)
        if start:
            run(store.start())
        if migrate:
            run(store.migrate(self.harness.migrations))
        return store

    def close(self) -> None:
        errors: list[BaseException] = []
        for store in reversed(self.opened):
            try:
                run(store.stop())
            except BaseException as e:
                errors.append(e)
        self.opened.clear()
        self.harness.cleanup()
        if errors:
            raise errors[0]


class Rows:
    """Valid rows with fresh ids and increasing ``created_at``, as the DAO would write them."""

    def __init__(self) -> None:
        self._ms = itertools.count(int(time.time() * 1000))
        self._n = itertools.count(1)

    def id(self) -> str:
        return str(uuid.uuid4())

    def now(self) -> int:
        return next(self._ms)

    def api(self, **kw: Any) -> Row:
        n = next(self._n)
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "name": f"api-{n}",
            "request_host": f"api{n}.example.com",
            "request_path": None,
            "strip_request_path": False,
            "preserve_host": False,
            "upstream_url": "http://upstream.example.com",
            "tags": None,
        }
        row.update(kw)
        return row

    def consumer(self, **kw: Any) -> Row:
        n = next(self._n)
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "username": f"user-{n}",
            "custom_id": None,
            "tags": None,
        }
        row.update(kw)
        return row

    def plugin(self, **kw: Any) -> Row:
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "name": "key-auth",
            "api_id": None,
            "consumer_id": None,
            "config": {"key_names": ["apikey"], "hide_credentials": False},
            "enabled": True,
            "tags": None,
        }
        row.update(kw)
        return row

    def keyauth(self, consumer_id: str, **kw: Any) -> Row:
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "consumer_id": consumer_id,
            "key": uuid.uuid4().hex,
            "tags": None,
        }
        row.update(kw)
        return row

    def oauth2_app(self, consumer_id: str, **kw: Any) -> Row:
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "consumer_id": consumer_id,
            "name": "app",
            "client_id": uuid.uuid4().hex,
            "client_secret": uuid.uuid4().hex,
            "redirect_uri": ["https://app.example.com/cb"],
            "tags": None,
        }
        row.update(kw)
        return row

    def oauth2_token(self, credential_id: str, **kw: Any) -> Row:
        row: Row = {
            "id": self.id(),
            "created_at": self.now(),
            "credential_id": credential_id,
            "token_type": "bearer",
            "expires_in": 7200,
            "access_token": uuid.uuid4().hex,
            "refresh_token": uuid.uuid4().hex,
            "authenticated_userid": "u1",
            "scope": "email",
        }
        row.update(kw)
        return row

    def node(self, **kw: Any) -> Row:
        n = next(self._n)
        row: Row = {
            "name": f"host_0.0.0.0:7946_{uuid.uuid4().hex}",
            "cluster_listening_address": f"10.0.0.{n}:7946",
            "created_at": self.now(),
        }
        row.update(kw)
        return row
