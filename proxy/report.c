/*
 * report — flags, time ranges, merging databases, the views, and the table,
 * JSON and CSV writers (the HTML page is report_html.c).
 *
 * Every source database is opened read-only. Its minute_stats rows in the
 * range are grouped down to the columns the output needs and copied into an
 * in-memory SQLite database ("cells"); the views are then plain SQL over the
 * cells, so several databases merge by summing, and sorting, ties and --top
 * are the same whatever the number of files.
 */
#include "report.h"

#include <ctype.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "db.h"
#include "report_html.h"
#include "units.h"

static const char *const view_names[] = {"code", "class", "host", "rule", "rewrite", "minute"};
static const char *const format_names[] = {"table", "json", "csv", "html"};

const char *report_view_name(enum report_view v)
{
    return view_names[v];
}

/* ---- time and glob ---------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Read exactly N digits at *P into *OUT; advance P. */
static int digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + (unsigned)((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int parse_iso(const char *p, int64_t *out_ms)
{
    unsigned y, mo, d, h = 0, mi = 0, s = 0, ms = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &s))
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                unsigned scale = 100;
                if (!isdigit((unsigned char)*p))
                    return -1;
                for (; isdigit((unsigned char)*p); p++) {
                    ms += (unsigned)(*p - '0') * scale;
                    scale /= 10;
                }
            }
        }
        if (h > 23 || mi > 59 || s > 59)
            return -1;
        /* A time of day must say it is UTC: a local time would silently shift. */
        if (*p == 'Z' || *p == 'z')
            p++;
        else if (strcmp(p, "+00:00") == 0)
            p += 6;
        else
            return -1;
    } else if (*p == 'Z' || *p == 'z') {
        p++;
    }
    if (*p != '\0')
        return -1;
    int64_t days = days_from_civil(y, mo, d);
    *out_ms = ((days * 24 + h) * 60 + mi) * 60000 + (int64_t)s * 1000 + ms;
    return 0;
}

int report_parse_time(const char *t, int64_t now_ms, int64_t *out_ms)
{
    uint64_t back;
    if (units_parse_duration(t, strlen(t), &back) == 0) {
        if (back > (uint64_t)now_ms)
            back = (uint64_t)now_ms;
        *out_ms = now_ms - (int64_t)back;
        return 0;
    }
    return parse_iso(t, out_ms);
}

int report_glob_match(const char *glob, const char *host)
{
    const char *star = NULL, *resume = NULL;
    while (*host) {
        if (*glob == '*') {
            star = glob++;
            resume = host;
        } else if (*glob && (*glob == '?' || tolower((unsigned char)*glob) ==
                                                 tolower((unsigned char)*host))) {
            glob++;
            host++;
        } else if (star) {
            glob = star + 1;
            host = ++resume;
        } else {
            return 0;
        }
    }
    while (*glob == '*')
        glob++;
    return *glob == '\0';
}

/* ---- flags ------------------------------------------------------------- */

static int pick(const char *val, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(val, names[i]) == 0)
            return (int)i;
    return -1;
}

static void list_names(char *buf, size_t len, const char *const *names, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        used += (size_t)snprintf(buf + used, len - used, "%s%s", sep, names[i]);
    }
}

int report_parse_args(int argc, char **argv, int64_t now_ms, struct report_options *o, char *err,
                      size_t errlen)
{
    static const char *const flags[] = {"--db", "--by", "--since", "--until", "--host", "--top",
                                        "--format"};
    memset(o, 0, sizeof *o);
    o->dbs = xcalloc((size_t)argc + 1, sizeof *o->dbs);
    o->since_ms = INT64_MIN;
    o->until_ms = INT64_MAX;
    int since_set = 0, until_set = 0;
    for (int i = 0; i < argc; i++) {
        /* "--flag value" or "--flag=value". */
        char name[16];
        const char *val = NULL, *eq = strchr(argv[i], '=');
        size_t nlen = strlen(argv[i]);
        if (eq && strncmp(argv[i], "--", 2) == 0)
            nlen = (size_t)(eq - argv[i]);
        snprintf(name, sizeof name, "%.*s", (int)(nlen < sizeof name ? nlen : sizeof name - 1),
                 argv[i]);
        int f = nlen < sizeof name ? pick(name, flags, ARRAY_LEN(flags)) : -1;
        if (f < 0) {
            if (argv[i][0] == '-')
                snprintf(err, errlen, "%.*s: unknown option", (int)nlen, argv[i]);
            else
                snprintf(err, errlen, "unexpected argument '%s'", argv[i]);
            goto fail;
        }
        if (nlen < strlen(argv[i])) {
            val = argv[i] + nlen + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "%s: missing value", name);
            goto fail;
        }
        char names[96];
        int k;
        switch (f) {
        case 0: /* --db */
            if (!val[0]) {
                snprintf(err, errlen, "--db: empty path");
                goto fail;
            }
            o->dbs[o->ndbs++] = val;
            break;
        case 1: /* --by */
            if ((k = pick(val, view_names, ARRAY_LEN(view_names))) < 0) {
                list_names(names, sizeof names, view_names, ARRAY_LEN(view_names));
                snprintf(err, errlen, "--by: expected %s, got '%s'", names, val);
                goto fail;
            }
            o->view = (enum report_view)k;
            break;
        case 2: /* --since */
        case 3: /* --until */
            if (report_parse_time(val, now_ms, f == 2 ? &o->since_ms : &o->until_ms) != 0) {
                snprintf(err, errlen,
                         "%s: expected a duration back from now (1h) or an ISO 8601 UTC time "
                         "(2026-11-24T10:00:00Z), got '%s'",
                         name, val);
                goto fail;
            }
            *(f == 2 ? &since_set : &until_set) = 1;
            break;
        case 4: /* --host */
            if (!val[0]) {
                snprintf(err, errlen, "--host: empty pattern");
                goto fail;
            }
            o->host_glob = val;
            break;
        case 5: { /* --top */
            char *end;
            unsigned long long n = strtoull(val, &end, 10);
            if (!isdigit((unsigned char)val[0]) || *end || n == 0 || n > 1000000000ULL) {
                snprintf(err, errlen, "--top: expected a positive number, got '%s'", val);
                goto fail;
            }
            o->top = (size_t)n;
            break;
        }
        case 6: /* --format */
            if ((k = pick(val, format_names, ARRAY_LEN(format_names))) < 0) {
                list_names(names, sizeof names, format_names, ARRAY_LEN(format_names));
                snprintf(err, errlen, "--format: expected %s, got '%s'", names, val);
                goto fail;
            }
            o->format = (enum report_format)k;
            break;
        }
    }
    if (o->ndbs == 0) {
        snprintf(err, errlen, "--db: required (the database to report on)");
        goto fail;
    }
    if (since_set && until_set && o->until_ms <= o->since_ms) {
        snprintf(err, errlen, "--until: must be later than --since");
        goto fail;
    }
    return 0;
fail:
    report_options_free(o);
    return -1;
}

void report_options_free(struct report_options *o)
{
    free(o->dbs);
    o->dbs = NULL;
    o->ndbs = 0;
}

/* ---- reading the sources ---------------------------------------------- */

/* Columns of the cells table a view needs; the others are grouped away.
 * Each cells row belongs to a "part": the source rows grouped by one set of
 * columns. A text report loads one part, its view's; the HTML page loads
 * three, far fewer rows together than the five columns at once would be. */
enum {
    COL_MINUTE = 1 << 0,
    COL_HOST = 1 << 1,
    COL_UPSTREAM = 1 << 2,
    COL_FINAL = 1 << 3,
    COL_RULE = 1 << 4,
};

static const unsigned view_cols[] = {
    [REPORT_BY_CODE] = COL_FINAL,
    [REPORT_BY_CLASS] = COL_FINAL,
    [REPORT_BY_HOST] = COL_HOST | COL_FINAL,
    [REPORT_BY_RULE] = COL_RULE,
    [REPORT_BY_REWRITE] = COL_UPSTREAM | COL_FINAL | COL_RULE,
    [REPORT_BY_MINUTE] = COL_MINUTE | COL_FINAL,
};

static const unsigned html_parts[] = {
    COL_MINUTE | COL_FINAL,               /* code, class, minute and the chart */
    COL_HOST | COL_FINAL,                 /* host */
    COL_UPSTREAM | COL_FINAL | COL_RULE,  /* rule, rewrite */
};

static int html_part(enum report_view v)
{
    return v == REPORT_BY_HOST ? 1 : v == REPORT_BY_RULE || v == REPORT_BY_REWRITE ? 2 : 0;
}

static void sql_glob(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    const unsigned char *glob = sqlite3_value_text(argv[0]);
    const unsigned char *host = sqlite3_value_text(argv[1]);
    if (!glob || !host)
        sqlite3_result_int(ctx, 0);
    else
        sqlite3_result_int(ctx, report_glob_match((const char *)glob, (const char *)host));
}

static void sql_status_name(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    const struct catalog_entry *e = NULL;
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL)
        e = catalog_lookup(sqlite3_value_int(argv[0]));
    if (e)
        sqlite3_result_text(ctx, e->name, -1, SQLITE_STATIC);
    else
        sqlite3_result_null(ctx);
}

static void sql_status_class(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        sqlite3_result_null(ctx);
    else
        sqlite3_result_text(ctx, catalog_class_name(sqlite3_value_int(argv[0])), -1,
                            SQLITE_STATIC);
}

/* The range as bounds on minute_stats.minute (Unix seconds of a minute's
 * start): the minutes that overlap [since, until). */
static void minute_bounds(const struct report_options *o, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MIN;
    if (o->since_ms != INT64_MIN) {
        int64_t m = o->since_ms / 60000 - (o->since_ms % 60000 < 0);
        *lo = m * 60;
    }
    *hi = INT64_MAX;
    if (o->until_ms != INT64_MAX)
        *hi = o->until_ms / 1000 + (o->until_ms % 1000 > 0); /* minute * 1000 < until */
}

/* Copy SRC's aggregates in the range, grouped to COLS, into MEM's cells as PART. */
static int copy_part(sqlite3 *src, sqlite3 *mem, const struct report_options *o, unsigned cols,
                     int part, const char *path, char *err, size_t errlen)
{
    /* Group by the stored columns (absent values are -1 and '' there) and
     * turn absent values into NULL only on the few grouped rows. */
    static const struct {
        unsigned col;
        const char *expr, *key;
    } fields[] = {
        {COL_MINUTE, "minute", "minute"},
        {COL_HOST, "host", "host"},
        {COL_UPSTREAM, "NULLIF(upstream_code, -1)", "upstream_code"},
        {COL_FINAL, "NULLIF(final_code, -1)", "final_code"},
        {COL_RULE, "NULLIF(rule, '')", "rule"},
    };
    struct sbuf q = {0}, keys = {0};
    sbuf_puts(&q, "SELECT ");
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        sbuf_printf(&q, "%s, ", cols & fields[i].col ? fields[i].expr : "NULL");
        if (cols & fields[i].col)
            sbuf_printf(&keys, "%s%s", keys.len ? ", " : "", fields[i].key);
    }
    sbuf_printf(&q, "sum(count) FROM minute_stats WHERE minute >= ?1 AND minute < ?2%s GROUP BY %s",
                o->host_glob ? " AND sp_glob(?3, host)" : "", keys.data);
    sbuf_free(&keys);
    char *sql = sbuf_steal(&q);
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int64_t lo, hi;
    minute_bounds(o, &lo, &hi);
    int rc = -1;
    if (sqlite3_prepare_v2(src, sql, -1, &sel, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(src));
        goto done;
    }
    if (sqlite3_prepare_v2(mem, "INSERT INTO cells VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &ins,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "merging %s: %s", path, sqlite3_errmsg(mem));
        goto done;
    }
    sqlite3_bind_int64(sel, 1, lo);
    sqlite3_bind_int64(sel, 2, hi);
    if (o->host_glob)
        sqlite3_bind_text(sel, 3, o->host_glob, -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 1, part);
    int step;
    while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
        for (int c = 0; c < 6; c++)
            sqlite3_bind_value(ins, c + 2, sqlite3_column_value(sel, c));
        if (sqlite3_step(ins) != SQLITE_DONE) {
            snprintf(err, errlen, "merging %s: %s", path, sqlite3_errmsg(mem));
            goto done;
        }
        sqlite3_reset(ins);
    }
    if (step != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(src));
        goto done;
    }
    rc = 0;
done:
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    free(sql);
    return rc;
}

/* Open PATH read-only, copy its aggregates in the range into MEM as the parts
 * PARTS[0..n), and add its lost records to *DROPPED. Returns 0 or -1 (ERR). */
static int load_source(sqlite3 *mem, const char *path, const struct report_options *o,
                       const unsigned *parts, size_t nparts, uint64_t *dropped, char *err,
                       size_t errlen)
{
    sqlite3 *src = db_open(path, DB_READ_ONLY, err, errlen);
    if (!src)
        return -1;
    sqlite3_create_function(src, "sp_glob", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_glob,
                            NULL, NULL);
    int rc = -1;
    /* One read transaction, so every part sees the same snapshot while the
     * proxy keeps writing. */
    if (sqlite3_exec(src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot start a read transaction: %s", path,
                 sqlite3_errmsg(src));
        db_close(src);
        return -1;
    }
    for (size_t i = 0; i < nparts; i++)
        if (copy_part(src, mem, o, parts[i], (int)i, path, err, errlen) != 0)
            goto done;
    sqlite3_stmt *st = NULL;
    int64_t lo, hi;
    minute_bounds(o, &lo, &hi);
    if (sqlite3_prepare_v2(src,
                           "SELECT coalesce(sum(count), 0) FROM dropped"
                           " WHERE minute >= ?1 AND minute < ?2",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, lo);
        sqlite3_bind_int64(st, 2, hi);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *dropped += (uint64_t)sqlite3_column_int64(st, 0);
            rc = 0;
        }
    }
    if (rc != 0)
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(src));
    sqlite3_finalize(st);
done:
    if (sqlite3_exec(src, "COMMIT", NULL, NULL, NULL) != SQLITE_OK && rc == 0) {
        snprintf(err, errlen, "%s: cannot end the read transaction: %s", path,
                 sqlite3_errmsg(src));
        rc = -1;
    }
    db_close(src);
    return rc;
}

static sqlite3 *open_cells(char *err, size_t errlen)
{
    sqlite3 *mem = NULL;
    if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(mem,
                     "CREATE TABLE cells (part INTEGER NOT NULL, minute INTEGER, host TEXT,"
                     " upstream_code INTEGER,"
                     " final_code INTEGER, rule TEXT, count INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "in-memory database: %s", mem ? sqlite3_errmsg(mem) : "no memory");
        sqlite3_close(mem);
        return NULL;
    }
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
    sqlite3_create_function(mem, "status_name", 1, flags, NULL, sql_status_name, NULL, NULL);
    sqlite3_create_function(mem, "status_class", 1, flags, NULL, sql_status_class, NULL, NULL);
    return mem;
}

/* ---- views -------------------------------------------------------------- */

#define CLASS_SUMS                                                                                 \
    " sum(CASE WHEN final_code BETWEEN 100 AND 199 THEN count ELSE 0 END) AS \"1xx\","             \
    " sum(CASE WHEN final_code BETWEEN 200 AND 299 THEN count ELSE 0 END) AS \"2xx\","             \
    " sum(CASE WHEN final_code BETWEEN 300 AND 399 THEN count ELSE 0 END) AS \"3xx\","             \
    " sum(CASE WHEN final_code BETWEEN 400 AND 499 THEN count ELSE 0 END) AS \"4xx\","             \
    " sum(CASE WHEN final_code BETWEEN 500 AND 599 THEN count ELSE 0 END) AS \"5xx\""

/* ?1 is the total for shares, ?2 the row limit (-1: none), ?3 the part to
 * read. Ties are broken by
 * the key, ascending, absent values last, so output is deterministic. */
static const char *const view_sql[] = {
    [REPORT_BY_CODE] =
        "SELECT final_code AS code, status_name(final_code) AS name,"
        " status_class(final_code) AS class, sum(count) AS count,"
        " sum(count) * 1.0 / ?1 AS share FROM cells WHERE part = ?3 GROUP BY final_code"
        " ORDER BY count DESC, code IS NULL, code LIMIT ?2",
    [REPORT_BY_CLASS] =
        "SELECT status_class(final_code) AS class, sum(count) AS count,"
        " sum(count) * 1.0 / ?1 AS share FROM cells WHERE part = ?3"
        " GROUP BY status_class(final_code)"
        " ORDER BY count DESC, class IS NULL, class LIMIT ?2",
    [REPORT_BY_HOST] =
        "SELECT host, sum(count) AS count," CLASS_SUMS
        " FROM cells WHERE part = ?3 GROUP BY host ORDER BY count DESC, host LIMIT ?2",
    [REPORT_BY_RULE] =
        "SELECT rule, sum(count) AS count FROM cells WHERE part = ?3 AND rule IS NOT NULL"
        " GROUP BY rule ORDER BY count DESC, rule LIMIT ?2",
    /* A missing upstream code counts as different: the answer was made here. */
    [REPORT_BY_REWRITE] =
        "SELECT upstream_code, final_code AS code, rule, sum(count) AS count FROM cells"
        " WHERE part = ?3 AND (upstream_code IS NULL OR upstream_code IS NOT final_code"
        " OR rule IS NOT NULL)"
        " GROUP BY upstream_code, final_code, rule"
        " ORDER BY count DESC, upstream_code IS NULL, upstream_code, code IS NULL, code,"
        " rule IS NULL, rule LIMIT ?2",
    [REPORT_BY_MINUTE] =
        "SELECT strftime('%Y-%m-%dT%H:%M:00Z', cells.minute, 'unixepoch') AS minute,"
        " sum(count) AS count," CLASS_SUMS
        " FROM cells WHERE part = ?3 GROUP BY cells.minute ORDER BY cells.minute LIMIT ?2",
};

static const char chart_sql[] =
    "SELECT minute," CLASS_SUMS ","
    " sum(CASE WHEN final_code < 100 OR final_code > 599 THEN count ELSE 0 END),"
    " sum(CASE WHEN final_code IS NULL THEN count ELSE 0 END)"
    " FROM cells WHERE part = ?1 GROUP BY minute ORDER BY minute";

static int query_view(sqlite3 *mem, enum report_view view, int part, size_t top,
                      uint64_t total, struct report_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->view = view;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(mem, view_sql[view], -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "report query: %s", sqlite3_errmsg(mem));
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(total ? total : 1));
    sqlite3_bind_int64(st, 2, top ? (sqlite3_int64)top : -1);
    sqlite3_bind_int(st, 3, part);
    r->ncols = (size_t)sqlite3_column_count(st);
    r->cols = xcalloc(r->ncols, sizeof *r->cols);
    for (size_t c = 0; c < r->ncols; c++)
        r->cols[c] = xstrdup(sqlite3_column_name(st, (int)c));
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->nrows == cap) {
            cap = cap ? cap * 2 : 16;
            r->cells = xrealloc(r->cells, cap * r->ncols * sizeof *r->cells);
        }
        struct report_value *row = &r->cells[r->nrows * r->ncols];
        for (size_t c = 0; c < r->ncols; c++) {
            struct report_value *v = &row[c];
            memset(v, 0, sizeof *v);
            switch (sqlite3_column_type(st, (int)c)) {
            case SQLITE_INTEGER:
                v->type = REPORT_INT;
                v->i = sqlite3_column_int64(st, (int)c);
                break;
            case SQLITE_FLOAT:
                v->type = REPORT_REAL;
                v->r = sqlite3_column_double(st, (int)c);
                break;
            case SQLITE_NULL:
                v->type = REPORT_NULL;
                break;
            default:
                v->type = REPORT_TEXT;
                v->s = xstrdup((const char *)sqlite3_column_text(st, (int)c));
            }
        }
        r->nrows++;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "report query: %s", sqlite3_errmsg(mem));
        sqlite3_finalize(st);
        report_result_free(r);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

static int query_chart(sqlite3 *mem, int part, struct report_chart_point **out, size_t *n,
                       char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(mem, chart_sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "chart query: %s", sqlite3_errmsg(mem));
        return -1;
    }
    sqlite3_bind_int(st, 1, part);
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *out = xrealloc(*out, cap * sizeof **out);
        }
        struct report_chart_point *p = &(*out)[(*n)++];
        p->minute_s = sqlite3_column_int64(st, 0);
        for (int s = 0; s < REPORT_SERIES_COUNT; s++)
            p->counts[s] = (uint64_t)sqlite3_column_int64(st, s + 1);
    }
    sqlite3_finalize(st);
    return 0;
}

void report_result_free(struct report_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i].s);
    for (size_t c = 0; c < r->ncols; c++)
        free(r->cols[c]);
    free(r->cells);
    free(r->cols);
    memset(r, 0, sizeof *r);
}

/* ---- writers ------------------------------------------------------------ */

void report_format_double(double d, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

static void json_value(struct sbuf *out, const struct report_value *v)
{
    char num[32];
    switch (v->type) {
    case REPORT_NULL:
        sbuf_puts(out, "null");
        break;
    case REPORT_INT:
        sbuf_printf(out, "%lld", (long long)v->i);
        break;
    case REPORT_REAL:
        report_format_double(v->r, num, sizeof num);
        sbuf_puts(out, num);
        break;
    case REPORT_TEXT:
        sbuf_putc(out, '"');
        sbuf_json_escape(out, v->s, strlen(v->s));
        sbuf_putc(out, '"');
        break;
    }
}

void report_write_json(const struct report_result *r, struct sbuf *out)
{
    if (r->nrows == 0) {
        sbuf_puts(out, "[]\n");
        return;
    }
    sbuf_puts(out, "[\n");
    for (size_t i = 0; i < r->nrows; i++) {
        sbuf_puts(out, "  {");
        for (size_t c = 0; c < r->ncols; c++) {
            sbuf_printf(out, "%s\"", c ? ", " : "");
            sbuf_json_escape(out, r->cols[c], strlen(r->cols[c]));
            sbuf_puts(out, "\": ");
            json_value(out, &r->cells[i * r->ncols + c]);
        }
        sbuf_printf(out, "}%s\n", i + 1 < r->nrows ? "," : "");
    }
    sbuf_puts(out, "]\n");
}

/* RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled. */
static void csv_field(struct sbuf *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        sbuf_puts(out, s);
        return;
    }
    sbuf_putc(out, '"');
    for (; *s; s++) {
        if (*s == '"')
            sbuf_putc(out, '"');
        sbuf_putc(out, *s);
    }
    sbuf_putc(out, '"');
}

void report_write_csv(const struct report_result *r, struct sbuf *out)
{
    for (size_t c = 0; c < r->ncols; c++) {
        if (c)
            sbuf_putc(out, ',');
        csv_field(out, r->cols[c]);
    }
    sbuf_puts(out, "\r\n");
    char num[32];
    for (size_t i = 0; i < r->nrows; i++) {
        for (size_t c = 0; c < r->ncols; c++) {
            const struct report_value *v = &r->cells[i * r->ncols + c];
            if (c)
                sbuf_putc(out, ',');
            if (v->type == REPORT_INT)
                sbuf_printf(out, "%lld", (long long)v->i);
            else if (v->type == REPORT_REAL) {
                report_format_double(v->r, num, sizeof num);
                sbuf_puts(out, num);
            } else if (v->type == REPORT_TEXT)
                csv_field(out, v->s);
        }
        sbuf_puts(out, "\r\n");
    }
}

/* Text for a terminal: absent values as "-", shares as percentages, and no
 * control characters (a Host header is outside data). */
static char *cell_text(const struct report_value *v, int is_share)
{
    switch (v->type) {
    case REPORT_NULL:
        return xstrdup("-");
    case REPORT_INT:
        return xasprintf("%lld", (long long)v->i);
    case REPORT_REAL:
        return is_share ? xasprintf("%.1f%%", v->r * 100.0) : xasprintf("%g", v->r);
    case REPORT_TEXT:
        break;
    }
    char *s = xstrdup(v->s);
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return s;
}

#define BAR_WIDTH 24

/* A bar of SHARE * BAR_WIDTH cells, drawn in eighths with block characters. */
static void share_bar(struct sbuf *out, double share)
{
    static const char *const eighths[] = {"", "\u258f", "\u258e", "\u258d",
                                          "\u258c", "\u258b", "\u258a", "\u2589"};
    if (share < 0)
        share = 0;
    if (share > 1)
        share = 1;
    long units = (long)(share * BAR_WIDTH * 8 + 0.5);
    if (units == 0 && share > 0)
        units = 1; /* a rare code still shows */
    for (long i = 0; i < units / 8; i++)
        sbuf_puts(out, "\u2588");
    sbuf_puts(out, eighths[units % 8]);
}

void report_write_table(const struct report_result *r, struct sbuf *out)
{
    size_t nc = r->ncols, nr = r->nrows;
    char **text = xcalloc(nr * nc + 1, sizeof *text);
    size_t *width = xcalloc(nc + 1, sizeof *width);
    int *right = xcalloc(nc + 1, sizeof *right);
    int share_col = -1;
    for (size_t c = 0; c < nc; c++) {
        if (strcmp(r->cols[c], "share") == 0)
            share_col = (int)c;
        width[c] = strlen(r->cols[c]);
        right[c] = 1;
        for (size_t i = 0; i < nr; i++) {
            const struct report_value *v = &r->cells[i * nc + c];
            text[i * nc + c] = cell_text(v, (int)c == share_col);
            size_t w = strlen(text[i * nc + c]);
            if (w > width[c])
                width[c] = w;
            if (v->type == REPORT_TEXT)
                right[c] = 0;
        }
        /* Columns of names stay left-aligned even when every value is absent. */
        if (strcmp(r->cols[c], "name") == 0 || strcmp(r->cols[c], "class") == 0 ||
            strcmp(r->cols[c], "host") == 0 || strcmp(r->cols[c], "rule") == 0 ||
            strcmp(r->cols[c], "minute") == 0)
            right[c] = 0;
    }
    for (size_t c = 0; c < nc; c++) {
        char head[64];
        snprintf(head, sizeof head, "%s", r->cols[c]);
        for (char *p = head; *p && !isdigit((unsigned char)head[0]); p++)
            *p = (char)toupper((unsigned char)*p);
        sbuf_printf(out, "%s%*s%s", c ? "  " : "", right[c] ? (int)(width[c] - strlen(head)) : 0,
                    "", head);
        if (!right[c] && c + 1 < nc)
            sbuf_printf(out, "%*s", (int)(width[c] - strlen(head)), "");
    }
    sbuf_putc(out, '\n');
    for (size_t i = 0; i < nr; i++) {
        for (size_t c = 0; c < nc; c++) {
            const char *t = text[i * nc + c];
            int pad = (int)(width[c] - strlen(t));
            if (right[c])
                sbuf_printf(out, "%s%*s%s", c ? "  " : "", pad, "", t);
            else
                sbuf_printf(out, "%s%s%*s", c ? "  " : "", t, c + 1 < nc ? pad : 0, "");
        }
        if (share_col >= 0 && r->cells[i * nc + (size_t)share_col].type == REPORT_REAL) {
            sbuf_puts(out, "  ");
            share_bar(out, r->cells[i * nc + (size_t)share_col].r);
        }
        sbuf_putc(out, '\n');
    }
    if (nr == 0)
        sbuf_puts(out, "(no exchanges in this range)\n");
    sbuf_printf(out, "\n%llu exchanges, %llu records dropped\n", (unsigned long long)r->total,
                (unsigned long long)r->dropped);
    for (size_t i = 0; i < nr * nc; i++)
        free(text[i]);
    free(text);
    free(width);
    free(right);
}

/* ---- running ------------------------------------------------------------ */

static int run_html(sqlite3 *mem, const struct report_options *o, int64_t now_ms,
                    uint64_t total, uint64_t dropped, struct sbuf *out, char *err, size_t errlen)
{
    struct report_result views[REPORT_BY_MINUTE + 1];
    struct report_page page = {.opts = o, .generated_ms = now_ms, .total = total,
                               .dropped = dropped};
    struct report_chart_point *points = NULL;
    size_t done = 0;
    int rc = -1;
    for (; done <= REPORT_BY_MINUTE; done++) {
        enum report_view v = (enum report_view)done;
        if (query_view(mem, v, html_part(v), o->top, total, &views[done], err, errlen) != 0)
            goto out;
        views[done].total = total;
        views[done].dropped = dropped;
        page.views[done] = &views[done];
    }
    if (query_chart(mem, html_part(REPORT_BY_MINUTE), &points, &page.npoints, err, errlen) != 0)
        goto out;
    page.points = points;
    report_html_write(&page, out);
    rc = 0;
out:
    for (size_t i = 0; i < done; i++)
        report_result_free(&views[i]);
    free(points);
    return rc;
}

int report_run(const struct report_options *o, int64_t now_ms, struct sbuf *out, char *err,
               size_t errlen)
{
    sqlite3 *mem = open_cells(err, errlen);
    if (!mem)
        return -1;
    int html = o->format == REPORT_HTML;
    const unsigned *parts = html ? html_parts : &view_cols[o->view];
    size_t nparts = html ? ARRAY_LEN(html_parts) : 1;
    uint64_t dropped = 0, total = 0;
    int rc = -1;
    if (sqlite3_exec(mem, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "report: cannot start a transaction: %s", sqlite3_errmsg(mem));
        goto out;
    }
    for (size_t i = 0; i < o->ndbs; i++)
        if (load_source(mem, o->dbs[i], o, parts, nparts, &dropped, err, errlen) != 0)
            goto out;
    if (sqlite3_exec(mem, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "report: cannot commit the merged counts: %s", sqlite3_errmsg(mem));
        goto out;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(mem, "SELECT coalesce(sum(count), 0) FROM cells WHERE part = 0", -1,
                           &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        total = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);

    if (html) {
        rc = run_html(mem, o, now_ms, total, dropped, out, err, errlen);
        goto out;
    }
    struct report_result r;
    if (query_view(mem, o->view, 0, o->top, total, &r, err, errlen) != 0)
        goto out;
    r.total = total;
    r.dropped = dropped;
    switch (o->format) {
    case REPORT_TABLE:
        report_write_table(&r, out);
        break;
    case REPORT_JSON:
        report_write_json(&r, out);
        break;
    case REPORT_CSV:
        report_write_csv(&r, out);
        break;
    case REPORT_HTML:
        break;
    }
    report_result_free(&r);
    rc = 0;
out:
    sqlite3_close(mem);
    return rc;
}
