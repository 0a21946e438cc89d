CREATE TABLE IF NOT EXISTS hmacauth_credentials (
  id uuid PRIMARY KEY,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  username text UNIQUE,
  secret text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS hmacauth_credentials_username ON hmacauth_credentials (username);
CREATE INDEX IF NOT EXISTS hmacauth_credentials_consumer_id ON hmacauth_credentials (consumer_id);
