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
#include <string.h>

struct route_patterns;

enum audit_mode { AUDIT_LOG_ALL, AUDIT_LOG_ERRORS, AUDIT_LOG_NONE };

/* How the exchange reached the proxy (DESIGN §9): plain HTTP, HTTP inside
 * TLS (a TLS listener or an intercepted CONNECT), or a blind CONNECT tunnel
 * whose bytes the proxy never read. Zero is plain HTTP, so a record that
 * does not say is what every exchange was before TLS. */
enum audit_scheme { AUDIT_SCHEME_HTTP, AUDIT_SCHEME_HTTPS, AUDIT_SCHEME_TUNNEL, AUDIT_SCHEME_COUNT };
/* "http", "https", "tunnel" (anything else reads as "http"). */
const char *audit_scheme_name(enum audit_scheme s);

/* One finished exchange as the proxy hands it over (audit_batch_add): numbers,
 * and strings by pointer and length, which need no terminator and are copied.
 * Strings longer than their column's limit (AUDIT_MAX_*) are cut there. */
struct audit_text {
    const char *s;
    size_t len;
};
#define AUDIT_TEXT(str) ((struct audit_text){(str), strlen(str)})

#define AUDIT_MAX_CLIENT 47
#define AUDIT_MAX_METHOD 23
#define AUDIT_MAX_HOST 255
#define AUDIT_MAX_PATH 1023
#define AUDIT_MAX_RULE 63
#define AUDIT_MAX_ACTION 127
#define AUDIT_MAX_ERROR 31

struct audit_entry {
    int64_t start_ms;        /* Unix ms when the request head was complete */
    int64_t duration_us;     /* from then to the last byte sent, or the failure */
    int upstream_code;       /* -1: no response came from upstream (NULL in the DB) */
    int final_code;          /* status the client received; -1: none (reset, client gone) */
    uint64_t bytes_in;       /* bytes received from the client, head and body */
    uint64_t bytes_out;      /* bytes sent to the client, head and body */
    struct audit_text client;  /* client IP address, e.g. "127.0.0.1" or "::1" */
    struct audit_text method;
    struct audit_text host;    /* target host without port */
    struct audit_text path;    /* request path without the query */
    struct audit_text rule;    /* rule that acted (response rule if any); empty when none */
    struct audit_text action;  /* that rule's actions; empty when none */
    struct audit_text error;   /* empty, or connect_refused, connect_timeout, dns, timeout,
                                  bad_response, client_closed, upstream_closed, ... */
    int64_t retry_after_ms;    /* the answer's Retry-After, in ms; 0: none */
    enum audit_scheme scheme;  /* set by the caller from its transport */
};

/* The same exchange as a self-contained value, for tools and tests that build
 * records one by one (audit_submit). Strings are NUL-terminated within their
 * arrays; one that fills its array without a terminator is cut at the array. */
struct audit_record {
    int64_t start_ms;
    int64_t duration_us;
    int upstream_code;
    int final_code;
    uint64_t bytes_in;
    uint64_t bytes_out;
    char client[48];
    char method[24];
    char host[256];
    char path[1024];
    char rule[64];
    char action[128];
    char error[32];
    int64_t retry_after_ms;    /* 0: none */
    enum audit_scheme scheme;
};

/* Records packed back to back (numbers, then the strings' bytes: about a
 * hundred bytes each), filled by one thread and handed to the writer whole,
 * without copying. */
struct audit_batch;

struct audit_config {
    const char *db_path;
    enum audit_mode mode;
    uint64_t retain_ms;      /* raw rows older than this are pruned; 0: keep all */
    size_t queue_limit;      /* records waiting at most; beyond, they are counted lost */
    const struct route_patterns *routes; /* run --route; NULL: none. Borrowed for the
                                            audit's lifetime */
    size_t max_routes;       /* distinct routes per host in the aggregates; 0: the default */
};

struct audit;

/* Open (create, migrate) the database and start the writer thread.
 * Returns NULL with a message in ERR when the database cannot be used. */
struct audit *audit_open(const struct audit_config *cfg, char *err, size_t errlen);

/* An empty batch, owned by the caller (free it with audit_batch_free). */
struct audit_batch *audit_batch_new(void);
/* Append a copy of E. Returns the number of records now in B. */
size_t audit_batch_add(struct audit_batch *b, const struct audit_entry *e);
/* Records in B. */
size_t audit_batch_count(const struct audit_batch *b);
/* Free B and its records (NULL is fine). */
void audit_batch_free(struct audit_batch *b);

/* Hand B's records to the writer (thread-safe; no copy: B becomes the
 * writer's) and return an empty batch, never NULL, for the caller to fill
 * next (recycled from those the writer is done with). When the queue has room
 * for only part of B, its first records are taken and the rest dropped,
 * counted and stored; *LOST gets how many were dropped. */
struct audit_batch *audit_submit_batch(struct audit *a, struct audit_batch *b, size_t *lost);

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

/* The TOP routes with the most exchanges since the audit opened, as a JSON
 * object {"host": {"route": count, ...}, ...} (malloc'd, the caller's to
 * free). Counted by the writer: up to a write interval behind. */
char *audit_routes_json(struct audit *a, size_t top);

/* What kind of failure a write attempt met, from SQLite's result code. */
enum audit_error_kind {
    AUDIT_ERR_BUSY,      /* another process holds a lock */
    AUDIT_ERR_FULL,      /* disk or quota full */
    AUDIT_ERR_IO,        /* an I/O error */
    AUDIT_ERR_READONLY,  /* the file cannot be written */
    AUDIT_ERR_CORRUPT,   /* the file is damaged or not a database */
    AUDIT_ERR_OTHER,
    AUDIT_ERR_COUNT
};
/* "busy", "disk_full", "io", "readonly", "corrupt", "other". */
const char *audit_error_kind_name(enum audit_error_kind k);
/* Failed write attempts since open, per kind (every retry counts), into
 * COUNTS[AUDIT_ERR_COUNT]. Thread-safe. */
void audit_error_counts(const struct audit *a, uint64_t *counts);

/* Write everything queued, stop the writer, close the database. NULL is fine. */
void audit_close(struct audit *a);

#endif
