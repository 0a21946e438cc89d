CREATE TABLE IF NOT EXISTS jwt_secrets (
  id uuid PRIMARY KEY,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  key text UNIQUE,
  secret text UNIQUE,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS jwt_secrets_key ON jwt_secrets (key);
CREATE INDEX IF NOT EXISTS jwt_secrets_secret ON jwt_secrets (secret);
CREATE INDEX IF NOT EXISTS jwt_secrets_consumer_id ON jwt_secrets (consumer_id);
