/*
 * audit — the exchange log. Event loops hand finished exchanges over in
 * batches; one writer thread owns the SQLite connection and writes each batch
 * in one transaction (raw rows as --log-exchanges says, per-minute aggregates
 * always). Nothing here blocks the caller on SQLite.
 */
#ifndef STATUSPROXY_AUDIT_H
#define STATUSPROXY_AUDIT_H

#include <stddef.h>
#include <stdint.h>

enum audit_mode { AUDIT_LOG_ALL, AUDIT_LOG_ERRORS, AUDIT_LOG_NONE };

/* One finished exchange. Plain data, copied by audit_submit. Strings are
 * NUL-terminated and truncated to fit. */
struct audit_record {
    int64_t start_ms;        /* Unix ms when the request head was complete */
    int64_t duration_us;     /* from then to the last byte sent, or the failure */
    int upstream_code;       /* -1: no response came from upstream (NULL in the DB) */
    int final_code;          /* status the client received; -1: none (reset, client gone) */
    uint64_t bytes_in;       /* bytes received from the client, head and body */
    uint64_t bytes_out;      /* bytes sent to the client, head and body */
    char client[48];         /* client IP address, e.g. "127.0.0.1" or "::1" */
    char method[24];
    char host[256];          /* target host without port */
    char path[1024];         /* request path without the query */
    char rule[64];           /* rule that acted (response rule if any), "" when none */
    char action[128];        /* that rule's actions, "" when none */
    char error[32];          /* "" or connect_refused, connect_timeout, dns, timeout,
                                bad_response, client_closed, upstream_closed, ... */
};

struct audit_config {
    const char *db_path;
    enum audit_mode mode;
    uint64_t retain_ms;      /* raw rows older than this are pruned; 0: keep all */
    size_t queue_limit;      /* records waiting at most; beyond, they are counted lost */
};

struct audit;

/* Open (create, migrate) the database and start the writer thread.
 * Returns NULL with a message in ERR when the database cannot be used. */
struct audit *audit_open(const struct audit_config *cfg, char *err, size_t errlen);

/* Hand N records to the writer (thread-safe; copies them). Returns how many
 * were dropped because the queue was full (also counted and stored). */
size_t audit_submit(struct audit *a, const struct audit_record *recs, size_t n);

/* Records lost so far. */
uint64_t audit_dropped(const struct audit *a);

/* Additions beyond the first contract: */

/* Block until everything submitted before the call is committed (or, while
 * closing, given up and counted as lost). Not for event-loop threads: it waits
 * for SQLite, for as long as the database stays locked. */
void audit_flush(struct audit *a);

/* 1 when the writer's latest attempt to write failed (it keeps retrying; the
 * SQLite message goes to BUF), 0 when its latest write succeeded. For the
 * caller to log: this module never logs. */
int audit_last_error(struct audit *a, char *buf, size_t len);

/* Write everything queued, stop the writer, close the database. NULL is fine. */
void audit_close(struct audit *a);

#endif
