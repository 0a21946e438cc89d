-- TTL emulation (SPEC 7.1): a row of a TTL table whose ttls.expire_at has passed is
-- hidden from every read and removed by the store's cleanup job.  expire_at is UTC.
CREATE TABLE IF NOT EXISTS ttls (
  primary_key_value text NOT NULL,
  primary_uuid_value uuid,
  table_name text NOT NULL,
  primary_key_name text NOT NULL,
  expire_at timestamp without time zone NOT NULL,
  PRIMARY KEY (primary_key_value, table_name)
);
CREATE INDEX IF NOT EXISTS ttls_expire_at_idx ON ttls (expire_at);

CREATE OR REPLACE FUNCTION upsert_ttl(v_primary_key_value text, v_primary_uuid_value uuid,
    v_primary_key_name text, v_table_name text, v_expire_at timestamp) RETURNS VOID AS $$
BEGIN
  INSERT INTO ttls (primary_key_value, primary_uuid_value, table_name, primary_key_name, expire_at)
  VALUES (v_primary_key_value, v_primary_uuid_value, v_table_name, v_primary_key_name, v_expire_at)
  ON CONFLICT (primary_key_value, table_name) DO UPDATE SET expire_at = EXCLUDED.expire_at;
END;
$$ LANGUAGE plpgsql;
