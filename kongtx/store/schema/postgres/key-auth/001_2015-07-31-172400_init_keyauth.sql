CREATE TABLE IF NOT EXISTS keyauth_credentials (
  id uuid PRIMARY KEY,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  key text UNIQUE,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS keyauth_key_idx ON keyauth_credentials (key);
CREATE INDEX IF NOT EXISTS keyauth_consumer_idx ON keyauth_credentials (consumer_id);
