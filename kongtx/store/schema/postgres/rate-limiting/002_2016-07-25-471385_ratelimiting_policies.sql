-- Old configs: continue_on_error becomes fault_tolerant; policy cluster, limit_by consumer.
UPDATE plugins SET config = (
    (config::jsonb - 'continue_on_error')
    || jsonb_build_object('fault_tolerant', coalesce(config::jsonb -> 'continue_on_error', 'true'::jsonb))
    || jsonb_build_object('policy', coalesce(config::jsonb -> 'policy', '"cluster"'::jsonb))
    || jsonb_build_object('limit_by', coalesce(config::jsonb -> 'limit_by', '"consumer"'::jsonb))
  )::json
  WHERE name = 'rate-limiting' AND config IS NOT NULL;
