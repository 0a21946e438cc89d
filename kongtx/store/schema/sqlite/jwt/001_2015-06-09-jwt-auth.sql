CREATE TABLE jwt_secrets (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    key TEXT UNIQUE,
    secret TEXT UNIQUE
);
CREATE INDEX jwt_secrets_consumer_idx ON jwt_secrets (consumer_id);
CREATE INDEX jwt_secrets_created_idx ON jwt_secrets (created_at, id);
