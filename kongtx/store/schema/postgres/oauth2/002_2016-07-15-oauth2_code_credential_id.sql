-- Codes now belong to an application: existing codes (short-lived) cannot be tied to one.
DELETE FROM oauth2_authorization_codes;
ALTER TABLE oauth2_authorization_codes ADD COLUMN IF NOT EXISTS
  credential_id uuid REFERENCES oauth2_credentials (id) ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS oauth2_authorization_credential_idx ON oauth2_authorization_codes (credential_id);
