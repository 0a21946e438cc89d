# -*- test-case-name: tests.store.test_contract,tests.store.test_sqlite_specific -*-
"""The embedded datastore: stdlib ``sqlite3`` on one dedicated thread.

Why sqlite is the default (SPEC's table of differences): a newcomer's first
``kong start`` needs no database server.  Why one thread: a sqlite connection
belongs to the thread that opened it, and the reactor thread must never wait on
disk or on another process's lock; so every query runs on a private
``ThreadPool(1, 1)`` through ``deferToThreadPool`` and the coroutine awaits it.

How the contract is kept:

* **Transactions.**  Each write runs in ``BEGIN IMMEDIATE`` (writers queue on
  ``busy_timeout`` instead of failing on a lock upgrade) together with its
  ``cluster_events`` rows, so a change and its invalidation commit together.
* **Unique and foreign keys** are checked first, inside that transaction (the
  error names the field and value as the Admin API needs them); the schema's
  own constraints remain as a safety net and their errors are parsed the same way.
* **Cascades.**  ``PRAGMA foreign_keys=ON`` with ``ON DELETE CASCADE`` in the
  schema; the store still selects every dependant row first, in the same
  transaction, to return it and write its delete event.
* **TTL.**  TTL tables carry a private ``kong_expire_at`` column (epoch ms);
  reads hide expired rows, every write transaction first deletes them (so an
  expired row never blocks a unique key), and a periodic sweep on the injected
  :class:`~kongtx.clock.Clock` deletes the rest.  "Now" is read on the reactor
  thread, from that clock, and passed to the query.
* **Processes sharing one file**: WAL journal, ``busy_timeout``, and migrations
  under ``BEGIN EXCLUSIVE`` so that nodes starting together migrate once.

The package, by concern: :mod:`.store` (SqliteStore: checks each call, runs it on the
thread), :mod:`.writes` (insert, update and delete: one transaction each, with their
events), :mod:`.sql` (statements, value encoding, constraint checks and errors),
:mod:`.events` (the change log), :mod:`.migrations` (``schema_migrations``, reset) and
:mod:`.thread` (the one thread and its connection).
"""

from kongtx.store.sqlite.sql import EXPIRE_COLUMN, split_statements
from kongtx.store.sqlite.store import SqliteStore

__all__ = ["EXPIRE_COLUMN", "SqliteStore", "split_statements"]
