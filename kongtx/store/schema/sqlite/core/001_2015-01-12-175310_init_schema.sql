-- Core entities (SPEC §2.1-2.3, §7.1).  Booleans are 0/1, created_at is epoch ms,
-- plugins.config is JSON text.  Foreign keys cascade: deleting an API or a consumer
-- deletes its plugins (the store reads them first to emit their delete events).
-- Columns carry no NOT NULL or DEFAULT: the DAO validates and fills defaults, and the
-- store writes every column, so the memory store and this schema accept the same rows.
CREATE TABLE apis (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    name TEXT UNIQUE,
    request_host TEXT UNIQUE,
    request_path TEXT UNIQUE,
    strip_request_path INTEGER,
    preserve_host INTEGER,
    upstream_url TEXT
);

CREATE TABLE consumers (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    username TEXT UNIQUE,
    custom_id TEXT UNIQUE
);

CREATE TABLE plugins (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    name TEXT,
    api_id TEXT REFERENCES apis (id) ON DELETE CASCADE,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    config TEXT,
    enabled INTEGER
);
CREATE INDEX plugins_name_idx ON plugins (name);
CREATE INDEX plugins_api_idx ON plugins (api_id);
CREATE INDEX plugins_consumer_idx ON plugins (consumer_id);
CREATE INDEX apis_created_idx ON apis (created_at, id);
CREATE INDEX consumers_created_idx ON consumers (created_at, id);
CREATE INDEX plugins_created_idx ON plugins (created_at, id);
