/*
 * report_retry — the retry view (see report_retry.h).
 *
 * One pass over the raw rows in id order with a hash table of the keys that
 * have failed so far: a key enters at its first failure, since requests
 * before it cannot be retries. Per key the state is the last failure's end
 * (start + duration: when the client had the answer) and its Retry-After.
 */
#include "report_retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "report_keys.h"
#include "util.h"

/* The state of one key, indexed by the key's number in keys. */
struct retry_key {
    int64_t failures, retries, premature;
    int64_t min_gap_ms;     /* -1: no retry yet */
    int64_t fail_end_ms;    /* the last failure's end */
    int64_t fail_retry_after_ms;
    int recovered;
};

struct report_retry {
    struct report_keys *keys; /* client '\0' method '\0' host '\0' route */
    struct retry_key *state;
    size_t cap;
    uint64_t scanned;       /* raw rows read: the footer's exchange count */
};

struct report_retry *report_retry_new(void)
{
    struct report_retry *rt = xcalloc(1, sizeof(struct report_retry));
    rt->keys = report_keys_new();
    return rt;
}

void report_retry_free(struct report_retry *rt)
{
    if (!rt)
        return;
    report_keys_free(rt->keys);
    free(rt->state);
    free(rt);
}

/* The state of KEY[0..n), or NULL; added when ADD. */
static struct retry_key *lookup(struct report_retry *rt, const char *key, size_t n, int add)
{
    size_t before = report_keys_count(rt->keys);
    long i = report_keys_find(rt->keys, key, n, add);
    if (i < 0)
        return NULL;
    if ((size_t)i == before) { /* a new key */
        rt->state = report_keys_grow_values(rt->state, &rt->cap, (size_t)i, sizeof *rt->state);
        rt->state[i] = (struct retry_key){.min_gap_ms = -1};
    }
    return &rt->state[i];
}

/* One raw row of KEY: starting at START, ending at END, answered CODE
 * (-1: none) with Retry-After RA ms (0: none). */
static void observe(struct report_retry *rt, const char *key, size_t n, int64_t start,
                    int64_t end, int code, int64_t ra)
{
    int failure = code == 429 || (code >= 500 && code <= 599);
    struct retry_key *k = lookup(rt, key, n, failure);
    if (!k)
        return;
    int64_t gap = start - k->fail_end_ms;
    if (k->failures > 0 && gap >= 0 && gap <= REPORT_RETRY_WINDOW_MS) {
        k->retries++;
        if (k->min_gap_ms < 0 || gap < k->min_gap_ms)
            k->min_gap_ms = gap;
        if (gap < k->fail_retry_after_ms)
            k->premature++;
    }
    if (failure) {
        k->failures++;
        k->fail_end_ms = end;
        k->fail_retry_after_ms = ra;
        k->recovered = 0;
    } else if (code >= 200 && code <= 399 && k->failures > 0) {
        k->recovered = 1;
    }
}

static int has_raw_rows(sqlite3 *src)
{
    sqlite3_stmt *st = NULL;
    int any = 0;
    if (sqlite3_prepare_v2(src, "SELECT EXISTS (SELECT 1 FROM exchanges)", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        any = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return any;
}

/* Prepare the raw-row query of SRC in O's range and filters into *ST. */
static int prepare_scan(sqlite3 *src, const struct report_options *o, sqlite3_stmt **st,
                        char *err, size_t errlen)
{
    char sql[640], route_filter[80] = "";
    /* Files older than schema 4 have no route nor Retry-After columns. */
    int v4 = db_version(src) >= 4;
    const char *route = v4 ? "coalesce(route, sp_route(path))" : "sp_route(path)";
    if (o->route_glob)
        snprintf(route_filter, sizeof route_filter, " AND sp_glob(?4, %s)", route);
    snprintf(sql, sizeof sql,
             "SELECT client, method, host, %s, start_ms, duration_us, coalesce(final_code, -1),"
             " %s FROM exchanges WHERE start_ms >= ?1 AND start_ms < ?2%s%s ORDER BY id",
             route, v4 ? "coalesce(retry_after_ms, 0)" : "0",
             o->host_glob ? " AND sp_glob(?3, host)" : "", route_filter);
    if (sqlite3_prepare_v2(src, sql, -1, st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "retry query: %s", sqlite3_errmsg(src));
        return -1;
    }
    sqlite3_bind_int64(*st, 1, o->since_ms);
    sqlite3_bind_int64(*st, 2, o->until_ms);
    if (o->host_glob)
        sqlite3_bind_text(*st, 3, o->host_glob, -1, SQLITE_STATIC);
    if (o->route_glob)
        sqlite3_bind_text(*st, 4, o->route_glob, -1, SQLITE_STATIC);
    return 0;
}

/* Feed the current row of ST to RT. */
static void observe_row(struct report_retry *rt, sqlite3_stmt *st, struct sbuf *key)
{
    rt->scanned++;
    sbuf_reset(key);
    for (int c = 0; c < 4; c++) {
        sbuf_append(key, (const char *)sqlite3_column_text(st, c),
                    (size_t)sqlite3_column_bytes(st, c));
        if (c < 3)
            sbuf_putc(key, '\0');
    }
    int64_t start = sqlite3_column_int64(st, 4);
    int64_t end = start + sqlite3_column_int64(st, 5) / 1000;
    observe(rt, key->data, key->len, start, end, sqlite3_column_int(st, 6),
            sqlite3_column_int64(st, 7));
}

/* Several files may hold the same period (one per proxy): their rows are
 * merged by start time, each file read in the order written, so a failure
 * seen by one proxy and its retry seen by another count as they happened. */
int report_retry_scan(struct report_retry *rt, sqlite3 *const *srcs, size_t n,
                      const struct report_options *o, uint64_t *raw, char *err, size_t errlen)
{
    sqlite3_stmt **st = xcalloc(n + 1, sizeof *st);
    int *live = xcalloc(n + 1, sizeof *live);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = prepare_scan(srcs[i], o, &st[i], err, errlen);
        *raw += rc == 0 ? (uint64_t)has_raw_rows(srcs[i]) : 0;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        int s = sqlite3_step(st[i]);
        live[i] = s == SQLITE_ROW;
        if (s != SQLITE_ROW && s != SQLITE_DONE) {
            snprintf(err, errlen, "retry query: %s", sqlite3_errmsg(srcs[i]));
            rc = -1;
        }
    }
    struct sbuf key = {0};
    while (rc == 0) {
        size_t next = n;    /* the file whose next row starts first */
        for (size_t i = 0; i < n; i++)
            if (live[i] && (next == n || sqlite3_column_int64(st[i], 4) <
                                             sqlite3_column_int64(st[next], 4)))
                next = i;
        if (next == n)
            break;
        observe_row(rt, st[next], &key);
        int s = sqlite3_step(st[next]);
        live[next] = s == SQLITE_ROW;
        if (s != SQLITE_ROW && s != SQLITE_DONE) {
            snprintf(err, errlen, "retry query: %s", sqlite3_errmsg(srcs[next]));
            rc = -1;
        }
    }
    sbuf_free(&key);
    for (size_t i = 0; i < n; i++)
        sqlite3_finalize(st[i]);
    free(st);
    free(live);
    return rc;
}

/* Key order for the result: most failures first, then the key's bytes. */
struct ranked {
    const struct retry_key *k;
    const char *key;
    size_t klen;
};

static int by_failures(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->k->failures != y->k->failures)
        return x->k->failures > y->k->failures ? -1 : 1;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static struct report_value text_value(const char *s, size_t n)
{
    char *t = xmalloc(n + 1);
    memcpy(t, s, n);
    t[n] = '\0';
    return (struct report_value){.type = REPORT_TEXT, .s = t};
}

void report_retry_result(const struct report_retry *rt, size_t top, struct report_result *out)
{
    static const char *const cols[] = {"client",  "method",    "host",       "route",    "failures",
                                       "retries", "premature", "min_gap_ms", "recovered"};
    memset(out, 0, sizeof *out);
    out->view = REPORT_BY_RETRY;
    out->name = "retry";
    out->ncols = ARRAY_LEN(cols);
    out->cols = xcalloc(out->ncols, sizeof *out->cols);
    for (size_t c = 0; c < out->ncols; c++)
        out->cols[c] = xstrdup(cols[c]);
    size_t n = report_keys_count(rt->keys);
    struct ranked *order = xcalloc(n + 1, sizeof *order);
    for (size_t i = 0; i < n; i++) {
        order[i].k = &rt->state[i];
        order[i].key = report_keys_get(rt->keys, i, &order[i].klen);
    }
    qsort(order, n, sizeof *order, by_failures);
    out->nrows = top && top < n ? top : n;
    out->cells = xcalloc(out->nrows * out->ncols + 1, sizeof *out->cells);
    for (size_t i = 0; i < out->nrows; i++) {
        const struct retry_key *k = order[i].k;
        struct report_value *row = &out->cells[i * out->ncols];
        const char *p = order[i].key, *end = order[i].key + order[i].klen;
        for (int c = 0; c < 4; c++) {
            const char *z = c < 3 ? memchr(p, '\0', (size_t)(end - p)) : end;
            row[c] = text_value(p, (size_t)(z - p));
            p = z + 1;
        }
        row[4] = (struct report_value){.type = REPORT_INT, .i = k->failures};
        row[5] = (struct report_value){.type = REPORT_INT, .i = k->retries};
        row[6] = (struct report_value){.type = REPORT_INT, .i = k->premature};
        if (k->min_gap_ms >= 0)
            row[7] = (struct report_value){.type = REPORT_INT, .i = k->min_gap_ms};
        row[8] = (struct report_value){.type = REPORT_BOOL, .i = k->recovered};
    }
    out->total = rt->scanned;
    free(order);
}
