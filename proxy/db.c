/*
 * db — open, identify and migrate statusproxy databases.
 *
 * The checks run before anything is written: a file of another program, or
 * one whose schema is newer than this binary, is refused byte for byte
 * untouched (journal_mode=WAL rewrites the header, so it comes after them).
 */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "embedded.h"
#include "sqlfn.h"
#include "units.h"
#include "util.h"

static pthread_once_t config_once = PTHREAD_ONCE_INIT;

/* Before SQLite's first use: no global memory statistics (a mutex and
 * counters on every allocation, which nothing here reads). */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

#define MIGRATIONS_DIR "migrations/"
#define BUSY_TIMEOUT_MS 5000

static int by_version(const void *a, const void *b)
{
    const struct db_migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

struct db_migration *db_migrations(size_t *count, char *err, size_t errlen)
{
    struct db_migration *list = xcalloc(embedded_count + 1, sizeof *list);
    size_t n = 0;
    size_t dirlen = strlen(MIGRATIONS_DIR);
    for (size_t i = 0; i < embedded_count; i++) {
        const struct embedded_file *f = &embedded_files[i];
        size_t len = strlen(f->path);
        if (strncmp(f->path, MIGRATIONS_DIR, dirlen) != 0 || len < 4 ||
            strcmp(f->path + len - 4, ".sql") != 0)
            continue;
        const char *p = f->path + dirlen;
        uint64_t version;
        size_t digits = units_scan_u64(p, strlen(p), 6, UINT64_MAX, &version);
        if (digits == 0 || p[digits] != '_') {
            snprintf(err, errlen, "%s: a migration's name must be NNNN_name.sql", f->path);
            free(list);
            return NULL;
        }
        list[n].version = (int)version;
        list[n].name = f->path;
        list[n].sql = f->data;
        n++;
    }
    qsort(list, n, sizeof *list, by_version);
    for (size_t i = 0; i < n; i++) {
        if (list[i].version != (int)i + 1) {
            snprintf(err, errlen, "%s: expected migration number %zu (no gaps or duplicates)",
                     list[i].name, i + 1);
            free(list);
            return NULL;
        }
    }
    *count = n;
    return list;
}

int db_latest_version(void)
{
    char err[256];
    size_t n = 0;
    struct db_migration *list = db_migrations(&n, err, sizeof err);
    int latest = list && n ? list[n - 1].version : 0;
    free(list);
    return latest;
}

/* Run SQL that yields one integer (a pragma or a count) into *out.
 * Returns an SQLite result code. */
static int query_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            *out = 0;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

int db_version(sqlite3 *db)
{
    int v;
    return query_int(db, "PRAGMA user_version", &v) == SQLITE_OK ? v : -1;
}

/* Is DB a statusproxy database this binary can use (or, when FRESH_OK, an empty
 * file that can become one)? Reads only. Returns 0 or -1 with ERR. */
static int check_identity(sqlite3 *db, const char *path, int fresh_ok, int latest, char *err,
                          size_t errlen)
{
    int appid = 0, version = 0, objects = 0;
    int rc = query_int(db, "PRAGMA application_id", &appid);
    if (rc == SQLITE_OK)
        rc = query_int(db, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM sqlite_master", &objects);
    if (rc == SQLITE_NOTADB) {
        snprintf(err, errlen, "%s: not a statusproxy database (not an SQLite file)", path);
        return -1;
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
        return -1;
    }
    if ((unsigned)appid != DB_APPLICATION_ID) {
        if (appid == 0 && version == 0 && objects == 0) {
            if (fresh_ok)
                return 0;
            snprintf(err, errlen,
                     "%s: not a statusproxy database (empty; 'statusproxy migrate --db FILE' "
                     "creates one)",
                     path);
        } else if (appid != 0) {
            snprintf(err, errlen,
                     "%s: not a statusproxy database (SQLite file of another application, "
                     "id 0x%08x)",
                     path, (unsigned)appid);
        } else {
            snprintf(err, errlen,
                     "%s: not a statusproxy database (SQLite file with other tables)", path);
        }
        return -1;
    }
    if (version > latest) {
        snprintf(err, errlen,
                 "%s: schema version %d is newer than this statusproxy knows (%d); "
                 "use a newer statusproxy",
                 path, version, latest);
        return -1;
    }
    if (version < 1) {
        snprintf(err, errlen, "%s: not a statusproxy database (no schema version)", path);
        return -1;
    }
    return 0;
}

static int exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

int db_apply_migrations(sqlite3 *db, const struct db_migration *list, size_t n, char *err,
                        size_t errlen)
{
    /* Migrations may call our functions (schema 4 templates old paths). */
    if (sqlfn_register(db) != 0) {
        snprintf(err, errlen, "registering SQL functions: %s", sqlite3_errmsg(db));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct db_migration *m = &list[i];
        if (db_version(db) >= m->version)
            continue;
        if (exec(db, "BEGIN IMMEDIATE", m->name, err, errlen) != 0)
            return -1;
        /* Another process may have migrated while we waited for the lock. */
        int current = db_version(db);
        if (current >= m->version) {
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
            continue;
        }
        if (current != m->version - 1) {
            snprintf(err, errlen, "%s: database is at schema version %d, expected %d", m->name,
                     current, m->version - 1);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        char stamp[96];
        snprintf(stamp, sizeof stamp, "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 DB_APPLICATION_ID, m->version);
        if (exec(db, m->sql, m->name, err, errlen) != 0 ||
            exec(db, stamp, m->name, err, errlen) != 0 ||
            exec(db, "COMMIT", m->name, err, errlen) != 0) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

/* Enter WAL mode (readers never wait for the writer) and check it took. */
static int use_wal(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *mode = sqlite3_column_text(st, 0);
        ok = mode && strcmp((const char *)mode, "wal") == 0;
    }
    if (!ok)
        snprintf(err, errlen, "%s: cannot enter WAL mode: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (!ok)
        return -1;
    /* In WAL mode NORMAL loses no committed data on a process crash, only
     * possibly the last transactions on power loss, and spares an fsync per batch. */
    return exec(db, "PRAGMA synchronous = NORMAL", path, err, errlen);
}

sqlite3 *db_open(const char *path, enum db_mode mode, char *err, size_t errlen)
{
    size_t n = 0;
    struct db_migration *list = db_migrations(&n, err, errlen);
    if (!list)
        return NULL;
    sqlite3 *db = NULL;
    int flags;
    if (mode == DB_READ_ONLY) {
        /* SQLite would say "unable to open database file"; say why. */
        struct stat sb;
        if (stat(path, &sb) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "%s: is a directory", path);
            goto fail;
        }
        flags = SQLITE_OPEN_READONLY;
    } else {
        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    }
    /* Each connection is used by one thread at a time (the writer owns the
     * proxy's; reports are single-threaded): SQLite's own locking of it is
     * wasted work. */
    flags |= SQLITE_OPEN_NOMUTEX;
    pthread_once(&config_once, configure_sqlite);
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    sqlite3_extended_result_codes(db, 0);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (sqlfn_register(db) != 0) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
        goto fail;
    }
    int latest = n ? list[n - 1].version : 0;
    if (check_identity(db, path, mode == DB_READ_WRITE, latest, err, errlen) != 0)
        goto fail;
    if (mode == DB_READ_WRITE) {
        if (use_wal(db, path, err, errlen) != 0)
            goto fail;
        char merr[256];
        if (db_apply_migrations(db, list, n, merr, sizeof merr) != 0) {
            snprintf(err, errlen, "%s: migration failed: %s", path, merr);
            goto fail;
        }
    }
    free(list);
    return db;
fail:
    sqlite3_close(db);
    free(list);
    return NULL;
}

void db_close(sqlite3 *db)
{
    if (db)
        sqlite3_close(db);
}
