-- Kong 1.x's load balancing entities (issue 9).  An upstream is a virtual host name an
-- API's upstream_url may use; its targets are the host:port pairs balanced over.
-- Deleting an upstream deletes its targets.  (upstream_id, target) is unique: the DAO
-- checks the pair (one rule for every backend); the index makes that check cheap.
CREATE TABLE IF NOT EXISTS upstreams (
  id uuid PRIMARY KEY,
  name text UNIQUE,
  algorithm text,
  hash_on text,
  hash_fallback text,
  hash_on_header text,
  hash_fallback_header text,
  slots int,
  healthchecks jsonb,
  tags jsonb,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS upstreams_tags_idx ON upstreams USING gin (tags);

CREATE TABLE IF NOT EXISTS targets (
  id uuid PRIMARY KEY,
  upstream_id uuid REFERENCES upstreams (id) ON DELETE CASCADE,
  target text,
  weight int,
  tags jsonb,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS targets_upstream_idx ON targets (upstream_id, target);
CREATE INDEX IF NOT EXISTS targets_tags_idx ON targets USING gin (tags);
