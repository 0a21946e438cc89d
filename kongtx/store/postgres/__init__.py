# -*- test-case-name: tests.store.test_postgres_specific -*-
"""The PostgreSQL store, on txpostgres (psycopg2's asynchronous mode in the reactor).

Connections come from our own small pool (:mod:`.pool`, which says why not
``txpostgres.ConnectionPool``): the injected reactor, a timeout on the injected Clock for
every statement, and a connection that failed is closed, never cancelled.  New
connections are opened on demand, so the store reconnects by itself.

Constraints live in the database (UNIQUE, FOREIGN KEY ... ON DELETE CASCADE) and their
errors are parsed into :class:`UniqueViolation` / :class:`ForeignKeyViolation`.  A delete
first locks and reads the rows the cascade will remove, so it can return them and log an
event for each, all in one transaction with the change itself.

TTLs follow Kong 0.9's design (SPEC §7.1): the ``ttls`` table holds ``expire_at`` per
(table, primary key); every read of a TTL table joins it and hides expired rows (times
come from the injected clock, like every other backend), and a cleanup job on the clock
deletes them every 60 s.

The package, by concern: :mod:`.store` (PostgresStore: what runs in one transaction),
:mod:`.pool` (connections, timeouts, retries, constraint errors), :mod:`.queries`
(statements and row decoding), :mod:`.ttls`, :mod:`.events` (the change log) and
:mod:`.migrations`.
"""

from kongtx.store.postgres.migrations import INTERNAL_TABLES, MIGRATION_LOCK
from kongtx.store.postgres.store import PostgresStore

__all__ = ["INTERNAL_TABLES", "MIGRATION_LOCK", "PostgresStore"]
