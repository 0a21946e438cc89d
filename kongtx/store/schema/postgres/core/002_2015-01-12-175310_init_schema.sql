-- Core entities (SPEC 7.1).  kongtx differences: consumers.custom_id is UNIQUE (the
-- gap in Kong's Postgres schema is closed on purpose); no NOT NULL beyond primary keys,
-- because defaults are the DAO's job and every backend must accept the same rows.
CREATE TABLE IF NOT EXISTS consumers (
  id uuid PRIMARY KEY,
  custom_id text UNIQUE,
  username text UNIQUE,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS custom_id_idx ON consumers (custom_id);
CREATE INDEX IF NOT EXISTS username_idx ON consumers ((lower(username)));

CREATE TABLE IF NOT EXISTS apis (
  id uuid PRIMARY KEY,
  name text UNIQUE,
  request_host text UNIQUE,
  request_path text UNIQUE,
  strip_request_path boolean,
  upstream_url text,
  preserve_host boolean,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS apis_name_idx ON apis (name);
CREATE INDEX IF NOT EXISTS apis_request_host_idx ON apis (request_host);
CREATE INDEX IF NOT EXISTS apis_request_path_idx ON apis (request_path);

-- Kong keys plugins by (id, name); the store keys them by id (name stays NOT NULL-free
-- and the DAO keeps PUT's (id, name) rule).
CREATE TABLE IF NOT EXISTS plugins (
  id uuid PRIMARY KEY,
  name text,
  api_id uuid REFERENCES apis (id) ON DELETE CASCADE,
  consumer_id uuid REFERENCES consumers (id) ON DELETE CASCADE,
  config json,
  enabled boolean,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS plugins_name_idx ON plugins (name);
CREATE INDEX IF NOT EXISTS plugins_api_idx ON plugins (api_id);
CREATE INDEX IF NOT EXISTS plugins_consumer_idx ON plugins (consumer_id);
