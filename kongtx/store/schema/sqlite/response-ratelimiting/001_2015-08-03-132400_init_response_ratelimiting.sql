-- Same shape as ratelimiting_metrics; period holds "<limit name>_<period>".
CREATE TABLE response_ratelimiting_metrics (
    api_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    period_date INTEGER NOT NULL,
    period TEXT NOT NULL,
    value INTEGER,
    PRIMARY KEY (api_id, identifier, period_date, period)
);
