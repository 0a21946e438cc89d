CREATE TABLE IF NOT EXISTS nodes (
  name text PRIMARY KEY,
  cluster_listening_address text,
  created_at timestamp without time zone DEFAULT (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS nodes_cluster_listening_address_idx ON nodes (cluster_listening_address);
