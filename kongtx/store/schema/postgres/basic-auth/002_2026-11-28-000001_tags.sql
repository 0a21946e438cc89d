-- Kong 1.1's tags: an optional JSON array of strings on every Admin-managed entity.
-- jsonb so ?tags= filters run in the query (?& / ?|) on a GIN index.
ALTER TABLE basicauth_credentials ADD COLUMN IF NOT EXISTS tags jsonb;
CREATE INDEX IF NOT EXISTS basicauth_credentials_tags_idx ON basicauth_credentials USING gin (tags);
