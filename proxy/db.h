/*
 * db — opening statusproxy's SQLite databases and migrating their schema.
 * The numbered migrations/NNNN_name.sql files are compiled into the binary;
 * each is applied in its own transaction and PRAGMA user_version records the
 * highest one applied. PRAGMA application_id marks a file as ours, so that a
 * database of another program is refused instead of being written to.
 * This module owns no thread and keeps no state between calls: callers own
 * the connections it returns.
 */
#ifndef STATUSPROXY_DB_H
#define STATUSPROXY_DB_H

#include <sqlite3.h>
#include <stddef.h>

/* "STPX": the application id stored in the header of every statusproxy database. */
#define DB_APPLICATION_ID 0x53545058

enum db_mode {
    DB_READ_ONLY,  /* an existing, already migrated database; never created or written */
    DB_READ_WRITE, /* created when missing, migrated to the newest schema, WAL mode */
};

/* One schema step: migrations/NNNN_name.sql brings a database to VERSION. */
struct db_migration {
    int version;
    const char *name; /* the file's path, for messages */
    const char *sql;
};

/* Open the database at PATH. Refuses (NULL, message in ERR naming PATH) a file
 * that is not a statusproxy database, one whose schema is newer than this
 * binary knows (left untouched), and in DB_READ_ONLY mode a missing file or one
 * never migrated. The caller owns the connection; close it with db_close. */
sqlite3 *db_open(const char *path, enum db_mode mode, char *err, size_t errlen);

/* The migrations this binary carries, sorted by version; *count receives their
 * number. Returns NULL with a message in ERR when the embedded set is broken
 * (a gap or a duplicate number). The array is the caller's to free(). */
struct db_migration *db_migrations(size_t *count, char *err, size_t errlen);

/* The highest schema version this binary can migrate to. */
int db_latest_version(void);

/* Apply the migrations of LIST[0..n) above the database's version, in order,
 * each in its own transaction together with the new user_version. Stops at the
 * first failure, whose transaction is rolled back. Returns 0 or -1 (ERR). */
int db_apply_migrations(sqlite3 *db, const struct db_migration *list, size_t n, char *err,
                        size_t errlen);

/* PRAGMA user_version of DB, or -1 when it cannot be read. */
int db_version(sqlite3 *db);

/* Close DB (NULL is fine). */
void db_close(sqlite3 *db);

#endif
