CREATE TABLE IF NOT EXISTS ratelimiting_metrics (
  api_id uuid,
  identifier text,
  period text,
  period_date timestamp without time zone,
  value integer,
  PRIMARY KEY (api_id, identifier, period_date, period)
);

CREATE OR REPLACE FUNCTION increment_rate_limits(a_id uuid, i text, p text, p_date timestamp, v integer) RETURNS VOID AS $$
BEGIN
  LOOP
    UPDATE ratelimiting_metrics SET value = value + v
      WHERE api_id = a_id AND identifier = i AND period = p AND period_date = p_date;
    IF found THEN RETURN; END IF;
    BEGIN
      INSERT INTO ratelimiting_metrics (api_id, period, period_date, identifier, value)
        VALUES (a_id, p, p_date, i, v);
      RETURN;
    EXCEPTION WHEN unique_violation THEN
      -- someone inserted it meanwhile: loop and update
    END;
  END LOOP;
END;
$$ LANGUAGE plpgsql;
