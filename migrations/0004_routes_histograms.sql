-- statusproxy schema 4: routes, latency histograms and Retry-After (DESIGN §11).
-- Raw rows gain the route of their path and the Retry-After the client
-- received (in ms; NULL when none). Old raw rows get their route computed
-- here by sp_route(), the same templating the writer uses (db.c registers it
-- before migrating). The aggregates gain the route in their key, and a
-- duration histogram (histogram.c's compact form) per row; aggregate rows
-- written before this schema have no route ('') and no histogram (NULL):
-- their paths were never kept.

ALTER TABLE exchanges ADD COLUMN route TEXT;
ALTER TABLE exchanges ADD COLUMN retry_after_ms INTEGER;
UPDATE exchanges SET route = sp_route(path);

-- The views name minute_stats; they are recreated below with the new columns.
DROP VIEW IF EXISTS exchange_log;
DROP VIEW IF EXISTS minute_log;

CREATE TABLE minute_stats_v4 (
    minute        INTEGER NOT NULL,
    host          TEXT    NOT NULL,
    route         TEXT    NOT NULL,  -- '': recorded before schema 4
    upstream_code INTEGER NOT NULL,
    final_code    INTEGER NOT NULL,
    rule          TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    bytes_in      INTEGER NOT NULL,
    bytes_out     INTEGER NOT NULL,
    hist          BLOB,              -- durations; NULL: recorded before schema 4
    PRIMARY KEY (minute, host, route, upstream_code, final_code, rule)
) WITHOUT ROWID;
INSERT INTO minute_stats_v4
SELECT minute, host, '', upstream_code, final_code, rule, count, duration_us, bytes_in, bytes_out,
       NULL
FROM minute_stats;
DROP TABLE minute_stats;
ALTER TABLE minute_stats_v4 RENAME TO minute_stats;

CREATE VIEW exchange_log AS
SELECT id,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ms / 1000.0, 'unixepoch') AS time,
       client, method, host, path, route, upstream_code, final_code, rule, action, error,
       duration_us / 1000.0 AS duration_ms, bytes_in, bytes_out, retry_after_ms
FROM exchanges;

CREATE VIEW minute_log AS
SELECT strftime('%Y-%m-%dT%H:%M:00Z', minute, 'unixepoch') AS minute,
       host,
       NULLIF(route, '') AS route,
       NULLIF(upstream_code, -1) AS upstream_code,
       NULLIF(final_code, -1) AS final_code,
       NULLIF(rule, '') AS rule,
       count,
       duration_us / 1000.0 / count AS mean_duration_ms,
       bytes_in, bytes_out
FROM minute_stats;
