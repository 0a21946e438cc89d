CREATE TABLE IF NOT EXISTS acls (
  id uuid PRIMARY KEY,
  "group" text,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS acls_group ON acls ("group");
CREATE INDEX IF NOT EXISTS acls_consumer_id ON acls (consumer_id);
