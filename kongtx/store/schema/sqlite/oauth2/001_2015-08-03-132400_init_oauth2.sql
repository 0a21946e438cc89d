-- redirect_uri is a JSON array (what Kong's 2016-12-22 migration made it); authorization
-- codes belong to their application (Kong's 2016-07-15 credential_id migration).  Codes
-- and tokens carry a TTL in kong_expire_at (epoch ms), never returned.
CREATE TABLE oauth2_credentials (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    consumer_id TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    name TEXT,
    client_id TEXT UNIQUE,
    client_secret TEXT UNIQUE,
    redirect_uri TEXT
);
CREATE INDEX oauth2_credentials_consumer_idx ON oauth2_credentials (consumer_id);
CREATE INDEX oauth2_credentials_created_idx ON oauth2_credentials (created_at, id);

CREATE TABLE oauth2_authorization_codes (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    credential_id TEXT REFERENCES oauth2_credentials (id) ON DELETE CASCADE,
    code TEXT UNIQUE,
    authenticated_userid TEXT,
    scope TEXT,
    kong_expire_at INTEGER
);
CREATE INDEX oauth2_codes_credential_idx ON oauth2_authorization_codes (credential_id);
CREATE INDEX oauth2_codes_expire_idx ON oauth2_authorization_codes (kong_expire_at);
CREATE INDEX oauth2_codes_created_idx ON oauth2_authorization_codes (created_at, id);

CREATE TABLE oauth2_tokens (
    id TEXT PRIMARY KEY,
    created_at INTEGER,
    credential_id TEXT REFERENCES oauth2_credentials (id) ON DELETE CASCADE,
    token_type TEXT,
    expires_in INTEGER,
    access_token TEXT UNIQUE,
    refresh_token TEXT UNIQUE,
    authenticated_userid TEXT,
    scope TEXT,
    kong_expire_at INTEGER
);
CREATE INDEX oauth2_tokens_credential_idx ON oauth2_tokens (credential_id);
CREATE INDEX oauth2_tokens_authenticated_userid_idx ON oauth2_tokens (authenticated_userid);
CREATE INDEX oauth2_tokens_expire_idx ON oauth2_tokens (kong_expire_at);
CREATE INDEX oauth2_tokens_created_idx ON oauth2_tokens (created_at, id);
