/*
 * audit — the writer thread behind the exchange log.
 *
 * Event loops append copies of their records to one bounded queue under a
 * mutex (audit_submit: one short hold per call, no SQLite, no I/O). The writer
 * thread wakes every WAKE_INTERVAL_MS, or early when a batch is waiting, swaps
 * the queue for an empty buffer and writes what it took in one transaction:
 * raw rows as the mode allows, per-minute aggregates always, and the count of
 * records the full queue turned away. A failed transaction (the database
 * locked by another process, a full disk) is rolled back whole and retried, so
 * a record is written exactly once or, if closing gives up, counted as lost.
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
#define KEEP_SPARE_RECORDS 8192     /* a swap buffer beyond this shrinks after a burst */

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

    pthread_mutex_t mu;             /* guards everything below but `dropped` */
    pthread_cond_t wake;            /* the writer waits here (monotonic clock) */
    pthread_cond_t written;         /* audit_flush waits here for a finished batch */
    struct audit_record *queue;     /* submitted, not yet taken by the writer */
    size_t len, cap;
    uint64_t unstored_drops;        /* lost records not yet in the dropped table */
    uint64_t batches_taken;         /* batches the writer has taken from the queue */
    uint64_t batches_done;          /* of those, written or given up */
    uint64_t flush_want;            /* audit_flush waits for this batch to be done */
    int stopping;
    char error[256];                /* the writer's last failure; "" after a success */

    _Atomic uint64_t dropped;       /* lost so far: queue full, or given up at close */
};

static const char sql_insert_raw[] =
    "INSERT INTO exchanges (start_ms, client, method, host, path, upstream_code, final_code,"
    " rule, action, error, duration_us, bytes_in, bytes_out)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

static const char sql_add_minute[] =
    "INSERT INTO minute_stats (minute, host, upstream_code, final_code, rule, count,"
    " duration_us, bytes_in, bytes_out) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    " ON CONFLICT (minute, host, upstream_code, final_code, rule) DO UPDATE SET"
    " count = count + excluded.count, duration_us = duration_us + excluded.duration_us,"
    " bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out";

static const char sql_add_dropped[] =
    "INSERT INTO dropped (minute, count) VALUES (?1, ?2)"
    " ON CONFLICT (minute) DO UPDATE SET count = count + excluded.count";

/* Pruning (see prune()): the id range, the first row at or after an id, and
 * a range delete. */
static const char sql_id_bounds[] = "SELECT min(id), max(id) FROM exchanges";
static const char sql_id_probe[] =
    "SELECT id, start_ms FROM exchanges WHERE id >= ?1 ORDER BY id LIMIT 1";
static const char sql_prune[] = "DELETE FROM exchanges WHERE id >= ?1 AND id < ?2";

static int64_t minute_of(int64_t unix_ms)
{
    int64_t m = unix_ms / 60000;
    if (unix_ms < 0 && unix_ms % 60000 != 0)
        m--;
    return m * 60;
}

/* Does the mode keep a raw row for R? Errors are what someone debugging a
 * failure wants: any 4xx/5xx on either side, no answer at all, or an error. */
static int wants_raw(enum audit_mode mode, const struct audit_record *r)
{
    switch (mode) {
    case AUDIT_LOG_ALL:
        return 1;
    case AUDIT_LOG_ERRORS:
        return r->final_code < 0 || r->final_code >= 400 || r->upstream_code >= 400 ||
               r->error[0] != '\0';
    case AUDIT_LOG_NONE:
        break;
    }
    return 0;
}

/* Bind a fixed-size field as text: the caller promised NUL termination, but a
 * record is outside data to this thread, so never read past the array. */
#define BIND_FIELD(st, i, field) \
    sqlite3_bind_text((st), (i), (field), (int)strnlen((field), sizeof(field)), SQLITE_STATIC)
#define BIND_FIELD_OR_NULL(st, i, field)                                                           \
    ((field)[0] ? BIND_FIELD(st, i, field) : sqlite3_bind_null((st), (i)))

static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static int write_raw(struct audit *a, const struct audit_record *r)
{
    sqlite3_stmt *st = a->insert_raw;
    sqlite3_bind_int64(st, 1, r->start_ms);
    BIND_FIELD(st, 2, r->client);
    BIND_FIELD(st, 3, r->method);
    BIND_FIELD(st, 4, r->host);
    BIND_FIELD(st, 5, r->path);
    if (r->upstream_code >= 0)
        sqlite3_bind_int(st, 6, r->upstream_code);
    else
        sqlite3_bind_null(st, 6);
    if (r->final_code >= 0)
        sqlite3_bind_int(st, 7, r->final_code);
    else
        sqlite3_bind_null(st, 7);
    BIND_FIELD_OR_NULL(st, 8, r->rule);
    BIND_FIELD_OR_NULL(st, 9, r->action);
    BIND_FIELD_OR_NULL(st, 10, r->error);
    sqlite3_bind_int64(st, 11, r->duration_us);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)r->bytes_in);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)r->bytes_out);
    return run(st);
}

/* The aggregate key of a record: absent codes are -1 (see 0001_init.sql). */
static int key_code(int code)
{
    return code >= 0 ? code : -1;
}

static int same_key(const struct audit_record *a, const struct audit_record *b)
{
    return minute_of(a->start_ms) == minute_of(b->start_ms) &&
           key_code(a->upstream_code) == key_code(b->upstream_code) &&
           key_code(a->final_code) == key_code(b->final_code) &&
           strncmp(a->host, b->host, sizeof a->host) == 0 &&
           strncmp(a->rule, b->rule, sizeof a->rule) == 0;
}

static uint64_t hash_key(const struct audit_record *r)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the key's parts */
    uint64_t nums[3] = {(uint64_t)minute_of(r->start_ms), (uint64_t)key_code(r->upstream_code),
                        (uint64_t)key_code(r->final_code)};
    for (size_t i = 0; i < sizeof nums; i++)
        h = (h ^ ((const unsigned char *)nums)[i]) * 1099511628211ull;
    for (size_t i = 0; i < sizeof r->host && r->host[i]; i++)
        h = (h ^ (unsigned char)r->host[i]) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (size_t i = 0; i < sizeof r->rule && r->rule[i]; i++)
        h = (h ^ (unsigned char)r->rule[i]) * 1099511628211ull;
    return h;
}

/* One aggregate row being summed: the first record with that key, and sums. */
struct agg {
    const struct audit_record *first;
    int64_t count, duration, in, out;
};

/* Sum the batch per aggregate key (a hash table sized for the batch; a busy
 * minute has a handful of distinct keys however many exchanges it saw), then
 * upsert one minute_stats row per key. */
static int write_minutes(struct audit *a, const struct audit_record *recs, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    struct agg *table = xcalloc(cap, sizeof *table);
    struct agg **used = xmalloc((n ? n : 1) * sizeof *used);
    size_t nused = 0;
    for (size_t i = 0; i < n; i++) {
        const struct audit_record *r = &recs[i];
        size_t j = (size_t)hash_key(r) & (cap - 1);
        while (table[j].first && !same_key(table[j].first, r))
            j = (j + 1) & (cap - 1);
        struct agg *g = &table[j];
        if (!g->first) {
            g->first = r;
            used[nused++] = g;
        }
        g->count++;
        g->duration += r->duration_us;
        g->in += (int64_t)r->bytes_in;
        g->out += (int64_t)r->bytes_out;
    }
    sqlite3_stmt *st = a->add_minute;
    int rc = 0;
    for (size_t k = 0; k < nused && rc == 0; k++) {
        const struct agg *g = used[k];
        const struct audit_record *r = g->first;
        sqlite3_bind_int64(st, 1, minute_of(r->start_ms));
        BIND_FIELD(st, 2, r->host);
        sqlite3_bind_int(st, 3, key_code(r->upstream_code));
        sqlite3_bind_int(st, 4, key_code(r->final_code));
        BIND_FIELD(st, 5, r->rule);
        sqlite3_bind_int64(st, 6, g->count);
        sqlite3_bind_int64(st, 7, g->duration);
        sqlite3_bind_int64(st, 8, g->in);
        sqlite3_bind_int64(st, 9, g->out);
        rc = run(st);
    }
    free(used);
    free(table);
    return rc;
}

/* One transaction for the whole batch: all of it or (rolled back) none. */
static int try_write(struct audit *a, const struct audit_record *recs, size_t n, uint64_t drops,
                     char *err, size_t errlen)
{
    if (run(a->begin) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (wants_raw(a->mode, &recs[i]) && write_raw(a, &recs[i]) != 0)
            goto fail;
    if (write_minutes(a, recs, n) != 0)
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
static void write_batch(struct audit *a, const struct audit_record *recs, size_t n,
                        uint64_t drops)
{
    unsigned wait_ms = RETRY_FIRST_MS;
    uint64_t stop_seen_us = 0;
    for (;;) {
        char err[256];
        if (try_write(a, recs, n, drops, err, sizeof err) == 0) {
            set_error(a, "");
            break;
        }
        set_error(a, err);
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
    struct audit_record *spare = NULL;
    size_t spare_cap = 0;
    uint64_t next_prune_us = 0;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        if (!a->stopping && a->len < a->wake_at && a->flush_want <= a->batches_taken) {
            struct timespec until = deadline_after_ms(WAKE_INTERVAL_MS);
            pthread_cond_timedwait(&a->wake, &a->mu, &until);
        }
        struct audit_record *recs = a->queue;
        size_t n = a->len, cap = a->cap;
        uint64_t drops = a->unstored_drops;
        int stop = a->stopping;
        a->queue = spare;
        a->cap = spare_cap;
        a->len = 0;
        a->unstored_drops = 0;
        a->batches_taken++;
        pthread_mutex_unlock(&a->mu);

        if (n || drops)
            write_batch(a, recs, n, drops);
        if (a->retain_ms > 0 && time_mono_us() >= next_prune_us) {
            prune(a);
            next_prune_us = time_mono_us() + (uint64_t)PRUNE_INTERVAL_MS * 1000;
        }
        if (cap > KEEP_SPARE_RECORDS && n < cap / 4) {
            free(recs);
            recs = NULL;
            cap = 0;
        }
        spare = recs;
        spare_cap = cap;

        pthread_mutex_lock(&a->mu);
        a->batches_done++;
        pthread_cond_broadcast(&a->written);
        if (stop && a->len == 0 && a->unstored_drops == 0)
            break;
    }
    pthread_mutex_unlock(&a->mu);
    free(spare);
    return NULL;
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
    atomic_init(&a->dropped, 0);

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
    free(a);
    return NULL;
}

size_t audit_submit(struct audit *a, const struct audit_record *recs, size_t n)
{
    pthread_mutex_lock(&a->mu);
    assert(!a->stopping);
    size_t take = a->limit - a->len < n ? a->limit - a->len : n;
    if (a->len + take > a->cap) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap < a->len + take)
            cap *= 2;
        a->cap = cap < a->limit ? cap : a->limit;
        a->queue = xrealloc(a->queue, a->cap * sizeof *a->queue);
    }
    if (take)
        memcpy(a->queue + a->len, recs, take * sizeof *recs);
    size_t before = a->len;
    a->len += take;
    size_t lost = n - take;
    if (lost) {
        a->unstored_drops += lost;
        atomic_fetch_add(&a->dropped, (uint64_t)lost);
    }
    /* Wake the writer once when a batch's worth is waiting, not per call. */
    if (before < a->wake_at && a->len >= a->wake_at)
        pthread_cond_signal(&a->wake);
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
    free(a->queue);
    free(a);
}
