-- Kong 1.1's tags: an optional JSON array of strings on every Admin-managed entity.
-- jsonb so ?tags= filters run in the query (?& / ?|) on a GIN index.
ALTER TABLE apis ADD COLUMN IF NOT EXISTS tags jsonb;
CREATE INDEX IF NOT EXISTS apis_tags_idx ON apis USING gin (tags);
ALTER TABLE consumers ADD COLUMN IF NOT EXISTS tags jsonb;
CREATE INDEX IF NOT EXISTS consumers_tags_idx ON consumers USING gin (tags);
ALTER TABLE plugins ADD COLUMN IF NOT EXISTS tags jsonb;
CREATE INDEX IF NOT EXISTS plugins_tags_idx ON plugins USING gin (tags);
