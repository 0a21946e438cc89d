CREATE TABLE IF NOT EXISTS oauth2_credentials (
  id uuid PRIMARY KEY,
  name text,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  client_id text UNIQUE,
  client_secret text UNIQUE,
  redirect_uri text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS oauth2_credentials_consumer_idx ON oauth2_credentials (consumer_id);
CREATE INDEX IF NOT EXISTS oauth2_credentials_client_idx ON oauth2_credentials (client_id);
CREATE INDEX IF NOT EXISTS oauth2_credentials_secret_idx ON oauth2_credentials (client_secret);

CREATE TABLE IF NOT EXISTS oauth2_authorization_codes (
  id uuid PRIMARY KEY,
  code text UNIQUE,
  authenticated_userid text,
  scope text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS oauth2_autorization_code_idx ON oauth2_authorization_codes (code);
CREATE INDEX IF NOT EXISTS oauth2_authorization_userid_idx ON oauth2_authorization_codes (authenticated_userid);

CREATE TABLE IF NOT EXISTS oauth2_tokens (
  id uuid PRIMARY KEY,
  credential_id uuid REFERENCES oauth2_credentials (id) ON DELETE CASCADE,
  access_token text UNIQUE,
  token_type text,
  refresh_token text UNIQUE,
  expires_in int,
  authenticated_userid text,
  scope text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS oauth2_accesstoken_idx ON oauth2_tokens (access_token);
CREATE INDEX IF NOT EXISTS oauth2_token_refresh_idx ON oauth2_tokens (refresh_token);
CREATE INDEX IF NOT EXISTS oauth2_token_userid_idx ON oauth2_tokens (authenticated_userid);
CREATE INDEX IF NOT EXISTS oauth2_token_credential_idx ON oauth2_tokens (credential_id);
