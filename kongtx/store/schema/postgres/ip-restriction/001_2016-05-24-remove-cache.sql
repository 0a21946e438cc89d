-- 0.8 stored parsed-CIDR caches in the config; they are computed at run time now.
UPDATE plugins SET config = ((config::jsonb - '_whitelist_cache') - '_blacklist_cache')::json
  WHERE name = 'ip-restriction' AND config IS NOT NULL;
