/*
 * sqlfn — SQL glue for the route and histogram modules (see sqlfn.h).
 * Histograms travel as BLOBs in histogram.c's compact form; an invalid or
 * NULL BLOB adds nothing, so rows from before schema 4 merge as empty.
 */
#include "sqlfn.h"

#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "route.h"
#include "util.h"

static void sql_route(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    const char *path = (const char *)sqlite3_value_text(argv[0]);
    if (!path) {
        sqlite3_result_null(ctx);
        return;
    }
    char out[ROUTE_MAX + 1];
    size_t n = route_template(NULL, path, (size_t)sqlite3_value_bytes(argv[0]), out, sizeof out);
    sqlite3_result_text(ctx, out, (int)n, SQLITE_TRANSIENT);
}

static void add_value(struct hist *h, sqlite3_value *v)
{
    if (sqlite3_value_type(v) == SQLITE_BLOB)
        hist_decode_add(h, sqlite3_value_blob(v), (size_t)sqlite3_value_bytes(v));
}

static void result_hist(sqlite3_context *ctx, const struct hist *h)
{
    uint8_t *buf = xmalloc(HIST_MAX_ENCODED);
    size_t n = hist_encode(h, buf, HIST_MAX_ENCODED);
    sqlite3_result_blob(ctx, buf, (int)n, free);
}

static void sql_hist_merge(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct hist *h = xmalloc(sizeof *h);
    hist_clear(h);
    for (int i = 0; i < argc; i++)
        add_value(h, argv[i]);
    result_hist(ctx, h);
    free(h);
}

/* The aggregate's state is a pointer to a heap histogram, allocated at the
 * first row (SQLite zeroes the context's bytes). */
static void sql_hist_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    struct hist **state = sqlite3_aggregate_context(ctx, sizeof *state);
    if (!state)
        return;
    if (!*state) {
        *state = xmalloc(sizeof **state);
        hist_clear(*state);
    }
    add_value(*state, argv[0]);
}

static void sql_hist_final(sqlite3_context *ctx)
{
    struct hist **state = sqlite3_aggregate_context(ctx, 0);
    if (!state || !*state || (*state)->total == 0) {
        sqlite3_result_null(ctx);
    } else {
        result_hist(ctx, *state);
    }
    if (state)
        free(*state);
}

static void sql_hist_ms(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    struct hist *h = xmalloc(sizeof *h);
    hist_clear(h);
    add_value(h, argv[0]);
    double us = hist_quantile_us(h, sqlite3_value_double(argv[1]));
    free(h);
    if (us < 0)
        sqlite3_result_null(ctx);
    else
        sqlite3_result_double(ctx, us / 1000.0);
}

int sqlfn_register(sqlite3 *db)
{
    int f = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
    if (sqlite3_create_function(db, "sp_route", 1, f, NULL, sql_route, NULL, NULL) ||
        sqlite3_create_function(db, "sp_hist_merge", 2, f, NULL, sql_hist_merge, NULL, NULL) ||
        sqlite3_create_function(db, "sp_hist_sum", 1, f, NULL, NULL, sql_hist_step,
                                sql_hist_final) ||
        sqlite3_create_function(db, "sp_hist_ms", 2, f, NULL, sql_hist_ms, NULL, NULL))
        return -1;
    return 0;
}
