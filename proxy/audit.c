/*
 * audit — the writer thread behind the exchange log.
 *
 * Event loops fill batches of packed records (audit_batch_add: the numbers
 * and the strings' bytes, about a hundred bytes a record) and hand each
 * whole batch to one bounded queue under a mutex (audit_submit_batch: a
 * pointer appended, an emptied batch taken back; no copy, no SQLite, no
 * I/O). The writer thread wakes every WAKE_INTERVAL_MS, or early when a batch
 * is waiting, takes the queued batches and writes them in one transaction:
 * raw rows as the mode allows (one INSERT ... SELECT over a virtual table
 * that reads the batches, so SQLite runs one statement per transaction rather
 * than one per row with thirteen binds), per-minute aggregates always, and
 * the count of records the full queue turned away. Then it gives the batches
 * back for reuse. Routes (route.c) are computed here, once per record at
 * the start of each transaction, so the event loops never template paths;
 * each aggregate row also sums a duration histogram (histogram.c), stored
 * in its compact form and merged into the row by sp_hist_merge. The scheme
 * (http, https, tunnel) is a byte of each record, named only when written.
 * A failed transaction (the database locked by another
 * process, a full disk) is rolled back whole and retried, so a record is
 * written exactly once or, if closing gives up, counted as lost.
 */
#include "audit.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "histogram.h"
#include "route.h"
#include "util.h"

#define DEFAULT_QUEUE_LIMIT 65536
#define WAKE_INTERVAL_MS 200        /* a record is in the file well within 1 s */
#define WAKE_BATCH 1024             /* this many waiting wake the writer early */
#define PRUNE_INTERVAL_MS 60000
#define PRUNE_CHUNK 10000           /* rows deleted per transaction, so batches interleave */
#define WRITER_BUSY_TIMEOUT_MS 250  /* then our own retry loop takes over */
#define RETRY_FIRST_MS 10
#define RETRY_MAX_MS 500
#define CLOSE_GIVE_UP_MS 10000      /* how long closing keeps retrying a failing write */
#define BATCH_FIRST_BYTES 16384     /* a new batch's room: ~150 typical records */
#define KEEP_BATCH_BYTES (1 << 20)  /* a batch grown past this is freed after a burst */
#define KEEP_FREE_BATCHES 64        /* emptied batches kept for reuse */

/* The strings of a record, in the order they are packed. */
enum { T_CLIENT, T_METHOD, T_HOST, T_PATH, T_RULE, T_ACTION, T_ERROR, NTEXT };

/* One record in a batch's buffer: this header, then the strings' bytes back
 * to back (no terminators), padded so that the next header is aligned. */
struct packed {
    int64_t start_ms;
    int64_t duration_us;
    int64_t retry_after_ms;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int16_t upstream_code;          /* -1: none; at most CODE_MAX (code_of) */
    int16_t final_code;
    uint16_t size;                  /* bytes of the whole record, padding included */
    uint16_t len[NTEXT];
    uint8_t scheme;                 /* enum audit_scheme; the header stays 64 bytes */
    char text[];
};

/* The header of every record: keep it to one 64-byte line. */
_Static_assert(sizeof(struct packed) == 64, "struct packed grew");

struct audit_batch {
    struct audit_batch *next;       /* in the queue or the free list */
    size_t n;                       /* records */
    size_t len, cap;                /* bytes of buf used, allocated */
    char *buf;                      /* packed records (malloc's alignment suffices) */
};

/* One aggregate row being summed: the key of its first record, and sums. */
struct agg {
    const struct packed *first;     /* NULL: a free slot */
    const char *host, *rule, *route;
    size_t route_len;
    uint32_t order;                 /* index in agg_used and agg_hists */
    uint64_t hash;
    int64_t minute;
    int64_t count, duration, in, out;
};

struct audit {
    /* Fixed at open. */
    enum audit_mode mode;
    int64_t retain_ms;              /* 0: keep every raw row */
    size_t limit;
    size_t wake_at;
    sqlite3 *db;                    /* used by the writer thread alone once it runs */
    sqlite3_stmt *begin, *commit, *rollback;
    sqlite3_stmt *insert_raw, *add_minute, *add_dropped;
    sqlite3_stmt *id_bounds, *id_probe, *prune;
    pthread_t thread;

    /* The writer thread's own. */
    const struct audit_batch *writing; /* what the audit_pending table reads */
    struct agg *aggs;               /* open addressing, kept from batch to batch */
    size_t agg_cap;
    uint32_t *agg_used;             /* slots in use, in order of first use */
    size_t agg_nused;
    struct hist **agg_hists;        /* the histogram of each slot in use, by order */
    size_t agg_nhists;              /* allocated (kept from batch to batch) */
    uint8_t *hist_buf;              /* one encoded histogram (HIST_MAX_ENCODED) */
    const struct route_patterns *patterns;
    pthread_mutex_t cap_mu;         /* the cap is read by audit_routes_json */
    struct route_cap *cap;
    char *routes;                   /* the routes of the batches being written, back to back */
    size_t routes_len, routes_cap;
    uint32_t *route_at;             /* per record: offset in routes, then length */
    size_t route_at_cap;

    pthread_mutex_t mu;             /* guards everything below but `dropped` */
    pthread_cond_t wake;            /* the writer waits here (monotonic clock) */
    pthread_cond_t written;         /* audit_flush waits here for a finished batch */
    struct audit_batch *head;       /* submitted, not yet taken by the writer (FIFO) */
    struct audit_batch **tail;
    size_t len;                     /* records in those batches */
    struct audit_batch *spare;      /* emptied batches for submitters to take */
    unsigned nspare;
    uint64_t unstored_drops;        /* lost records not yet in the dropped table */
    uint64_t batches_taken;         /* batches the writer has taken from the queue */
    uint64_t batches_done;          /* of those, written or given up */
    uint64_t flush_want;            /* audit_flush waits for this batch to be done */
    int stopping;
    char error[256];                /* the writer's last failure; "" after a success */

    _Atomic uint64_t dropped;       /* lost so far: queue full, or given up at close */
    _Atomic uint64_t errors[AUDIT_ERR_COUNT]; /* failed write attempts per kind */
    int fail_code;                  /* the writer's: SQLite code of the last failure */
};

/* Raw rows come from the audit_pending virtual table (below), which reads
 * the batches being written. */
static const char sql_insert_raw[] =
    "INSERT INTO exchanges (start_ms, client, method, host, path, upstream_code, final_code,"
    " rule, action, error, duration_us, bytes_in, bytes_out, route, retry_after_ms, scheme)"
    " SELECT start_ms, client, method, host, path, upstream_code, final_code,"
    " rule, action, error, duration_us, bytes_in, bytes_out, route, retry_after_ms, scheme"
    " FROM audit_pending";

static const char sql_add_minute[] =
    "INSERT INTO minute_stats (minute, host, upstream_code, final_code, rule, count,"
    " duration_us, bytes_in, bytes_out, route, hist, scheme)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    " ON CONFLICT (minute, host, scheme, route, upstream_code, final_code, rule) DO UPDATE SET"
    " count = count + excluded.count, duration_us = duration_us + excluded.duration_us,"
    " bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out,"
    " hist = sp_hist_merge(hist, excluded.hist)";

static const char sql_add_dropped[] =
    "INSERT INTO dropped (minute, count) VALUES (?1, ?2)"
    " ON CONFLICT (minute) DO UPDATE SET count = count + excluded.count";

/* Pruning (see prune()): the id range, the first row at or after an id, and
 * a range delete. */
static const char sql_id_bounds[] = "SELECT min(id), max(id) FROM exchanges";
static const char sql_id_probe[] =
    "SELECT id, start_ms FROM exchanges WHERE id >= ?1 ORDER BY id LIMIT 1";
static const char sql_prune[] = "DELETE FROM exchanges WHERE id >= ?1 AND id < ?2";

const char *audit_scheme_name(enum audit_scheme s)
{
    static const char *const names[AUDIT_SCHEME_COUNT] = {"http", "https", "tunnel"};
    return (unsigned)s < AUDIT_SCHEME_COUNT ? names[s] : names[AUDIT_SCHEME_HTTP];
}

static int64_t minute_of(int64_t unix_ms)
{
    int64_t m = unix_ms / 60000;
    if (unix_ms < 0 && unix_ms % 60000 != 0)
        m--;
    return m * 60;
}

/* ---------- batches ---------- */

struct audit_batch *audit_batch_new(void)
{
    struct audit_batch *b = xcalloc(1, sizeof *b);
    b->cap = BATCH_FIRST_BYTES;
    b->buf = xmalloc(b->cap);
    return b;
}

void audit_batch_free(struct audit_batch *b)
{
    if (!b)
        return;
    free(b->buf);
    free(b);
}

size_t audit_batch_count(const struct audit_batch *b)
{
    return b->n;
}

static void batch_clear(struct audit_batch *b)
{
    b->n = 0;
    b->len = 0;
}

/* A status code as packed: -1 for none, and a value no status line can
 * carry (more than three digits) kept as CODE_MAX, an invalid status still. */
#define CODE_MAX 9999
static int code_of(int code)
{
    return code < 0 ? -1 : code > CODE_MAX ? CODE_MAX : code;
}

/* Append a record whose strings are T[i] cut to LEN[i] bytes. */
static size_t pack(struct audit_batch *b, const struct audit_entry *e,
                   const struct audit_text *const t[NTEXT], const size_t len[NTEXT])
{
    size_t text = 0;
    for (int i = 0; i < NTEXT; i++)
        text += len[i];
    size_t size = (sizeof(struct packed) + text + 7) & ~(size_t)7;
    assert(size <= UINT16_MAX);
    if (b->len + size > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + size)
            cap *= 2;
        b->buf = xrealloc(b->buf, cap);
        b->cap = cap;
    }
    struct packed *p = (struct packed *)(b->buf + b->len);
    p->start_ms = e->start_ms;
    p->duration_us = e->duration_us;
    p->retry_after_ms = e->retry_after_ms > 0 ? e->retry_after_ms : 0;
    p->bytes_in = e->bytes_in;
    p->bytes_out = e->bytes_out;
    p->upstream_code = (int16_t)code_of(e->upstream_code);
    p->final_code = (int16_t)code_of(e->final_code);
    p->size = (uint16_t)size;
    p->scheme = (unsigned)e->scheme < AUDIT_SCHEME_COUNT ? (uint8_t)e->scheme : AUDIT_SCHEME_HTTP;
    char *o = p->text;
    for (int i = 0; i < NTEXT; i++) {
        p->len[i] = (uint16_t)len[i];
        if (len[i])
            memcpy(o, t[i]->s, len[i]);
        o += len[i];
    }
    b->len += size;
    return ++b->n;
}

static size_t cut_to(size_t len, size_t max)
{
    return len < max ? len : max;
}

size_t audit_batch_add(struct audit_batch *b, const struct audit_entry *e)
{
    static const size_t max[NTEXT] = {AUDIT_MAX_CLIENT, AUDIT_MAX_METHOD, AUDIT_MAX_HOST,
                                      AUDIT_MAX_PATH,   AUDIT_MAX_RULE,   AUDIT_MAX_ACTION,
                                      AUDIT_MAX_ERROR};
    const struct audit_text *const t[NTEXT] = {&e->client, &e->method, &e->host, &e->path,
                                               &e->rule,   &e->action, &e->error};
    size_t len[NTEXT];
    for (int i = 0; i < NTEXT; i++)
        len[i] = cut_to(t[i]->len, max[i]);
    return pack(b, e, t, len);
}

/* The record at byte OFF of B, and where each of its strings starts. */
static const struct packed *record_at(const struct audit_batch *b, size_t off)
{
    return (const struct packed *)(b->buf + off);
}

static void locate(const struct packed *p, const char *text[NTEXT])
{
    const char *o = p->text;
    for (int i = 0; i < NTEXT; i++) {
        text[i] = o;
        o += p->len[i];
    }
}

/* Keep the first N records of B. */
static void batch_keep(struct audit_batch *b, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += record_at(b, off)->size;
    b->n = n;
    b->len = off;
}

/* Take an emptied batch for reuse, or NULL; mu held. */
static struct audit_batch *take_spare_locked(struct audit *a)
{
    struct audit_batch *b = a->spare;
    if (b) {
        a->spare = b->next;
        a->nspare--;
        b->next = NULL;
    }
    return b;
}

/* Give LIST's batches back for reuse, emptied; those beyond what is kept
 * (or grown large by a burst) are freed. mu held. */
static void give_back_locked(struct audit *a, struct audit_batch *list)
{
    while (list) {
        struct audit_batch *b = list;
        list = b->next;
        if (a->nspare >= KEEP_FREE_BATCHES || b->cap > KEEP_BATCH_BYTES) {
            audit_batch_free(b);
            continue;
        }
        batch_clear(b);
        b->next = a->spare;
        a->spare = b;
        a->nspare++;
    }
}

/* ---------- the audit_pending virtual table: the batches being written ---------- */

/* Does the mode keep a raw row for P? Errors are what someone debugging a
 * failure wants: any 4xx/5xx on either side, no answer at all, or an error. */
static int wants_raw(enum audit_mode mode, const struct packed *p)
{
    switch (mode) {
    case AUDIT_LOG_ALL:
        return 1;
    case AUDIT_LOG_ERRORS:
        return p->final_code < 0 || p->final_code >= 400 || p->upstream_code >= 400 ||
               p->len[T_ERROR] != 0;
    case AUDIT_LOG_NONE:
        break;
    }
    return 0;
}

struct pending_vtab {
    sqlite3_vtab base;
    struct audit *a;
};

struct pending_cursor {
    sqlite3_vtab_cursor base;
    const struct audit *a;
    const struct audit_batch *b;    /* NULL: past the end */
    size_t off;                     /* of the current record in b */
    size_t idx;                     /* of the current record among all being written */
    sqlite3_int64 row;
    const char *text[NTEXT];        /* the current record's strings */
};

enum {
    COL_START_MS, COL_CLIENT, COL_METHOD, COL_HOST, COL_PATH, COL_UPSTREAM_CODE, COL_FINAL_CODE,
    COL_RULE, COL_ACTION, COL_ERROR, COL_DURATION_US, COL_BYTES_IN, COL_BYTES_OUT, COL_ROUTE,
    COL_RETRY_AFTER_MS, COL_SCHEME
};

static int pending_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                           sqlite3_vtab **out, char **err)
{
    UNUSED(argc);
    UNUSED(argv);
    UNUSED(err);
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(start_ms, client, method, host, path,"
                                      " upstream_code, final_code, rule, action, error,"
                                      " duration_us, bytes_in, bytes_out, route,"
                                      " retry_after_ms, scheme)");
    if (rc != SQLITE_OK)
        return rc;
    struct pending_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->a = aux;
    *out = &v->base;
    return SQLITE_OK;
}

static int pending_disconnect(sqlite3_vtab *v)
{
    sqlite3_free(v);
    return SQLITE_OK;
}

static int pending_best_index(sqlite3_vtab *v, sqlite3_index_info *info)
{
    UNUSED(v);
    info->estimatedCost = 1000;
    info->estimatedRows = 1000;
    return SQLITE_OK;
}

static int pending_open(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
    struct pending_cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur)
        return SQLITE_NOMEM;
    memset(cur, 0, sizeof *cur);
    cur->a = ((struct pending_vtab *)v)->a;
    *out = &cur->base;
    return SQLITE_OK;
}

static int pending_close(sqlite3_vtab_cursor *c)
{
    sqlite3_free(c);
    return SQLITE_OK;
}

/* Settle on the first record at or after the cursor's position that the
 * mode keeps. */
static void settle(struct pending_cursor *cur)
{
    for (; cur->b; cur->b = cur->b->next, cur->off = 0) {
        for (; cur->off < cur->b->len;
             cur->off += record_at(cur->b, cur->off)->size, cur->idx++) {
            const struct packed *p = record_at(cur->b, cur->off);
            if (wants_raw(cur->a->mode, p)) {
                locate(p, cur->text);
                return;
            }
        }
    }
}

static int pending_filter(sqlite3_vtab_cursor *c, int idx, const char *idx_str, int argc,
                          sqlite3_value **argv)
{
    UNUSED(idx);
    UNUSED(idx_str);
    UNUSED(argc);
    UNUSED(argv);
    struct pending_cursor *cur = (struct pending_cursor *)c;
    cur->b = cur->a->writing;
    cur->off = 0;
    cur->idx = 0;
    cur->row = 0;
    settle(cur);
    return SQLITE_OK;
}

static int pending_next(sqlite3_vtab_cursor *c)
{
    struct pending_cursor *cur = (struct pending_cursor *)c;
    cur->off += record_at(cur->b, cur->off)->size;
    cur->idx++;
    cur->row++;
    settle(cur);
    return SQLITE_OK;
}

static int pending_eof(sqlite3_vtab_cursor *c)
{
    return ((struct pending_cursor *)c)->b == NULL;
}

/* The strings are bound in place (SQLITE_STATIC): the batches outlive the
 * statement. Absent codes and empty rule, action and error are NULL. */
static int pending_column(sqlite3_vtab_cursor *c, sqlite3_context *ctx, int col)
{
    const struct pending_cursor *cur = (const struct pending_cursor *)c;
    const struct packed *p = record_at(cur->b, cur->off);
    int t;
    switch (col) {
    case COL_START_MS: sqlite3_result_int64(ctx, p->start_ms); return SQLITE_OK;
    case COL_CLIENT: t = T_CLIENT; break;
    case COL_METHOD: t = T_METHOD; break;
    case COL_HOST: t = T_HOST; break;
    case COL_PATH: t = T_PATH; break;
    case COL_UPSTREAM_CODE:
        if (p->upstream_code >= 0)
            sqlite3_result_int(ctx, p->upstream_code);
        return SQLITE_OK;
    case COL_FINAL_CODE:
        if (p->final_code >= 0)
            sqlite3_result_int(ctx, p->final_code);
        return SQLITE_OK;
    case COL_RULE: t = T_RULE; break;
    case COL_ACTION: t = T_ACTION; break;
    case COL_ERROR: t = T_ERROR; break;
    case COL_DURATION_US: sqlite3_result_int64(ctx, p->duration_us); return SQLITE_OK;
    case COL_BYTES_IN: sqlite3_result_int64(ctx, (sqlite3_int64)p->bytes_in); return SQLITE_OK;
    case COL_BYTES_OUT: sqlite3_result_int64(ctx, (sqlite3_int64)p->bytes_out); return SQLITE_OK;
    case COL_ROUTE: {
        const uint32_t *at = &cur->a->route_at[cur->idx * 2];
        sqlite3_result_text(ctx, cur->a->routes + at[0], (int)at[1], SQLITE_STATIC);
        return SQLITE_OK;
    }
    case COL_RETRY_AFTER_MS:
        if (p->retry_after_ms > 0)
            sqlite3_result_int64(ctx, p->retry_after_ms);
        return SQLITE_OK;
    case COL_SCHEME:
        sqlite3_result_text(ctx, audit_scheme_name(p->scheme), -1, SQLITE_STATIC);
        return SQLITE_OK;
    default: return SQLITE_OK;
    }
    if (t >= T_RULE && p->len[t] == 0)
        return SQLITE_OK; /* NULL */
    sqlite3_result_text(ctx, cur->text[t], p->len[t], SQLITE_STATIC);
    return SQLITE_OK;
}

static int pending_rowid(sqlite3_vtab_cursor *c, sqlite3_int64 *row)
{
    *row = ((const struct pending_cursor *)c)->row;
    return SQLITE_OK;
}

/* Eponymous only (no xCreate): the table exists in the writer's connection
 * as soon as the module is registered, and nowhere else. */
static const sqlite3_module pending_module = {
    .iVersion = 0,
    .xConnect = pending_connect,
    .xBestIndex = pending_best_index,
    .xDisconnect = pending_disconnect,
    .xDestroy = pending_disconnect,
    .xOpen = pending_open,
    .xClose = pending_close,
    .xFilter = pending_filter,
    .xNext = pending_next,
    .xEof = pending_eof,
    .xColumn = pending_column,
    .xRowid = pending_rowid,
};

/* ---------- the writer ---------- */

static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix(h, w);
    }
    uint64_t w = 0;
    if (n)
        memcpy(&w, s, n);
    return mix(h, w ^ ((uint64_t)n << 56));
}

static void agg_grow(struct audit *a)
{
    size_t cap = a->agg_cap ? a->agg_cap * 2 : 64;
    struct agg *aggs = xcalloc(cap, sizeof *aggs);
    uint32_t *used = xmalloc(cap / 2 * sizeof *used);
    for (size_t k = 0; k < a->agg_nused; k++) {
        const struct agg *g = &a->aggs[a->agg_used[k]];
        size_t j = (size_t)g->hash & (cap - 1);
        while (aggs[j].first)
            j = (j + 1) & (cap - 1);
        aggs[j] = *g;
        used[k] = (uint32_t)j;
    }
    free(a->aggs);
    free(a->agg_used);
    a->aggs = aggs;
    a->agg_used = used;
    a->agg_cap = cap;
}

/* Template the route of every record being written (raw rows and aggregates
 * read them by record index), into a->routes. */
static void compute_routes(struct audit *a, const struct audit_batch *list)
{
    size_t n = 0;
    for (const struct audit_batch *b = list; b; b = b->next)
        n += b->n;
    if (n * 2 > a->route_at_cap) {
        a->route_at_cap = n * 2;
        a->route_at = xrealloc(a->route_at, a->route_at_cap * sizeof *a->route_at);
    }
    a->routes_len = 0;
    size_t i = 0;
    for (const struct audit_batch *b = list; b; b = b->next) {
        for (size_t off = 0; off < b->len; i++) {
            const struct packed *p = record_at(b, off);
            off += p->size;
            if (a->routes_len + ROUTE_MAX + 1 > a->routes_cap) {
                a->routes_cap = (a->routes_cap ? a->routes_cap * 2 : 65536) + ROUTE_MAX + 1;
                a->routes = xrealloc(a->routes, a->routes_cap);
            }
            const char *path = p->text + p->len[T_CLIENT] + p->len[T_METHOD] + p->len[T_HOST];
            size_t len = route_template(a->patterns, path, p->len[T_PATH],
                                        a->routes + a->routes_len, ROUTE_MAX + 1);
            a->route_at[2 * i] = (uint32_t)a->routes_len;
            a->route_at[2 * i + 1] = (uint32_t)len;
            a->routes_len += len;
        }
    }
}

/* The aggregate slot of P (whose route is ROUTE[0..rlen)), added when new. */
static struct agg *agg_slot(struct audit *a, const struct packed *p, const char *route,
                            size_t rlen)
{
    const char *host = p->text + p->len[T_CLIENT] + p->len[T_METHOD];
    const char *rule = host + p->len[T_HOST] + p->len[T_PATH];
    size_t hlen = p->len[T_HOST], rlen_rule = p->len[T_RULE];
    int64_t minute = minute_of(p->start_ms);
    uint64_t h = mix(mix(mix(0, (uint64_t)minute),
                         (uint64_t)(uint32_t)p->upstream_code << 32 | (uint32_t)p->final_code),
                     hlen << 16 | rlen_rule | (uint64_t)p->scheme << 32);
    h = hash_bytes(hash_bytes(hash_bytes(h, host, hlen), rule, rlen_rule), route, rlen);
    if ((a->agg_nused + 1) * 2 > a->agg_cap)
        agg_grow(a);
    size_t mask = a->agg_cap - 1, j = (size_t)h & mask;
    struct agg *g;
    for (;; j = (j + 1) & mask) {
        g = &a->aggs[j];
        if (!g->first)
            break;
        const struct packed *q = g->first;
        if (g->hash == h && g->minute == minute && q->scheme == p->scheme &&
            q->upstream_code == p->upstream_code &&
            q->final_code == p->final_code && q->len[T_HOST] == hlen &&
            q->len[T_RULE] == rlen_rule && g->route_len == rlen &&
            memcmp(g->host, host, hlen) == 0 && memcmp(g->rule, rule, rlen_rule) == 0 &&
            memcmp(g->route, route, rlen) == 0)
            return g;
    }
    uint32_t order = (uint32_t)a->agg_nused;
    *g = (struct agg){.first = p, .host = host, .rule = rule, .route = route, .route_len = rlen,
                      .order = order, .hash = h, .minute = minute};
    a->agg_used[a->agg_nused++] = (uint32_t)j;
    if (order >= a->agg_nhists) {
        a->agg_hists = xrealloc(a->agg_hists, (order + 1) * sizeof *a->agg_hists);
        a->agg_hists[order] = xmalloc(sizeof(struct hist));
        a->agg_nhists = order + 1;
    }
    hist_clear(a->agg_hists[order]);
    return g;
}

/* Upsert the summed rows, then empty the table for the next transaction
 * (or the retry of this one). */
static int flush_minutes(struct audit *a)
{
    sqlite3_stmt *st = a->add_minute;
    int rc = 0;
    for (size_t k = 0; k < a->agg_nused && rc == 0; k++) {
        const struct agg *g = &a->aggs[a->agg_used[k]];
        sqlite3_bind_int64(st, 1, g->minute);
        sqlite3_bind_text(st, 2, g->host, g->first->len[T_HOST], SQLITE_STATIC);
        sqlite3_bind_int(st, 3, g->first->upstream_code);
        sqlite3_bind_int(st, 4, g->first->final_code);
        sqlite3_bind_text(st, 5, g->rule, g->first->len[T_RULE], SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, g->count);
        sqlite3_bind_int64(st, 7, g->duration);
        sqlite3_bind_int64(st, 8, g->in);
        sqlite3_bind_int64(st, 9, g->out);
        sqlite3_bind_text(st, 10, g->route, (int)g->route_len, SQLITE_STATIC);
        size_t n = hist_encode(a->agg_hists[g->order], a->hist_buf, HIST_MAX_ENCODED);
        sqlite3_bind_blob(st, 11, a->hist_buf, (int)n, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, audit_scheme_name(g->first->scheme), -1, SQLITE_STATIC);
        rc = run(st);
    }
    for (size_t k = 0; k < a->agg_nused; k++)
        a->aggs[a->agg_used[k]].first = NULL;
    a->agg_nused = 0;
    return rc;
}

/* Sum the batches per aggregate key in a hash table kept from one
 * transaction to the next (a busy minute has a handful of distinct keys
 * however many exchanges it saw), then upsert one minute_stats row per key.
 * Routes beyond the per-host cap count as {other}. The cap's counts (for
 * /stats) grow once per record: not again when a failed transaction is
 * retried (*COUNTED is then set). */
static int write_minutes(struct audit *a, const struct audit_batch *list, int *counted)
{
    uint64_t once = *counted ? 0 : 1;
    size_t i = 0;
    pthread_mutex_lock(&a->cap_mu);
    for (const struct audit_batch *b = list; b; b = b->next) {
        for (size_t off = 0; off < b->len; i++) {
            const struct packed *p = record_at(b, off);
            off += p->size;
            const char *route = a->routes + a->route_at[2 * i];
            size_t rlen = a->route_at[2 * i + 1];
            const char *host = p->text + p->len[T_CLIENT] + p->len[T_METHOD];
            if (!route_cap_admit(a->cap, host, p->len[T_HOST], route, rlen, once)) {
                route = ROUTE_OTHER;
                rlen = strlen(ROUTE_OTHER);
            }
            struct agg *g = agg_slot(a, p, route, rlen);
            g->count++;
            g->duration += p->duration_us;
            g->in += (int64_t)p->bytes_in;
            g->out += (int64_t)p->bytes_out;
            hist_add(a->agg_hists[g->order], p->duration_us > 0 ? (uint64_t)p->duration_us : 0, 1);
        }
    }
    pthread_mutex_unlock(&a->cap_mu);
    *counted = 1;
    return flush_minutes(a);
}

/* One transaction for the whole list: all of it or (rolled back) none. */
static int try_write(struct audit *a, const struct audit_batch *list, uint64_t drops,
                     int *counted, char *err, size_t errlen)
{
    if (run(a->begin) != 0)
        goto fail;
    compute_routes(a, list);
    if (list && a->mode != AUDIT_LOG_NONE) {
        a->writing = list;
        int rc = run(a->insert_raw);
        a->writing = NULL;
        if (rc != 0)
            goto fail;
    }
    if (write_minutes(a, list, counted) != 0)
        goto fail;
    if (drops) {
        sqlite3_bind_int64(a->add_dropped, 1, minute_of(time_now_ms()));
        sqlite3_bind_int64(a->add_dropped, 2, (sqlite3_int64)drops);
        if (run(a->add_dropped) != 0)
            goto fail;
    }
    if (run(a->commit) != 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "%s", sqlite3_errmsg(a->db));
    a->fail_code = sqlite3_errcode(a->db);
    if (!sqlite3_get_autocommit(a->db))
        run(a->rollback);
    return -1;
}

static void set_error(struct audit *a, const char *msg)
{
    pthread_mutex_lock(&a->mu);
    snprintf(a->error, sizeof a->error, "%s", msg);
    pthread_mutex_unlock(&a->mu);
}

static enum audit_error_kind kind_of(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return AUDIT_ERR_BUSY;
    case SQLITE_FULL: return AUDIT_ERR_FULL;
    case SQLITE_IOERR: return AUDIT_ERR_IO;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM: return AUDIT_ERR_READONLY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return AUDIT_ERR_CORRUPT;
    default: return AUDIT_ERR_OTHER;
    }
}

const char *audit_error_kind_name(enum audit_error_kind k)
{
    static const char *const names[AUDIT_ERR_COUNT] = {"busy", "disk_full", "io", "readonly",
                                                       "corrupt", "other"};
    return (unsigned)k < AUDIT_ERR_COUNT ? names[k] : "other";
}

void audit_error_counts(const struct audit *a, uint64_t *counts)
{
    for (int k = 0; k < AUDIT_ERR_COUNT; k++)
        counts[k] = a ? atomic_load(&a->errors[k]) : 0;
}

static int is_stopping(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    int stop = a->stopping;
    pthread_mutex_unlock(&a->mu);
    return stop;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Write a batch, retrying until it commits. Only while closing does it give up
 * (after CLOSE_GIVE_UP_MS), counting the batch's records as lost. */
static void write_batch(struct audit *a, const struct audit_batch *list, size_t n,
                        uint64_t drops)
{
    unsigned wait_ms = RETRY_FIRST_MS;
    uint64_t stop_seen_us = 0;
    int counted = 0;
    for (;;) {
        char err[256];
        if (try_write(a, list, drops, &counted, err, sizeof err) == 0) {
            set_error(a, "");
            break;
        }
        set_error(a, err);
        atomic_fetch_add(&a->errors[kind_of(a->fail_code)], 1);
        if (is_stopping(a)) {
            uint64_t now = time_mono_us();
            if (!stop_seen_us)
                stop_seen_us = now;
            else if (now - stop_seen_us >= (uint64_t)CLOSE_GIVE_UP_MS * 1000) {
                atomic_fetch_add(&a->dropped, (uint64_t)n);
                break;
            }
        }
        sleep_ms(wait_ms);
        wait_ms = wait_ms * 2 < RETRY_MAX_MS ? wait_ms * 2 : RETRY_MAX_MS;
    }
}

/* Delete raw rows older than the retention. Rows are appended as exchanges
 * finish, so id order is start order to within the longest exchange (an
 * exchange still running when its neighbours finished is pruned at the next
 * pass). Bisect the ids for the first row to keep, then delete below it in
 * chunks, one transaction each, so that batches interleave. This needs no
 * index on start_ms (schema 3). A busy database just means trying again at
 * the next interval: pruning is never urgent. */
static void prune(struct audit *a)
{
    int64_t cutoff = time_now_ms() - a->retain_ms;
    sqlite3_stmt *st = a->id_bounds;
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) == SQLITE_NULL) {
        sqlite3_reset(st);
        return;
    }
    int64_t lo = sqlite3_column_int64(st, 0), hi = sqlite3_column_int64(st, 1) + 1;
    sqlite3_reset(st);
    int64_t first = lo;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2, id = hi, start = cutoff;
        sqlite3_bind_int64(a->id_probe, 1, mid);
        if (sqlite3_step(a->id_probe) == SQLITE_ROW) {
            id = sqlite3_column_int64(a->id_probe, 0);
            start = sqlite3_column_int64(a->id_probe, 1);
        }
        sqlite3_reset(a->id_probe);
        if (start < cutoff)
            lo = id + 1;
        else
            hi = mid;
    }
    for (int64_t from = first; from < lo; from += PRUNE_CHUNK) {
        int64_t to = from + PRUNE_CHUNK < lo ? from + PRUNE_CHUNK : lo;
        sqlite3_bind_int64(a->prune, 1, from);
        sqlite3_bind_int64(a->prune, 2, to);
        if (run(a->prune) != 0)
            return;
    }
}

static struct timespec deadline_after_ms(unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *writer_main(void *arg)
{
    struct audit *a = arg;
    uint64_t next_prune_us = 0;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        if (!a->stopping && a->len < a->wake_at && a->flush_want <= a->batches_taken) {
            struct timespec until = deadline_after_ms(WAKE_INTERVAL_MS);
            pthread_cond_timedwait(&a->wake, &a->mu, &until);
        }
        struct audit_batch *list = a->head;
        size_t n = a->len;
        uint64_t drops = a->unstored_drops;
        int stop = a->stopping;
        a->head = NULL;
        a->tail = &a->head;
        a->len = 0;
        a->unstored_drops = 0;
        a->batches_taken++;
        pthread_mutex_unlock(&a->mu);

        if (n || drops)
            write_batch(a, list, n, drops);
        if (a->retain_ms > 0 && time_mono_us() >= next_prune_us) {
            prune(a);
            next_prune_us = time_mono_us() + (uint64_t)PRUNE_INTERVAL_MS * 1000;
        }

        pthread_mutex_lock(&a->mu);
        give_back_locked(a, list);
        a->batches_done++;
        pthread_cond_broadcast(&a->written);
        if (stop && a->len == 0 && a->unstored_drops == 0)
            break;
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void free_writer_state(struct audit *a)
{
    for (size_t k = 0; k < a->agg_nhists; k++)
        free(a->agg_hists[k]);
    free(a->agg_hists);
    free(a->hist_buf);
    route_cap_free(a->cap);
    pthread_mutex_destroy(&a->cap_mu);
    free(a->routes);
    free(a->route_at);
    free(a->aggs);
    free(a->agg_used);
    free(a);
}

static void finalize_all(struct audit *a)
{
    sqlite3_stmt *all[] = {a->begin,      a->commit,      a->rollback, a->insert_raw,
                           a->add_minute, a->add_dropped, a->id_bounds, a->id_probe,
                           a->prune};
    for (size_t i = 0; i < ARRAY_LEN(all); i++)
        sqlite3_finalize(all[i]);
}

struct audit *audit_open(const struct audit_config *cfg, char *err, size_t errlen)
{
    if (!cfg->db_path || !cfg->db_path[0]) {
        snprintf(err, errlen, "no database path");
        return NULL;
    }
    sqlite3 *db = db_open(cfg->db_path, DB_READ_WRITE, err, errlen);
    if (!db)
        return NULL;
    struct audit *a = xcalloc(1, sizeof *a);
    a->db = db;
    a->mode = cfg->mode;
    a->retain_ms = cfg->retain_ms > (uint64_t)INT64_MAX / 2 ? 0 : (int64_t)cfg->retain_ms;
    a->limit = cfg->queue_limit ? cfg->queue_limit : DEFAULT_QUEUE_LIMIT;
    a->wake_at = a->limit >= 2 * WAKE_BATCH ? WAKE_BATCH : (a->limit + 1) / 2;
    a->tail = &a->head;
    a->patterns = cfg->routes;
    a->cap = route_cap_new(cfg->max_routes, 0);
    pthread_mutex_init(&a->cap_mu, NULL);
    a->hist_buf = xmalloc(HIST_MAX_ENCODED);
    atomic_init(&a->dropped, 0);

    if (sqlite3_create_module_v2(db, "audit_pending", &pending_module, a, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", cfg->db_path, sqlite3_errmsg(db));
        goto fail;
    }
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        {&a->begin, "BEGIN IMMEDIATE"},     {&a->commit, "COMMIT"},
        {&a->rollback, "ROLLBACK"},         {&a->insert_raw, sql_insert_raw},
        {&a->add_minute, sql_add_minute},   {&a->add_dropped, sql_add_dropped},
        {&a->id_bounds, sql_id_bounds},     {&a->id_probe, sql_id_probe},
        {&a->prune, sql_prune},
    };
    for (size_t i = 0; i < ARRAY_LEN(stmts); i++) {
        if (sqlite3_prepare_v3(db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, stmts[i].st,
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", cfg->db_path, sqlite3_errmsg(db));
            goto fail;
        }
    }
    sqlite3_busy_timeout(db, WRITER_BUSY_TIMEOUT_MS);

    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&a->written, NULL);
    pthread_mutex_init(&a->mu, NULL);
    int rc = pthread_create(&a->thread, NULL, writer_main, a);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the audit writer: %s", strerror(rc));
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->wake);
        pthread_cond_destroy(&a->written);
        goto fail;
    }
    return a;
fail:
    finalize_all(a);
    db_close(db);
    free_writer_state(a);
    return NULL;
}

struct audit_batch *audit_submit_batch(struct audit *a, struct audit_batch *b, size_t *lost)
{
    size_t n = b->n;
    struct audit_batch *fresh;
    pthread_mutex_lock(&a->mu);
    assert(!a->stopping);
    size_t take = a->limit - a->len < n ? a->limit - a->len : n;
    if (take < n) {
        batch_keep(b, take);
        a->unstored_drops += n - take;
        atomic_fetch_add(&a->dropped, (uint64_t)(n - take));
    }
    size_t before = a->len;
    if (take) {
        b->next = NULL;
        *a->tail = b;
        a->tail = &b->next;
        a->len += take;
        fresh = take_spare_locked(a);
    } else {
        fresh = b; /* nothing was taken: it stays the caller's, emptied */
    }
    /* Wake the writer once when a batch's worth is waiting, not per call. */
    if (before < a->wake_at && a->len >= a->wake_at)
        pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    *lost = n - take;
    return fresh ? fresh : audit_batch_new();
}

size_t audit_submit(struct audit *a, const struct audit_record *recs, size_t n)
{
    pthread_mutex_lock(&a->mu);
    struct audit_batch *b = take_spare_locked(a);
    pthread_mutex_unlock(&a->mu);
    if (!b)
        b = audit_batch_new();
    for (size_t i = 0; i < n; i++) {
        const struct audit_record *r = &recs[i];
        const struct audit_entry e = {
            .start_ms = r->start_ms, .duration_us = r->duration_us,
            .upstream_code = r->upstream_code, .final_code = r->final_code,
            .bytes_in = r->bytes_in, .bytes_out = r->bytes_out,
            .retry_after_ms = r->retry_after_ms, .scheme = r->scheme,
        };
        /* A record is outside data to the writer: never read past an array. */
        const struct audit_text t[NTEXT] = {
            {r->client, strnlen(r->client, sizeof r->client)},
            {r->method, strnlen(r->method, sizeof r->method)},
            {r->host, strnlen(r->host, sizeof r->host)},
            {r->path, strnlen(r->path, sizeof r->path)},
            {r->rule, strnlen(r->rule, sizeof r->rule)},
            {r->action, strnlen(r->action, sizeof r->action)},
            {r->error, strnlen(r->error, sizeof r->error)},
        };
        const struct audit_text *const tp[NTEXT] = {&t[0], &t[1], &t[2], &t[3],
                                                    &t[4], &t[5], &t[6]};
        size_t len[NTEXT];
        for (int k = 0; k < NTEXT; k++)
            len[k] = t[k].len;
        pack(b, &e, tp, len);
    }
    size_t lost;
    b = audit_submit_batch(a, b, &lost);
    pthread_mutex_lock(&a->mu);
    give_back_locked(a, b);
    pthread_mutex_unlock(&a->mu);
    return lost;
}

uint64_t audit_dropped(const struct audit *a)
{
    return atomic_load(&a->dropped);
}

void audit_flush(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    /* The next batch the writer takes holds everything submitted until now. */
    uint64_t want = a->batches_taken + 1;
    if (a->flush_want < want)
        a->flush_want = want;
    pthread_cond_signal(&a->wake);
    while (a->batches_done < want)
        pthread_cond_wait(&a->written, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

int audit_last_error(struct audit *a, char *buf, size_t len)
{
    pthread_mutex_lock(&a->mu);
    int failing = a->error[0] != '\0';
    if (len)
        snprintf(buf, len, "%s", a->error);
    pthread_mutex_unlock(&a->mu);
    return failing;
}

char *audit_routes_json(struct audit *a, size_t top)
{
    struct route_count *rc = xcalloc(top + 1, sizeof *rc);
    struct sbuf o = {0};
    pthread_mutex_lock(&a->cap_mu);
    size_t n = route_cap_top(a->cap, rc, top);
    /* Grouped by host, each host where its busiest route ranks. */
    sbuf_putc(&o, '{');
    for (size_t i = 0; i < n; i++) {
        size_t first = 0;
        while (strcmp(rc[first].host, rc[i].host) != 0)
            first++;
        if (first != i)
            continue;
        sbuf_printf(&o, "%s\"", o.len > 1 ? ", " : "");
        sbuf_json_escape(&o, rc[i].host, strlen(rc[i].host));
        sbuf_puts(&o, "\": {");
        for (size_t j = i; j < n; j++) {
            if (strcmp(rc[j].host, rc[i].host) != 0)
                continue;
            sbuf_printf(&o, "%s\"", j > i ? ", " : "");
            sbuf_json_escape(&o, rc[j].route, strlen(rc[j].route));
            sbuf_printf(&o, "\": %llu", (unsigned long long)rc[j].count);
        }
        sbuf_putc(&o, '}');
    }
    pthread_mutex_unlock(&a->cap_mu);
    sbuf_putc(&o, '}');
    free(rc);
    return sbuf_steal(&o);
}

static void free_list(struct audit_batch *list)
{
    while (list) {
        struct audit_batch *b = list;
        list = b->next;
        audit_batch_free(b);
    }
}

void audit_close(struct audit *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    finalize_all(a);
    db_close(a->db);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->written);
    free_list(a->head);
    free_list(a->spare);
    free_writer_state(a);
}
