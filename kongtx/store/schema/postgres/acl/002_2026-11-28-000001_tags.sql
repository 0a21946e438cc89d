-- Kong 1.1's tags: an optional JSON array of strings on every Admin-managed entity.
-- jsonb so ?tags= filters run in the query (?& / ?|) on a GIN index.
ALTER TABLE acls ADD COLUMN IF NOT EXISTS tags jsonb;
CREATE INDEX IF NOT EXISTS acls_tags_idx ON acls USING gin (tags);
