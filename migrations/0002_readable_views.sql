-- statusproxy schema 2: views for people who query the database by hand
-- (sqlite3 statusproxy.db 'SELECT * FROM exchange_log ORDER BY time DESC LIMIT 20'):
-- ISO 8601 UTC times, durations in milliseconds, and NULL for absent values
-- in the aggregates too. Views cost nothing when the proxy writes.

CREATE VIEW exchange_log AS
SELECT id,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ms / 1000.0, 'unixepoch') AS time,
       client, method, host, path, upstream_code, final_code, rule, action, error,
       duration_us / 1000.0 AS duration_ms, bytes_in, bytes_out
FROM exchanges;

CREATE VIEW minute_log AS
SELECT strftime('%Y-%m-%dT%H:%M:00Z', minute, 'unixepoch') AS minute,
       host,
       NULLIF(upstream_code, -1) AS upstream_code,
       NULLIF(final_code, -1) AS final_code,
       NULLIF(rule, '') AS rule,
       count,
       duration_us / 1000.0 / count AS mean_duration_ms,
       bytes_in, bytes_out
FROM minute_stats;

CREATE VIEW dropped_log AS
SELECT strftime('%Y-%m-%dT%H:%M:00Z', minute, 'unixepoch') AS minute, count
FROM dropped;
