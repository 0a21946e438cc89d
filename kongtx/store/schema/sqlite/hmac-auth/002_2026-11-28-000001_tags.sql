-- Kong 1.1's tags: an optional JSON array of strings on every Admin-managed entity.
-- JSON text; ?tags= filters use json_each inside the query.
ALTER TABLE hmacauth_credentials ADD COLUMN tags TEXT;
