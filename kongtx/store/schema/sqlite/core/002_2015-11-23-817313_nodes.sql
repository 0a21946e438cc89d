-- Cluster membership (SPEC §2.4).  Rows carry a TTL: kong_expire_at (epoch ms) is
-- the store's own column, never returned; expired rows are hidden and swept.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    cluster_listening_address TEXT,
    created_at INTEGER,
    kong_expire_at INTEGER
);
CREATE INDEX nodes_cluster_listening_address_idx ON nodes (cluster_listening_address);
CREATE INDEX nodes_expire_idx ON nodes (kong_expire_at);
