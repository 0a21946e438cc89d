-- Kong 1.x's load balancing entities (issue 9).  An upstream is a virtual host name an
-- API's upstream_url may use; its targets are the host:port pairs balanced over.
-- healthchecks and tags are JSON text.  Deleting an upstream deletes its targets.
-- (upstream_id, target) is unique: the DAO checks the pair (one rule for every backend).
CREATE TABLE upstreams (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    name TEXT UNIQUE,
    algorithm TEXT,
    hash_on TEXT,
    hash_fallback TEXT,
    hash_on_header TEXT,
    hash_fallback_header TEXT,
    slots INTEGER,
    healthchecks TEXT,
    tags TEXT
);
CREATE INDEX upstreams_created_idx ON upstreams (created_at, id);

CREATE TABLE targets (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    upstream_id TEXT REFERENCES upstreams (id) ON DELETE CASCADE,
    target TEXT,
    weight INTEGER,
    tags TEXT
);
CREATE INDEX targets_upstream_idx ON targets (upstream_id, target);
CREATE INDEX targets_created_idx ON targets (created_at, id);
