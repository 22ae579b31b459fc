/* Unit tests for audit: the writer thread, its modes, aggregates, losses and locks. */
#include "audit.h"
#include "unit.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "util.h"

static char dir[64];
static int seq;

static char *new_db_path(void)
{
    return xasprintf("%s/audit%d.db", dir, ++seq);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct audit_record rec(int64_t start_ms, const char *host, int upstream, int final,
                               const char *rule, const char *error)
{
    struct audit_record r;
    memset(&r, 0, sizeof r);
    r.start_ms = start_ms;
    r.duration_us = 1500;
    r.upstream_code = upstream;
    r.final_code = final;
    r.bytes_in = 100;
    r.bytes_out = 2000;
    snprintf(r.client, sizeof r.client, "127.0.0.1");
    snprintf(r.method, sizeof r.method, "GET");
    snprintf(r.host, sizeof r.host, "%s", host);
    snprintf(r.path, sizeof r.path, "/orders");
    snprintf(r.rule, sizeof r.rule, "%s", rule);
    snprintf(r.action, sizeof r.action, "%s", rule[0] ? "set-status" : "");
    snprintf(r.error, sizeof r.error, "%s", error);
    return r;
}

/* One integer from PATH through a separate read-only connection, as another
 * process would see the file. -1 when it cannot be read. */
static long long query(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Poll until SQL yields WANT or TIMEOUT_MS pass; returns the milliseconds waited. */
static long long wait_for(const char *path, const char *sql, long long want, unsigned timeout_ms)
{
    uint64_t start = time_mono_us();
    for (;;) {
        long long waited = (long long)((time_mono_us() - start) / 1000);
        if (query(path, sql) == want || waited > timeout_ms)
            return waited;
        sleep_ms(10);
    }
}

static struct audit *open_audit(const char *path, enum audit_mode mode, uint64_t retain_ms,
                                size_t queue_limit)
{
    struct audit_config cfg = {path, mode, retain_ms, queue_limit, NULL, 0};
    char err[256] = "";
    struct audit *a = audit_open(&cfg, err, sizeof err);
    if (!a)
        fprintf(stderr, "  audit_open: %s\n", err);
    return a;
}

/* Another process that holds the database's write lock until released: this
 * binary again (exec'd, so it inherits no lock or thread state of ours). */
struct locker {
    pid_t pid;
    int release_fd;
};

static int hold_lock(const char *path, int ready_fd, int release_fd)
{
    sqlite3 *db = NULL;
    char c = 'E';
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK)
        c = 'L';
    if (write(ready_fd, &c, 1) != 1)
        return 1;
    while (read(release_fd, &c, 1) > 0)
        ;
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return 0;
}

static struct locker lock_db(const char *path)
{
    int ready[2], release[2];
    struct locker l = {-1, -1};
    if (pipe(ready) != 0 || pipe(release) != 0)
        return l;
    pid_t pid = fork();
    if (pid == 0) {
        char rfd[16], lfd[16];
        close(ready[0]);
        close(release[1]);
        snprintf(rfd, sizeof rfd, "%d", ready[1]);
        snprintf(lfd, sizeof lfd, "%d", release[0]);
        execl("/proc/self/exe", "test_audit", "--hold-lock", path, rfd, lfd, (char *)NULL);
        _exit(127);
    }
    close(ready[1]);
    close(release[0]);
    char c = 0;
    if (read(ready[0], &c, 1) != 1 || c != 'L')
        fprintf(stderr, "  locker could not lock %s\n", path);
    CHECK_INT(c, 'L');
    close(ready[0]);
    l.pid = pid;
    l.release_fd = release[1];
    return l;
}

static void unlock_db(struct locker *l)
{
    close(l->release_fd);
    int status = 0;
    waitpid(l->pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Create the schema, so that another process can lock an existing database. */
static void create_db(const char *path)
{
    char err[256];
    sqlite3 *db = db_open(path, DB_READ_WRITE, err, sizeof err);
    CHECK(db != NULL);
    db_close(db);
}

static void test_records_reach_file_within_1s_exactly_once(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    CHECK(a != NULL);
    int64_t now = time_now_ms();
    struct audit_record recs[10];
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 10; i++)
            recs[i] = rec(now, "api.example", 200, 200, "", "");
        CHECK_INT(audit_submit(a, recs, 10), 0);
    }
    long long waited = wait_for(path, "SELECT count(*) FROM exchanges", 100, 3000);
    if (waited >= 1000)
        fprintf(stderr, "  records took %lld ms\n", waited);
    CHECK(waited < 1000);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 100);
    sleep_ms(400); /* more writer rounds must not write them again */
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 100);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 100);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 100);
    free(path);
}

/* The mix and whether the "errors" mode keeps each one. */
static const struct {
    int upstream, final;
    const char *rule, *error;
    int is_error;
} mix[] = {
    {200, 200, "", "", 0},
    {301, 301, "", "", 0},
    {404, 404, "", "", 1},
    {500, 200, "hide-5xx", "", 1},              /* upstream failed, client saw 200 */
    {-1, 502, "", "connect_refused", 1},
    {-1, -1, "kill", "", 1},                    /* reset: no final code */
    {200, 200, "", "client_closed", 1},         /* an error with a good status */
    {200, 503, "flaky", "", 1},
    {204, 204, "slow", "", 0},
};

static void run_mode(enum audit_mode mode, long long want_raw)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, mode, 0, 0);
    CHECK(a != NULL);
    int64_t now = time_now_ms();
    for (size_t i = 0; i < ARRAY_LEN(mix); i++) {
        struct audit_record r = rec(now, "h.example", mix[i].upstream, mix[i].final, mix[i].rule,
                                    mix[i].error);
        CHECK_INT(audit_submit(a, &r, 1), 0);
    }
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), want_raw);
    /* Aggregates count every exchange whatever the mode. */
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), (long long)ARRAY_LEN(mix));
    free(path);
}

static void test_mode_all_keeps_every_row(void)
{
    run_mode(AUDIT_LOG_ALL, (long long)ARRAY_LEN(mix));
}

static void test_mode_errors_keeps_failures(void)
{
    long long want = 0;
    for (size_t i = 0; i < ARRAY_LEN(mix); i++)
        want += mix[i].is_error;
    run_mode(AUDIT_LOG_ERRORS, want);
}

static void test_mode_none_keeps_aggregates_only(void)
{
    run_mode(AUDIT_LOG_NONE, 0);
}

static void test_raw_row_fields(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    struct audit_record r[2] = {
        rec(1795000000123, "shop.example", -1, -1, "", ""),
        rec(1795000000456, "shop.example", 500, 503, "mask", "timeout"),
    };
    r[1].duration_us = 777;
    r[1].bytes_in = 11;
    r[1].bytes_out = 22;
    snprintf(r[1].client, sizeof r[1].client, "::1");
    snprintf(r[1].method, sizeof r[1].method, "POST");
    snprintf(r[1].path, sizeof r[1].path, "/pay/now");
    /* A string that fills its field without a terminator is cut at the field. */
    memset(r[1].action, 'x', sizeof r[1].action);
    audit_submit(a, r, 2);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE start_ms = 1795000000123 AND"
                          " upstream_code IS NULL AND final_code IS NULL AND rule IS NULL AND"
                          " action IS NULL AND error IS NULL"),
              1);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE start_ms = 1795000000456 AND"
                          " client = '::1' AND method = 'POST' AND host = 'shop.example' AND"
                          " path = '/pay/now' AND upstream_code = 500 AND final_code = 503 AND"
                          " rule = 'mask' AND error = 'timeout' AND duration_us = 777 AND"
                          " bytes_in = 11 AND bytes_out = 22"),
              1);
    CHECK_INT(query(path, "SELECT length(action) FROM exchanges WHERE rule = 'mask'"),
              (long long)sizeof r[1].action);
    free(path);
}

static void test_aggregates_per_minute_host_codes_rule(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_NONE, 0, 0);
    int64_t m = 1795000020000 / 60000 * 60000; /* a minute's start, in ms */
    struct audit_record r[] = {
        rec(m + 1000, "a.example", 200, 200, "", ""),
        rec(m + 2000, "a.example", 200, 200, "", ""),
        rec(m + 59999, "a.example", 200, 200, "", ""),
        rec(m + 60000, "a.example", 200, 200, "", ""),  /* the next minute */
        rec(m + 3000, "b.example", -1, 502, "", "dns"),
        rec(m + 4000, "b.example", -1, 502, "", "dns"),
        rec(m + 5000, "a.example", 500, 503, "mask", ""),
        rec(m + 6000, "a.example", -1, -1, "kill", ""),
    };
    r[0].duration_us = 10;
    r[1].duration_us = 20;
    r[2].duration_us = 30;
    audit_submit(a, r, ARRAY_LEN(r));
    audit_close(a);
    char *sql;
    long long minute = m / 1000;
    CHECK_INT(query(path, "SELECT count(*) FROM minute_stats"), 5);
    sql = xasprintf("SELECT count FROM minute_stats WHERE minute = %lld AND host = 'a.example'"
                    " AND upstream_code = 200 AND final_code = 200 AND rule = ''", minute);
    CHECK_INT(query(path, sql), 3);
    free(sql);
    sql = xasprintf("SELECT duration_us FROM minute_stats WHERE minute = %lld AND"
                    " host = 'a.example' AND final_code = 200", minute);
    CHECK_INT(query(path, sql), 60);
    free(sql);
    sql = xasprintf("SELECT bytes_out FROM minute_stats WHERE minute = %lld AND"
                    " host = 'a.example' AND final_code = 200", minute);
    CHECK_INT(query(path, sql), 6000);
    free(sql);
    sql = xasprintf("SELECT count FROM minute_stats WHERE minute = %lld AND final_code = 200",
                    minute + 60);
    CHECK_INT(query(path, sql), 1);
    free(sql);
    sql = xasprintf("SELECT count FROM minute_stats WHERE minute = %lld AND host = 'b.example'"
                    " AND upstream_code = -1 AND final_code = 502 AND rule = ''", minute);
    CHECK_INT(query(path, sql), 2);
    free(sql);
    CHECK_INT(query(path, "SELECT count FROM minute_stats WHERE rule = 'mask' AND"
                          " upstream_code = 500 AND final_code = 503"),
              1);
    CHECK_INT(query(path, "SELECT count FROM minute_stats WHERE rule = 'kill' AND"
                          " upstream_code = -1 AND final_code = -1"),
              1);
    /* Later batches add to the same rows. */
    a = open_audit(path, AUDIT_LOG_NONE, 0, 0);
    audit_submit(a, r, 2);
    audit_flush(a);
    audit_submit(a, r, 1);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM minute_stats"), 5);
    sql = xasprintf("SELECT count FROM minute_stats WHERE minute = %lld"
                    " AND host = 'a.example' AND final_code = 200", minute);
    CHECK_INT(query(path, sql), 6);
    free(sql);
    sql = xasprintf("SELECT duration_us FROM minute_stats WHERE minute = %lld"
                    " AND host = 'a.example' AND final_code = 200", minute);
    CHECK_INT(query(path, sql), 100);
    free(sql);
    free(path);
}

/* The scheme (DESIGN §9) is a column of raw rows and part of the aggregates'
 * key: the same host, codes and minute over http, https and a tunnel are
 * three rows, also when they alternate within one batch. An out-of-range
 * value reads as http. */
static void test_scheme_in_rows_and_aggregates(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    int64_t m = 1795000020000 / 60000 * 60000;
    struct audit_record r[6];
    static const enum audit_scheme schemes[] = {AUDIT_SCHEME_HTTP, AUDIT_SCHEME_HTTPS,
                                                AUDIT_SCHEME_HTTP, AUDIT_SCHEME_TUNNEL,
                                                AUDIT_SCHEME_HTTPS, (enum audit_scheme)77};
    for (size_t i = 0; i < ARRAY_LEN(r); i++) {
        r[i] = rec(m + 1000 * (int64_t)i, "a.example", 200, 200, "", "");
        r[i].scheme = schemes[i];
    }
    audit_submit(a, r, ARRAY_LEN(r));
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE scheme = 'http'"), 3);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE scheme = 'https'"), 2);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE scheme = 'tunnel'"), 1);
    char *sql = xasprintf("SELECT group_concat(scheme, ',') FROM (SELECT scheme FROM exchanges"
                          " WHERE start_ms >= %lld ORDER BY start_ms)", (long long)m);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
          sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "http,https,http,tunnel,https,http");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(sql);
    CHECK_INT(query(path, "SELECT count(*) FROM minute_stats"), 3);
    CHECK_INT(query(path, "SELECT count FROM minute_stats WHERE scheme = 'http'"), 3);
    CHECK_INT(query(path, "SELECT count FROM minute_stats WHERE scheme = 'https'"), 2);
    CHECK_INT(query(path, "SELECT count FROM minute_stats WHERE scheme = 'tunnel'"), 1);
    CHECK_INT(query(path, "SELECT count(*) FROM exchange_log WHERE scheme = 'https'"), 2);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_log WHERE scheme = 'http'"), 3);
    free(path);
}

static void test_overflow_counted_and_stored(void)
{
    char *path = new_db_path();
    create_db(path);
    struct locker l = lock_db(path);
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 100);
    CHECK(a != NULL);
    int64_t now = time_now_ms();
    struct audit_record recs[150];
    for (int i = 0; i < 150; i++)
        recs[i] = rec(now, "x.example", 200, 200, "", "");
    CHECK_INT(audit_submit(a, recs, 10), 0);
    /* Wait until the writer took those 10 and is stuck on the lock. */
    char msg[256];
    for (int i = 0; i < 300 && !audit_last_error(a, msg, sizeof msg); i++)
        sleep_ms(10);
    CHECK(audit_last_error(a, msg, sizeof msg));
    CHECK(strstr(msg, "locked") != NULL);
    /* The queue is empty again and holds 100: 50 of 150 are lost. */
    CHECK_INT(audit_submit(a, recs, 150), 50);
    CHECK_INT(audit_submit(a, recs, 5), 5);
    CHECK_INT(audit_dropped(a), 55);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 0);
    unlock_db(&l);
    audit_flush(a);
    CHECK(!audit_last_error(a, msg, sizeof msg));
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 110);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 110);
    CHECK_INT(query(path, "SELECT sum(count) FROM dropped"), 55);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 110);
    CHECK_INT(query(path, "SELECT sum(count) FROM dropped"), 55);
    free(path);
}

static void test_lock_held_2s_loses_nothing(void)
{
    char *path = new_db_path();
    create_db(path);
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    CHECK(a != NULL);
    int64_t now = time_now_ms();
    struct audit_record recs[100];
    for (int i = 0; i < 100; i++)
        recs[i] = rec(now, "x.example", 200, 200, "", "");
    audit_submit(a, recs, 100);
    audit_flush(a);
    struct locker l = lock_db(path);
    for (int i = 0; i < 4; i++) { /* submissions all through the 2 s */
        CHECK_INT(audit_submit(a, recs, 100), 0);
        sleep_ms(500);
    }
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 100);
    unlock_db(&l);
    long long waited = wait_for(path, "SELECT count(*) FROM exchanges", 500, 3000);
    CHECK(waited < 1000);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 500);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 500);
    CHECK_INT(query(path, "SELECT count(*) FROM dropped"), 0);
    free(path);
}

static void test_retention_prunes_old_raw_rows(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    int64_t now = time_now_ms();
    struct audit_record r[] = {
        rec(now - 3 * 3600000, "old.example", 200, 200, "", ""),
        rec(now - 2 * 3600000, "old.example", 200, 200, "", ""),
        rec(now - 1800000, "new.example", 200, 200, "", ""),
        rec(now, "new.example", 200, 200, "", ""),
    };
    audit_submit(a, r, ARRAY_LEN(r));
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 4);
    /* Opening with --retain 1h prunes at once, in the writer. */
    a = open_audit(path, AUDIT_LOG_ALL, 3600000, 0);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 2);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE host = 'old.example'"), 0);
    /* Aggregates are not pruned. */
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 4);
    free(path);
}

/* Many rows, several prune chunks, and ids with holes: the bisection finds
 * the first row to keep, and every older one goes. */
static void test_retention_across_chunks_and_gaps(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    int64_t now = time_now_ms();
    enum { OLD = 23456, NEW = 3210 };
    struct audit_record *r = xmalloc((OLD + NEW) * sizeof *r);
    for (int i = 0; i < OLD; i++)
        r[i] = rec(now - 5 * 3600000 + i, "old.example", 200, 200, "", "");
    for (int i = 0; i < NEW; i++)
        r[OLD + i] = rec(now - 1000 + i % 1000, "new.example", 200, 200, "", "");
    audit_submit(a, r, OLD + NEW);
    audit_close(a);
    free(r);
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_exec(db, "DELETE FROM exchanges WHERE id % 7 = 3", NULL, NULL, NULL);
    sqlite3_close(db);
    int64_t old_left = query(path, "SELECT count(*) FROM exchanges WHERE host = 'old.example'");
    int64_t new_left = query(path, "SELECT count(*) FROM exchanges WHERE host = 'new.example'");
    CHECK(old_left > 20000);
    a = open_audit(path, AUDIT_LOG_ALL, 3600000, 0);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE host = 'old.example'"), 0);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE host = 'new.example'"), new_left);
    free(path);
}

static void test_close_flushes_everything(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    int64_t now = time_now_ms();
    struct audit_record *recs = xcalloc(5000, sizeof *recs);
    for (int i = 0; i < 5000; i++)
        recs[i] = rec(now + i, "x.example", 200, 200, "", "");
    CHECK_INT(audit_submit(a, recs, 5000), 0);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 5000);
    CHECK_INT(query(path, "SELECT count(DISTINCT start_ms) FROM exchanges"), 5000);
    audit_close(NULL);
    free(recs);
    free(path);
}

static void test_flush_makes_records_visible(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    struct audit_record r = rec(time_now_ms(), "x.example", 200, 200, "", "");
    for (int i = 1; i <= 3; i++) {
        audit_submit(a, &r, 1);
        audit_flush(a);
        CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), i);
    }
    audit_flush(a); /* nothing waiting: returns */
    audit_close(a);
    free(path);
}

struct submitter {
    struct audit *a;
    int id;
    size_t dropped;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    struct audit_record batch[50];
    int64_t now = time_now_ms();
    for (int i = 0; i < 50; i++)
        batch[i] = rec(now, s->id % 2 ? "odd.example" : "even.example", 200, 200, "", "");
    for (int round = 0; round < 100; round++)
        s->dropped += audit_submit(s->a, batch, 50);
    return NULL;
}

static void test_concurrent_submitters(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    struct submitter s[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct submitter){a, i, 0};
        pthread_create(&t[i], NULL, submit_many, &s[i]);
    }
    size_t dropped = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        dropped += s[i].dropped;
    }
    CHECK_INT(dropped, 0);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 20000);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats WHERE host = 'odd.example'"), 10000);
    free(path);
}

/* The workers' path: entries with strings by pointer and length (a path cut
 * from its query, no terminators), batches handed over whole and the
 * emptied ones handed back for reuse. */
static struct audit_entry entry(int64_t start_ms, const char *path, size_t path_len)
{
    struct audit_entry e = {
        .start_ms = start_ms, .duration_us = 42, .upstream_code = 200, .final_code = 200,
        .bytes_in = 7, .bytes_out = 9,
        .client = AUDIT_TEXT("10.1.2.3"), .method = AUDIT_TEXT("PUT"),
        .host = AUDIT_TEXT("batch.example"), .path = {path, path_len},
        .rule = AUDIT_TEXT(""), .action = AUDIT_TEXT(""), .error = AUDIT_TEXT(""),
    };
    return e;
}

static void test_batches_handed_over_and_reused(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    CHECK(a != NULL);
    int64_t now = time_now_ms();
    struct audit_batch *b = audit_batch_new();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++) {
            struct audit_entry e = entry(now + round * 100 + i, "/items?id=5", 6);
            if (i == 0) {
                e.upstream_code = -1;
                e.final_code = 502;
                e.rule = AUDIT_TEXT("mask");
                e.action = AUDIT_TEXT("set-status 503");
                e.error = AUDIT_TEXT("connect_refused");
            }
            CHECK_INT(audit_batch_add(b, &e), i + 1);
        }
        size_t lost = 99;
        b = audit_submit_batch(a, b, &lost);
        CHECK_INT(lost, 0);
        CHECK(b != NULL);
        CHECK_INT(audit_batch_count(b), 0);
        audit_flush(a);
        CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), (round + 1) * 100);
    }
    audit_batch_free(b);
    audit_batch_free(NULL);
    audit_close(a);
    CHECK_INT(query(path, "SELECT count(DISTINCT start_ms) FROM exchanges"), 300);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE client = '10.1.2.3' AND"
                          " method = 'PUT' AND host = 'batch.example' AND path = '/items' AND"
                          " upstream_code = 200 AND final_code = 200 AND rule IS NULL AND"
                          " action IS NULL AND error IS NULL AND duration_us = 42 AND"
                          " bytes_in = 7 AND bytes_out = 9"),
              297);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges WHERE upstream_code IS NULL AND"
                          " final_code = 502 AND rule = 'mask' AND action = 'set-status 503'"
                          " AND error = 'connect_refused'"),
              3);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 300);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats WHERE rule = 'mask' AND"
                          " upstream_code = -1 AND final_code = 502"),
              3);
    free(path);
}

static void test_entry_strings_cut_at_column_limits(void)
{
    char *path = new_db_path();
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    char long_text[2000];
    memset(long_text, 'y', sizeof long_text);
    struct audit_entry e = entry(time_now_ms(), long_text, sizeof long_text);
    e.client = (struct audit_text){long_text, sizeof long_text};
    e.method = (struct audit_text){long_text, sizeof long_text};
    e.host = (struct audit_text){long_text, sizeof long_text};
    e.rule = (struct audit_text){long_text, sizeof long_text};
    e.action = (struct audit_text){long_text, sizeof long_text};
    e.error = (struct audit_text){long_text, sizeof long_text};
    struct audit_batch *b = audit_batch_new();
    audit_batch_add(b, &e);
    size_t lost;
    b = audit_submit_batch(a, b, &lost);
    audit_batch_free(b);
    audit_close(a);
    CHECK_INT(query(path, "SELECT length(client) FROM exchanges"), AUDIT_MAX_CLIENT);
    CHECK_INT(query(path, "SELECT length(method) FROM exchanges"), AUDIT_MAX_METHOD);
    CHECK_INT(query(path, "SELECT length(host) FROM exchanges"), AUDIT_MAX_HOST);
    CHECK_INT(query(path, "SELECT length(path) FROM exchanges"), AUDIT_MAX_PATH);
    CHECK_INT(query(path, "SELECT length(rule) FROM exchanges"), AUDIT_MAX_RULE);
    CHECK_INT(query(path, "SELECT length(action) FROM exchanges"), AUDIT_MAX_ACTION);
    CHECK_INT(query(path, "SELECT length(error) FROM exchanges"), AUDIT_MAX_ERROR);
    CHECK_INT(query(path, "SELECT length(host) + length(rule) FROM minute_stats"),
              AUDIT_MAX_HOST + AUDIT_MAX_RULE);
    free(path);
}

/* A batch that does not fit the queue: its first records are taken, the
 * rest counted and stored as lost, and the caller gets an empty batch back. */
static void test_batch_overflow_keeps_the_first_records(void)
{
    char *path = new_db_path();
    create_db(path);
    struct locker l = lock_db(path);
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 100);
    CHECK(a != NULL);
    int64_t t0 = 1795000000000;
    struct audit_batch *b = audit_batch_new();
    size_t lost = 99;
    for (int i = 0; i < 10; i++) {
        struct audit_entry e = entry(t0 + i, "/", 1);
        audit_batch_add(b, &e);
    }
    b = audit_submit_batch(a, b, &lost);
    CHECK_INT(lost, 0);
    char msg[256];
    for (int i = 0; i < 300 && !audit_last_error(a, msg, sizeof msg); i++)
        sleep_ms(10);
    CHECK(audit_last_error(a, msg, sizeof msg));
    for (int i = 0; i < 150; i++) {
        struct audit_entry e = entry(t0 + 1000 + i, "/", 1);
        audit_batch_add(b, &e);
    }
    b = audit_submit_batch(a, b, &lost);
    CHECK_INT(lost, 50);
    CHECK_INT(audit_batch_count(b), 0);
    for (int i = 0; i < 5; i++) {
        struct audit_entry e = entry(t0 + 2000 + i, "/", 1);
        audit_batch_add(b, &e);
    }
    b = audit_submit_batch(a, b, &lost);
    CHECK_INT(lost, 5);
    CHECK_INT(audit_batch_count(b), 0);
    CHECK_INT(audit_dropped(a), 55);
    unlock_db(&l);
    audit_close(a);
    audit_batch_free(b);
    CHECK_INT(query(path, "SELECT count(*) FROM exchanges"), 110);
    CHECK_INT(query(path, "SELECT max(start_ms) FROM exchanges"), t0 + 1099);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 110);
    CHECK_INT(query(path, "SELECT sum(count) FROM dropped"), 55);
    free(path);
}

static void test_open_refuses_unusable_database(void)
{
    char *path = xasprintf("%s/text.db", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 100; i++)
        fputs("this is a text file, not a database\n", f);
    fclose(f);
    struct audit_config cfg = {path, AUDIT_LOG_ALL, 0, 0, NULL, 0};
    char err[256] = "";
    CHECK(audit_open(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "not a statusproxy database") != NULL);
    cfg.db_path = "/nonexistent-dir/x.db";
    CHECK(audit_open(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent-dir/x.db") != NULL);
    unlink(path);
    free(path);
}

/* A transaction that fails after the aggregates were summed (here: a
 * trigger refuses minute_stats rows until released) is retried whole; the
 * routes counted for GET /stats must still count each exchange once. */
static void test_failed_write_counts_routes_once(void)
{
    char *path = new_db_path();
    create_db(path);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE fault (x); INSERT INTO fault VALUES (1);"
                       "CREATE TRIGGER refuse BEFORE INSERT ON minute_stats"
                       " WHEN EXISTS (SELECT 1 FROM fault)"
                       " BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                       NULL, NULL, NULL) == SQLITE_OK);
    struct audit *a = open_audit(path, AUDIT_LOG_ALL, 0, 0);
    CHECK(a != NULL);
    struct audit_record recs[10];
    for (int i = 0; i < 10; i++)
        recs[i] = rec(time_now_ms(), "x.example", 200, 200, "", "");
    audit_submit(a, recs, 10);
    sleep_ms(300); /* several failed attempts */
    uint64_t errs[AUDIT_ERR_COUNT];
    audit_error_counts(a, errs);
    CHECK(errs[AUDIT_ERR_OTHER] >= 2);
    CHECK(sqlite3_exec(db, "DELETE FROM fault", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    audit_flush(a);
    CHECK_INT(query(path, "SELECT sum(count) FROM minute_stats"), 10);
    char *json = audit_routes_json(a, 10);
    CHECK_STR(json, "{\"x.example\": {\"/orders\": 10}}");
    free(json);
    audit_close(a);
    free(path);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--hold-lock") == 0)
        return hold_lock(argv[2], atoi(argv[3]), atoi(argv[4]));
    snprintf(dir, sizeof dir, "/tmp/test_audit.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_records_reach_file_within_1s_exactly_once);
    RUN(test_mode_all_keeps_every_row);
    RUN(test_mode_errors_keeps_failures);
    RUN(test_mode_none_keeps_aggregates_only);
    RUN(test_raw_row_fields);
    RUN(test_aggregates_per_minute_host_codes_rule);
    RUN(test_scheme_in_rows_and_aggregates);
    RUN(test_overflow_counted_and_stored);
    RUN(test_lock_held_2s_loses_nothing);
    RUN(test_retention_prunes_old_raw_rows);
    RUN(test_retention_across_chunks_and_gaps);
    RUN(test_close_flushes_everything);
    RUN(test_flush_makes_records_visible);
    RUN(test_concurrent_submitters);
    RUN(test_batches_handed_over_and_reused);
    RUN(test_entry_strings_cut_at_column_limits);
    RUN(test_batch_overflow_keeps_the_first_records);
    RUN(test_open_refuses_unusable_database);
    RUN(test_failed_write_counts_routes_once);
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    free(cmd);
    return unit_summary("audit");
}
