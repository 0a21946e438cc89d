-- username is UNIQUE here, unlike Kong's Postgres schema (a gap closed on purpose).
CREATE TABLE basicauth_credentials (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    username TEXT UNIQUE,
    password TEXT
);
CREATE INDEX basicauth_consumer_idx ON basicauth_credentials (consumer_id);
CREATE INDEX basicauth_created_idx ON basicauth_credentials (created_at, id);
