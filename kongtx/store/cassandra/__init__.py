# -*- test-case-name: tests.store.test_cassandra_specific,tests.unit.test_cassandra_reconnect -*-
"""The Cassandra store, on cassandra-driver 3.30 with its own I/O thread.

The driver keeps its own event loop in its own thread and hands every outcome to the
injected reactor, each request under a timeout on the injected Clock (:mod:`.session`
says why not the driver's ``TwistedConnection``).

Cassandra has no constraints and no transactions, so, as Kong 0.9 did (SPEC §7.2):

* uniqueness and foreign keys are checked by reading before writing (secondary indexes
  on every unique and foreign-key column).  Two nodes writing the same value at the
  same instant can both pass the check: this race is documented, not hidden;
* a deletion cascades row by row (read the dependants through their indexes);
* each change and its ``cluster_events`` rows go in one *logged batch*, so they are
  applied together or not at all;
* TTLs are native (``USING TTL``), one second longer than asked because Cassandra
  counts them in whole seconds from a truncated "now" (a TTL of 1 can otherwise end
  at once); the exact expiry is kept in a hidden ``kongtx_expire_at`` column and reads
  hide the row from that instant on the injected clock.  An update of a TTL row
  rewrites the whole row with the time it has left (or the new TTL), so no column
  outlives the others.  ``COUNT`` on a TTL table is done on the live rows;
* listings are in token order, paged with the driver's ``paging_state`` carried in the
  opaque offset token; ``total`` is a ``COUNT(*)`` with the same filters; filters use
  ``ALLOW FILTERING``;
* ``cluster_events`` is partitioned by origin and clustered by seq; the next seq of
  this node's origin is kept in memory (seeded from ``cluster_events_seq`` on first
  use), which assumes one running store per origin, as node names guarantee; this
  store's write batches run one at a time so seqs become visible in order.

The package, by concern: :mod:`.store` (CassandraStore: rows, paging), :mod:`.reads`
(live rows, the read-before-write checks, cascades), :mod:`.counters` (counter rows:
LWT compare-and-set), :mod:`.session` (the driver, its thread, timeouts), :mod:`.cql`
(CQL text, values, paging tokens), :mod:`.events` (the change log and logged batches)
and :mod:`.migrations` (keyspace, LWT lock, record).
"""

from kongtx.store.cassandra.cql import (
    EXPIRE_COLUMN,
    decode_token,
    encode_token,
    parse_data_centers,
    replication,
    split_cql,
)
from kongtx.store.cassandra.session import RECONNECT_MAX_DELAY
from kongtx.store.cassandra.store import CassandraStore

__all__ = [
    "EXPIRE_COLUMN",
    "RECONNECT_MAX_DELAY",
    "CassandraStore",
    "decode_token",
    "encode_token",
    "parse_data_centers",
    "replication",
    "split_cql",
]
