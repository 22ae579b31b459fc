-- statusproxy schema 5: the scheme of every exchange (DESIGN §9): 'http',
-- 'https' (HTTP inside TLS) or 'tunnel' (a blind CONNECT, bytes never read).
-- Raw rows written before this schema were all cleartext, so they read as
-- 'http', except CONNECT requests: those were tunnels, and their method
-- says so. Aggregate rows keep no method, so all of theirs read as 'http'.
-- The aggregates gain the scheme in their key (the same host over http and
-- https are two origins, with their own failures).

ALTER TABLE exchanges ADD COLUMN scheme TEXT NOT NULL DEFAULT 'http';
UPDATE exchanges SET scheme = 'tunnel' WHERE method = 'CONNECT';

-- The views name the tables; they are recreated below with the new column.
DROP VIEW IF EXISTS exchange_log;
DROP VIEW IF EXISTS minute_log;

CREATE TABLE minute_stats_v5 (
    minute        INTEGER NOT NULL,
    host          TEXT    NOT NULL,
    scheme        TEXT    NOT NULL,  -- 'http' for rows recorded before schema 5
    route         TEXT    NOT NULL,
    upstream_code INTEGER NOT NULL,
    final_code    INTEGER NOT NULL,
    rule          TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    bytes_in      INTEGER NOT NULL,
    bytes_out     INTEGER NOT NULL,
    hist          BLOB,
    PRIMARY KEY (minute, host, scheme, route, upstream_code, final_code, rule)
) WITHOUT ROWID;
INSERT INTO minute_stats_v5
SELECT minute, host, 'http', route, upstream_code, final_code, rule, count, duration_us,
       bytes_in, bytes_out, hist
FROM minute_stats;
DROP TABLE minute_stats;
ALTER TABLE minute_stats_v5 RENAME TO minute_stats;

CREATE VIEW exchange_log AS
SELECT id,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ms / 1000.0, 'unixepoch') AS time,
       client, scheme, method, host, path, route, upstream_code, final_code, rule, action,
       error, duration_us / 1000.0 AS duration_ms, bytes_in, bytes_out, retry_after_ms
FROM exchanges;

CREATE VIEW minute_log AS
SELECT strftime('%Y-%m-%dT%H:%M:00Z', minute, 'unixepoch') AS minute,
       scheme,
       host,
       NULLIF(route, '') AS route,
       NULLIF(upstream_code, -1) AS upstream_code,
       NULLIF(final_code, -1) AS final_code,
       NULLIF(rule, '') AS rule,
       count,
       duration_us / 1000.0 / count AS mean_duration_ms,
       bytes_in, bytes_out
FROM minute_stats;
