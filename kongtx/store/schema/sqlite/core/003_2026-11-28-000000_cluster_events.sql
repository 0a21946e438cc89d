-- kongtx's durable invalidation log (DESIGN.md §4): one row per changed row, written in
-- the same transaction as the change.  cluster_event_seqs keeps each origin's last
-- sequence number so that pruning old events never lets a number be reused.
CREATE TABLE cluster_events (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    collection TEXT NOT NULL,
    type TEXT NOT NULL,
    old TEXT,
    new TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (origin, seq)
);
CREATE INDEX cluster_events_at_idx ON cluster_events (at, origin, seq);

CREATE TABLE cluster_event_seqs (
    origin TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
