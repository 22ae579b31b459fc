/* Unit tests for db: migrations in order, the version, refusing foreign and newer files. */
#include "db.h"
#include "unit.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static char dir[64];

static char *path_in_dir(const char *name)
{
    return xasprintf("%s/%s", dir, name);
}

static void remove_db(const char *path)
{
    char *wal = xasprintf("%s-wal", path), *shm = xasprintf("%s-shm", path);
    unlink(path);
    unlink(wal);
    unlink(shm);
    free(wal);
    free(shm);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct sbuf b = {0};
    char chunk[4096];
    size_t n;
    if (!f)
        return NULL;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sbuf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return sbuf_steal(&b);
}

/* Run SQL on a plain connection (no checks, no migrations), as another program would. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fprintf(stderr, "  raw_exec: %s\n", msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -999;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int table_exists(sqlite3 *db, const char *name)
{
    char *sql = xasprintf("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'",
                          name);
    int n = query_int(db, sql);
    free(sql);
    return n == 1;
}

static void test_embedded_migrations_are_numbered_in_order(void)
{
    char err[256] = "";
    size_t n = 0;
    struct db_migration *list = db_migrations(&n, err, sizeof err);
    CHECK(list != NULL);
    CHECK_STR(err, "");
    CHECK(n >= 1);
    for (size_t i = 0; list && i < n; i++) {
        CHECK_INT(list[i].version, (int)i + 1);
        CHECK(strncmp(list[i].name, "migrations/", 11) == 0);
        CHECK(list[i].sql && list[i].sql[0]);
    }
    CHECK_INT(db_latest_version(), (int)n);
    CHECK_STR(list ? list[0].name : NULL, "migrations/0001_init.sql");
    free(list);
}

static void test_fresh_database_gets_every_migration(void)
{
    char *path = path_in_dir("fresh.db");
    char err[256] = "";
    sqlite3 *db = db_open(path, DB_READ_WRITE, err, sizeof err);
    CHECK(db != NULL);
    CHECK_STR(err, "");
    CHECK_INT(db_version(db), db_latest_version());
    CHECK_INT((unsigned)query_int(db, "PRAGMA application_id"), DB_APPLICATION_ID);
    CHECK(table_exists(db, "exchanges"));
    CHECK(table_exists(db, "minute_stats"));
    CHECK(table_exists(db, "dropped"));
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    db_close(db);
    /* Opening again changes nothing. */
    db = db_open(path, DB_READ_WRITE, err, sizeof err);
    CHECK_INT(db_version(db), db_latest_version());
    db_close(db);
    remove_db(path);
    free(path);
}

/* Each step depends on the one before it, so the order shows in the result. */
static const struct db_migration steps[] = {
    {1, "m/0001_a.sql", "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);"},
    {2, "m/0002_b.sql", "CREATE TABLE b (y INTEGER); INSERT INTO b SELECT x + 10 FROM a;"},
    {3, "m/0003_c.sql", "UPDATE b SET y = y * 2; ALTER TABLE a ADD COLUMN z TEXT;"},
};

static void test_migrations_apply_in_order_and_track_version(void)
{
    char *path = path_in_dir("steps.db");
    sqlite3 *db = NULL;
    char err[256] = "";
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK_INT(db_version(db), 0);
    CHECK_INT(db_apply_migrations(db, steps, 1, err, sizeof err), 0);
    CHECK_INT(db_version(db), 1);
    CHECK_INT(query_int(db, "SELECT count(*) FROM a"), 1);
    CHECK_INT((unsigned)query_int(db, "PRAGMA application_id"), DB_APPLICATION_ID);
    /* Version 1 is not applied again (its INSERT would double the row). */
    CHECK_INT(db_apply_migrations(db, steps, 3, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_INT(db_version(db), 3);
    CHECK_INT(query_int(db, "SELECT count(*) FROM a"), 1);
    CHECK_INT(query_int(db, "SELECT y FROM b"), 22);
    CHECK_INT(query_int(db, "SELECT count(*) FROM pragma_table_info('a') WHERE name = 'z'"), 1);
    sqlite3_close(db);
    remove_db(path);
    free(path);
}

static void test_failed_migration_rolls_back_alone(void)
{
    static const struct db_migration bad[] = {
        {1, "m/0001_a.sql", "CREATE TABLE a (x INTEGER);"},
        {2, "m/0002_bad.sql", "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);"},
        {3, "m/0003_c.sql", "CREATE TABLE c (x);"},
    };
    char *path = path_in_dir("bad.db");
    sqlite3 *db = NULL;
    char err[256] = "";
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK_INT(db_apply_migrations(db, bad, 3, err, sizeof err), -1);
    CHECK(strstr(err, "m/0002_bad.sql") != NULL);
    CHECK(strstr(err, "nowhere") != NULL);
    CHECK_INT(db_version(db), 1);
    CHECK(table_exists(db, "a"));
    CHECK(!table_exists(db, "half"));
    CHECK(!table_exists(db, "c"));
    CHECK(sqlite3_get_autocommit(db)); /* no transaction left open */
    sqlite3_close(db);
    remove_db(path);
    free(path);
}

static void test_newer_version_refused_untouched(void)
{
    char *path = path_in_dir("newer.db");
    char *sql = xasprintf("CREATE TABLE future (x); INSERT INTO future VALUES (42);"
                          " PRAGMA application_id = %d; PRAGMA user_version = %d;",
                          DB_APPLICATION_ID, db_latest_version() + 1);
    raw_exec(path, sql);
    size_t before_len = 0, after_len = 0;
    char *before = read_file(path, &before_len);
    char err[256] = "";
    CHECK(db_open(path, DB_READ_WRITE, err, sizeof err) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(strstr(err, path) != NULL);
    CHECK(db_open(path, DB_READ_ONLY, err, sizeof err) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    char *after = read_file(path, &after_len);
    CHECK(before && after);
    CHECK_INT(after_len, before_len);
    CHECK(before && after && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
    free(sql);
    remove_db(path);
    free(path);
}

static void check_refused_untouched(const char *path, const char *want)
{
    size_t before_len = 0, after_len = 0;
    char *before = read_file(path, &before_len);
    char err[256] = "";
    CHECK(db_open(path, DB_READ_WRITE, err, sizeof err) == NULL);
    if (!strstr(err, want))
        fprintf(stderr, "  message: %s\n", err);
    CHECK(strstr(err, want) != NULL);
    CHECK(db_open(path, DB_READ_ONLY, err, sizeof err) == NULL);
    CHECK(strstr(err, want) != NULL);
    char *after = read_file(path, &after_len);
    CHECK_INT(after_len, before_len);
    CHECK(before && after && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
}

static void test_foreign_files_refused(void)
{
    char *text = path_in_dir("notes.txt");
    FILE *f = fopen(text, "w");
    for (int i = 0; i < 200; i++)
        fprintf(f, "line %d of a text file that is certainly not a database\n", i);
    fclose(f);
    check_refused_untouched(text, "not a statusproxy database");

    char *other = path_in_dir("other.db");
    raw_exec(other, "CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');");
    check_refused_untouched(other, "not a statusproxy database");

    char *app = path_in_dir("app.db");
    raw_exec(app, "PRAGMA application_id = 1234; PRAGMA user_version = 1;");
    check_refused_untouched(app, "another application");

    remove_db(text);
    remove_db(other);
    remove_db(app);
    free(text);
    free(other);
    free(app);
}

static void test_version_1_database_keeps_rows(void)
{
    char *path = path_in_dir("v1.db");
    char err[256] = "";
    size_t n = 0;
    struct db_migration *list = db_migrations(&n, err, sizeof err);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK_INT(db_apply_migrations(db, list, 1, err, sizeof err), 0);
    CHECK_INT(db_version(db), 1);
    CHECK(sqlite3_exec(db,
                       "INSERT INTO exchanges (start_ms, client, method, host, path, upstream_code,"
                       " final_code, duration_us, bytes_in, bytes_out)"
                       " VALUES (1000, '127.0.0.1', 'GET', 'a.example', '/', 200, 200, 5, 10, 20),"
                       " (2000, '127.0.0.1', 'GET', 'b.example', '/x', NULL, 502, 7, 10, 0);"
                       "INSERT INTO minute_stats VALUES (0, 'a.example', 200, 200, '', 1, 5, 10, 20);"
                       "INSERT INTO dropped VALUES (0, 3);",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    db = db_open(path, DB_READ_WRITE, err, sizeof err);
    CHECK(db != NULL);
    CHECK_INT(db_version(db), (int)n);
    CHECK_INT(query_int(db, "SELECT count(*) FROM exchanges"), 2);
    CHECK_INT(query_int(db, "SELECT count(*) FROM exchanges WHERE upstream_code IS NULL"), 1);
    CHECK_INT(query_int(db, "SELECT sum(count) FROM minute_stats"), 1);
    CHECK_INT(query_int(db, "SELECT count FROM dropped"), 3);
    db_close(db);
    free(list);
    remove_db(path);
    free(path);
}

static void test_read_only_never_creates(void)
{
    char *path = path_in_dir("missing.db");
    char err[256] = "";
    CHECK(db_open(path, DB_READ_ONLY, err, sizeof err) == NULL);
    CHECK(strstr(err, "No such file") != NULL);
    struct stat sb;
    CHECK(stat(path, &sb) != 0);
    free(path);

    /* An empty file is an empty SQLite database, but not one of ours to read. */
    path = path_in_dir("empty.db");
    fclose(fopen(path, "w"));
    CHECK(db_open(path, DB_READ_ONLY, err, sizeof err) == NULL);
    CHECK(strstr(err, "not a statusproxy database") != NULL);
    CHECK(stat(path, &sb) == 0 && sb.st_size == 0);
    remove_db(path);
    free(path);
}

static void test_read_only_cannot_write(void)
{
    char *path = path_in_dir("ro.db");
    char err[256] = "";
    db_close(db_open(path, DB_READ_WRITE, err, sizeof err));
    sqlite3 *db = db_open(path, DB_READ_ONLY, err, sizeof err);
    CHECK(db != NULL);
    CHECK(sqlite3_exec(db, "DELETE FROM exchanges", NULL, NULL, NULL) == SQLITE_READONLY);
    db_close(db);
    remove_db(path);
    free(path);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_db.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_embedded_migrations_are_numbered_in_order);
    RUN(test_fresh_database_gets_every_migration);
    RUN(test_migrations_apply_in_order_and_track_version);
    RUN(test_failed_migration_rolls_back_alone);
    RUN(test_newer_version_refused_untouched);
    RUN(test_foreign_files_refused);
    RUN(test_version_1_database_keeps_rows);
    RUN(test_read_only_never_creates);
    RUN(test_read_only_cannot_write);
    rmdir(dir);
    return unit_summary("db");
}
