-- statusproxy schema 1: the exchange log, per-minute aggregates, lost records.
-- db.c applies this file in one transaction and then sets user_version and
-- the application id that mark the file as a statusproxy database.

-- One row per finished exchange, as --log-exchanges allows; pruned by --retain.
CREATE TABLE exchanges (
    id            INTEGER PRIMARY KEY,
    start_ms      INTEGER NOT NULL,  -- Unix ms when the request head was complete
    client        TEXT    NOT NULL,  -- client IP address
    method        TEXT    NOT NULL,
    host          TEXT    NOT NULL,  -- target host without port
    path          TEXT    NOT NULL,  -- without the query
    upstream_code INTEGER,           -- NULL: no response came from upstream
    final_code    INTEGER,           -- NULL: the client received none (reset, client gone)
    rule          TEXT,              -- NULL: no rule acted
    action        TEXT,              -- that rule's actions
    error         TEXT,              -- NULL, or connect_refused, timeout, bad_response, ...
    duration_us   INTEGER NOT NULL,
    bytes_in      INTEGER NOT NULL,  -- from the client
    bytes_out     INTEGER NOT NULL   -- to the client
);
-- Retention prunes by time, and most questions about raw rows are about a time range.
CREATE INDEX exchanges_start ON exchanges (start_ms);

-- Every exchange is counted here whatever --log-exchanges says, and these rows
-- are never pruned: reports read only this table. Absent values are -1 and ''
-- rather than NULL because they are part of the key (NULLs never conflict).
CREATE TABLE minute_stats (
    minute        INTEGER NOT NULL,  -- Unix seconds of the minute's start
    host          TEXT    NOT NULL,
    upstream_code INTEGER NOT NULL,  -- -1: no response came from upstream
    final_code    INTEGER NOT NULL,  -- -1: the client received none
    rule          TEXT    NOT NULL,  -- '': no rule acted
    count         INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,  -- summed over the exchanges counted
    bytes_in      INTEGER NOT NULL,  -- summed
    bytes_out     INTEGER NOT NULL,  -- summed
    PRIMARY KEY (minute, host, upstream_code, final_code, rule)
) WITHOUT ROWID;

-- Records lost because the writer fell behind (queue full), per minute of the
-- loss, so that reports can say how much they are missing.
CREATE TABLE dropped (
    minute INTEGER PRIMARY KEY,      -- Unix seconds of the minute's start
    count  INTEGER NOT NULL
);
