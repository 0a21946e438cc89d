CREATE TABLE hmacauth_credentials (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    username TEXT UNIQUE,
    secret TEXT
);
CREATE INDEX hmacauth_consumer_idx ON hmacauth_credentials (consumer_id);
CREATE INDEX hmacauth_created_idx ON hmacauth_credentials (created_at, id);
