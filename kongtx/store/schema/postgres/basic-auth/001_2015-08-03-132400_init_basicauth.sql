-- username is UNIQUE here on purpose (Kong's Postgres schema left it out; SPEC 2.5).
CREATE TABLE IF NOT EXISTS basicauth_credentials (
  id uuid PRIMARY KEY,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  username text UNIQUE,
  password text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS basicauth_username_idx ON basicauth_credentials (username);
CREATE INDEX IF NOT EXISTS basicauth_consumer_id_idx ON basicauth_credentials (consumer_id);
