-- Old configs: continue_on_error becomes fault_tolerant; policy cluster.
UPDATE plugins SET config = (
    (config::jsonb - 'continue_on_error')
    || jsonb_build_object('fault_tolerant', coalesce(config::jsonb -> 'continue_on_error', 'true'::jsonb))
    || jsonb_build_object('policy', coalesce(config::jsonb -> 'policy', '"cluster"'::jsonb))
  )::json
  WHERE name = 'response-ratelimiting' AND config IS NOT NULL;
