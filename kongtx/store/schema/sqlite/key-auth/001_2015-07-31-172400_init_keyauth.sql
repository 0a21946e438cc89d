CREATE TABLE keyauth_credentials (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    key TEXT UNIQUE
);
CREATE INDEX keyauth_consumer_idx ON keyauth_credentials (consumer_id);
CREATE INDEX keyauth_created_idx ON keyauth_credentials (created_at, id);
