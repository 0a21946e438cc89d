-- One counter per (api, identifier, period start, period); rows are never cleaned (SPEC §7.1).
CREATE TABLE ratelimiting_metrics (
    api_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    period_date INTEGER NOT NULL,
    period TEXT NOT NULL,
    value INTEGER,
    PRIMARY KEY (api_id, identifier, period_date, period)
);
