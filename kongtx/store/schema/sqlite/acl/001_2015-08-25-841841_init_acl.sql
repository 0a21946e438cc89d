CREATE TABLE acls (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    "group" TEXT
);
CREATE INDEX acls_group_idx ON acls ("group");
CREATE INDEX acls_consumer_idx ON acls (consumer_id);
CREATE INDEX acls_created_idx ON acls (created_at, id);
