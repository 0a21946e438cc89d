-- What migrations ran, one row per identifier (core, then each plugin).
CREATE TABLE IF NOT EXISTS schema_migrations (
  id text PRIMARY KEY,
  migrations varchar(100)[]
);

CREATE OR REPLACE FUNCTION upsert_schema_migrations(identifier text, migration_name varchar) RETURNS VOID AS $$
BEGIN
  UPDATE schema_migrations SET migrations = array_append(migrations, migration_name) WHERE id = identifier;
  IF NOT FOUND THEN
    INSERT INTO schema_migrations (id, migrations) VALUES (identifier, ARRAY[migration_name]);
  END IF;
END;
$$ LANGUAGE plpgsql;
