-- The durable invalidation log (DESIGN.md 4): one row per ChangeEvent, written in the
-- same transaction as the change.  seq is per origin and gap-free; it comes from
-- cluster_events_seq, whose row lock also orders concurrent writers of one origin.
-- "at" is epoch milliseconds on the writer's clock.
CREATE TABLE IF NOT EXISTS cluster_events (
  origin text NOT NULL,
  seq bigint NOT NULL,
  at bigint NOT NULL,
  collection text NOT NULL,
  type text NOT NULL,
  old json,
  new json,
  extra json,
  PRIMARY KEY (origin, seq)
);
CREATE INDEX IF NOT EXISTS cluster_events_at_idx ON cluster_events (at, origin, seq);

CREATE TABLE IF NOT EXISTS cluster_events_seq (
  origin text PRIMARY KEY,
  seq bigint NOT NULL
);
