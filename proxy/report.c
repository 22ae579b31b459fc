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
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "db.h"
#include "glob.h"
#include "report_group.h"
#include "report_html.h"
#include "report_retry.h"
#include "sqlfn.h"
#include "units.h"

static const char *const view_names[] = {"code",   "class",  "host",  "rule",
                                         "rewrite", "minute", "route", "retry"};
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
    uint64_t v;
    if (units_scan_u64(*p, (size_t)n, 0, UINT64_MAX, &v) != (size_t)n)
        return -1;
    *p += n;
    *out = (unsigned)v;
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

/* The proxy's own matcher (glob.h), so that --host and --route patterns mean
 * in a report what they mean in a rule file. */
int report_glob_match(const char *glob, const char *host)
{
    struct glob *g = glob_compile(glob, strlen(glob), GLOB_ICASE);
    int hit = glob_match(g, host, strlen(host));
    glob_free(g);
    return hit;
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

/* A time flag's value (--since, --until, --baseline-since/-until). */
static int time_flag(const char *name, const char *val, int64_t now_ms, int64_t *out, char *err,
                     size_t errlen)
{
    if (report_parse_time(val, now_ms, out) == 0)
        return 0;
    snprintf(err, errlen,
             "%s: expected a duration back from now (1h) or an ISO 8601 UTC time "
             "(2026-11-24T10:00:00Z), got '%s'",
             name, val);
    return -1;
}

/* The flags of DESIGN §11 (index F in report_parse_args' list). *BASE_SET
 * collects 1 for --baseline-since, 2 for --baseline-until. */
static int parse_more(int f, const char *name, const char *val, int64_t now_ms,
                      struct report_options *o, int *base_set, char *err, size_t errlen)
{
    switch (f) {
    case 7: /* --route */
        if (!val[0]) {
            snprintf(err, errlen, "--route: empty pattern");
            return -1;
        }
        o->route_glob = val;
        return 0;
    case 8: /* --baseline */
        if (!val[0]) {
            snprintf(err, errlen, "--baseline: empty path");
            return -1;
        }
        o->baselines[o->nbaselines++] = val;
        return 0;
    case 9:  /* --baseline-since */
    case 10: /* --baseline-until */
        if (time_flag(name, val, now_ms, f == 9 ? &o->base_since_ms : &o->base_until_ms, err,
                      errlen) != 0)
            return -1;
        *base_set |= f == 9 ? 1 : 2;
        return 0;
    case 11: /* --assert */
        return report_assert_parse(val, &o->asserts[o->nasserts++], err, errlen);
    }
    return 0;
}

/* ---- assertions ----------------------------------------------------------- */

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* WHAT at *P: 1xx..5xx, "code NNN", errors, count, p50, p95, p99. */
static int parse_what(const char **pp, struct report_assert *a)
{
    static const struct {
        const char *word;
        enum report_assert_what what;
    } words[] = {{"errors", REPORT_ASSERT_ERRORS}, {"count", REPORT_ASSERT_COUNT},
                 {"p50", REPORT_ASSERT_P50},       {"p95", REPORT_ASSERT_P95},
                 {"p99", REPORT_ASSERT_P99}};
    const char *p = *pp;
    if (p[0] >= '1' && p[0] <= '5' && p[1] == 'x' && p[2] == 'x') {
        a->what = REPORT_ASSERT_CLASS;
        a->arg = p[0] - '0';
        *pp = p + 3;
        return 0;
    }
    if (strncmp(p, "code", 4) == 0 && (p[4] == ' ' || p[4] == '\t')) {
        p = skip_space(p + 4);
        uint64_t code;
        if (units_scan_u64(p, 3, 0, 999, &code) != 3 || isdigit((unsigned char)p[3]) ||
            p[0] == '0')
            return -1;
        a->what = REPORT_ASSERT_CODE;
        a->arg = (int)code;
        *pp = p + 3;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_LEN(words); i++) {
        size_t n = strlen(words[i].word);
        if (strncmp(p, words[i].word, n) == 0) {
            a->what = words[i].what;
            *pp = p + n;
            return 0;
        }
    }
    return -1;
}

static int parse_op(const char **pp, enum report_assert_op *op)
{
    const char *p = *pp;
    if (p[0] == '=' && p[1] == '=')
        *op = REPORT_EQ, p += 2;
    else if (p[0] == '<' && p[1] == '=')
        *op = REPORT_LE, p += 2;
    else if (p[0] == '>' && p[1] == '=')
        *op = REPORT_GE, p += 2;
    else if (p[0] == '<')
        *op = REPORT_LT, p += 1;
    else if (p[0] == '>')
        *op = REPORT_GT, p += 1;
    else
        return -1;
    *pp = p;
    return 0;
}

/* VALUE: a count, a percentage ("1%", "0.5%") or a duration ("500ms", "2s"). */
static int parse_value(const char *p, struct report_assert *a)
{
    char *end;
    if (!isdigit((unsigned char)*p))
        return -1;
    double v = strtod(p, &end);
    const char *rest = skip_space(end);
    uint64_t ms;
    if (*rest == '\0') {
        a->unit = REPORT_UNIT_COUNT;
    } else if (rest[0] == '%' && *skip_space(rest + 1) == '\0') {
        a->unit = REPORT_UNIT_PERCENT;
    } else if (units_parse_duration(p, strlen(p), &ms) == 0) {
        a->unit = REPORT_UNIT_MS;
        v = (double)ms;
    } else {
        return -1;
    }
    a->value = v;
    return 0;
}

int report_assert_parse(const char *expr, struct report_assert *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->expr = expr;
    const char *p = skip_space(expr);
    const char *why = "expected WHAT OP VALUE, e.g. \"5xx < 1%\" or \"p99 < 500ms\"";
    if (parse_what(&p, a) != 0) {
        why = "expected 1xx..5xx, code NNN, errors, count, p50, p95 or p99 first";
    } else if (p = skip_space(p), parse_op(&p, &a->op) != 0) {
        why = "expected an operator: <, <=, >, >= or ==";
    } else if (parse_value(skip_space(p), a) != 0) {
        why = "expected a count, a percentage (1%) or a duration (500ms)";
    } else {
        int pct = a->what >= REPORT_ASSERT_P50;
        if (pct && a->unit != REPORT_UNIT_MS)
            why = "a percentile needs a duration (500ms)";
        else if (!pct && a->unit == REPORT_UNIT_MS)
            why = "a duration only goes with p50, p95 or p99";
        else if (a->what == REPORT_ASSERT_COUNT && a->unit == REPORT_UNIT_PERCENT)
            why = "count takes a number, not a percentage";
        else
            return 0;
    }
    snprintf(err, errlen, "--assert: malformed expression '%s': %s", expr, why);
    return -1;
}

/* Defaults, and room for ARGC values of each repeatable flag. */
static void options_init(struct report_options *o, int argc)
{
    memset(o, 0, sizeof *o);
    o->dbs = xcalloc((size_t)argc + 1, sizeof *o->dbs);
    o->baselines = xcalloc((size_t)argc + 1, sizeof *o->baselines);
    o->asserts = xcalloc((size_t)argc + 1, sizeof *o->asserts);
    o->since_ms = o->base_since_ms = INT64_MIN;
    o->until_ms = o->base_until_ms = INT64_MAX;
}

/* Flags that only make sense together. RANGE: --since and --until were both
 * given; BASE_SET: 1 --baseline-since, 2 --baseline-until. */
static int check_combination(struct report_options *o, int range, int base_set, char *err,
                             size_t errlen)
{
    if (o->ndbs == 0) {
        snprintf(err, errlen, "--db: required (the database to report on)");
        return -1;
    }
    if (range && o->until_ms <= o->since_ms) {
        snprintf(err, errlen, "--until: must be later than --since");
        return -1;
    }
    if (base_set && base_set != 3) {
        snprintf(err, errlen, "%s: needs %s too",
                 base_set == 1 ? "--baseline-since" : "--baseline-until",
                 base_set == 1 ? "--baseline-until" : "--baseline-since");
        return -1;
    }
    o->base_window = base_set == 3;
    if (o->base_window && o->base_until_ms <= o->base_since_ms) {
        snprintf(err, errlen, "--baseline-until: must be later than --baseline-since");
        return -1;
    }
    if (o->view == REPORT_BY_RETRY && (o->nbaselines || o->base_window)) {
        snprintf(err, errlen, "--baseline: not available with --by retry");
        return -1;
    }
    if (o->view == REPORT_BY_RETRY && o->format == REPORT_HTML && !o->nasserts) {
        /* The HTML page shows the aggregate views; retries come from raw rows. */
        snprintf(err, errlen, "--format: html is not available with --by retry (table, json, csv)");
        return -1;
    }
    return 0;
}

/* The flags of DESIGN §11 that come first in report_parse_args' list
 * (index F). *RANGE_SET collects 1 for --since, 2 for --until. */
static int parse_flag(int f, const char *name, const char *val, int64_t now_ms,
                      struct report_options *o, int *range_set, int *base_set, char *err,
                      size_t errlen)
{
    char names[96];
    int k;
    switch (f) {
    case 0: /* --db */
        if (!val[0]) {
            snprintf(err, errlen, "--db: empty path");
            return -1;
        }
        o->dbs[o->ndbs++] = val;
        return 0;
    case 1: /* --by */
        if ((k = pick(val, view_names, ARRAY_LEN(view_names))) < 0) {
            list_names(names, sizeof names, view_names, ARRAY_LEN(view_names));
            snprintf(err, errlen, "--by: expected %s, got '%s'", names, val);
            return -1;
        }
        o->view = (enum report_view)k;
        return 0;
    case 2: /* --since */
    case 3: /* --until */
        if (time_flag(name, val, now_ms, f == 2 ? &o->since_ms : &o->until_ms, err, errlen) != 0)
            return -1;
        *range_set |= f == 2 ? 1 : 2;
        return 0;
    case 4: /* --host */
        if (!val[0]) {
            snprintf(err, errlen, "--host: empty pattern");
            return -1;
        }
        o->host_glob = val;
        return 0;
    case 5: { /* --top */
        uint64_t n;
        if (units_parse_u64(val, strlen(val), 1000000000, &n) != 0 || n == 0) {
            snprintf(err, errlen, "--top: expected a positive number, got '%s'", val);
            return -1;
        }
        o->top = (size_t)n;
        return 0;
    }
    case 6: /* --format */
        if ((k = pick(val, format_names, ARRAY_LEN(format_names))) < 0) {
            list_names(names, sizeof names, format_names, ARRAY_LEN(format_names));
            snprintf(err, errlen, "--format: expected %s, got '%s'", names, val);
            return -1;
        }
        o->format = (enum report_format)k;
        return 0;
    }
    return parse_more(f, name, val, now_ms, o, base_set, err, errlen);
}

/* Splits argv[*I] ("--flag value" or "--flag=value") into NAME (NAMESZ bytes)
 * and *VAL, stepping *I past a separate value. Returns the flag's index in
 * FLAGS, or -1 with ERR set. */
static int split_flag(int argc, char **argv, int *i, const char *const *flags, size_t nflags,
                      char *name, size_t namesz, const char **val, char *err, size_t errlen)
{
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    size_t nlen = strlen(arg);
    if (eq && strncmp(arg, "--", 2) == 0)
        nlen = (size_t)(eq - arg);
    snprintf(name, namesz, "%.*s", (int)(nlen < namesz ? nlen : namesz - 1), arg);
    int f = nlen < namesz ? pick(name, flags, nflags) : -1;
    if (f < 0) {
        if (arg[0] == '-')
            snprintf(err, errlen, "%.*s: unknown option", (int)nlen, arg);
        else
            snprintf(err, errlen, "unexpected argument '%s'", arg);
        return -1;
    }
    if (nlen < strlen(arg)) {
        *val = arg + nlen + 1;
    } else if (*i + 1 < argc) {
        *val = argv[++*i];
    } else {
        snprintf(err, errlen, "%s: missing value", name);
        return -1;
    }
    return f;
}

int report_parse_args(int argc, char **argv, int64_t now_ms, struct report_options *o, char *err,
                      size_t errlen)
{
    static const char *const flags[] = {"--db",    "--by",       "--since",          "--until",
                                        "--host",  "--top",      "--format",         "--route",
                                        "--baseline", "--baseline-since", "--baseline-until",
                                        "--assert"};
    options_init(o, argc);
    int range_set = 0, base_set = 0;
    for (int i = 0; i < argc; i++) {
        char name[24];
        const char *val = NULL;
        int f = split_flag(argc, argv, &i, flags, ARRAY_LEN(flags), name, sizeof name, &val, err,
                           errlen);
        if (f < 0 || parse_flag(f, name, val, now_ms, o, &range_set, &base_set, err, errlen) != 0)
            goto fail;
    }
    if (check_combination(o, range_set == 3, base_set, err, errlen) != 0)
        goto fail;
    return 0;
fail:
    report_options_free(o);
    return -1;
}

void report_options_free(struct report_options *o)
{
    free(o->baselines);
    free(o->asserts);
    o->baselines = NULL;
    o->asserts = NULL;
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
    COL_ROUTE = 1 << 5,
    COL_HIST = 1 << 6,   /* the merged duration histogram (percentiles) */
    COL_SCHEME = 1 << 7,
};

static const unsigned view_cols[] = {
    [REPORT_BY_CODE] = COL_FINAL | COL_HIST,
    [REPORT_BY_CLASS] = COL_FINAL,
    [REPORT_BY_HOST] = COL_HOST | COL_SCHEME | COL_FINAL | COL_HIST,
    [REPORT_BY_RULE] = COL_RULE | COL_HIST,
    [REPORT_BY_REWRITE] = COL_UPSTREAM | COL_FINAL | COL_RULE,
    [REPORT_BY_MINUTE] = COL_MINUTE | COL_FINAL,
    [REPORT_BY_ROUTE] = COL_HOST | COL_ROUTE | COL_FINAL | COL_HIST,
};

/* What --assert reads: classes, codes, answers missing, percentiles. */
static const unsigned assert_cols = COL_UPSTREAM | COL_FINAL | COL_HIST;

static const unsigned html_parts[] = {
    COL_MINUTE | COL_FINAL,               /* class, minute and the chart */
    COL_HOST | COL_SCHEME | COL_FINAL | COL_HIST, /* code, host */
    COL_UPSTREAM | COL_FINAL | COL_RULE | COL_HIST,  /* rule, rewrite */
    COL_HOST | COL_ROUTE | COL_FINAL | COL_HIST,     /* route */
};

/* Baselines are loaded as parts numbered from here. */
#define BASE_PART 16

static int html_part(enum report_view v)
{
    switch (v) {
    case REPORT_BY_CODE:
    case REPORT_BY_HOST:
        return 1;
    case REPORT_BY_RULE:
    case REPORT_BY_REWRITE:
        return 2;
    case REPORT_BY_ROUTE:
        return 3;
    default:
        return 0;
    }
}

static void sqlite_glob_free(void *g)
{
    glob_free(g);
}

static void sql_glob(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    UNUSED(argc);
    const unsigned char *glob = sqlite3_value_text(argv[0]);
    const unsigned char *host = sqlite3_value_text(argv[1]);
    if (!glob || !host) {
        sqlite3_result_int(ctx, 0);
        return;
    }
    /* The pattern is a bound parameter, the same on every row: compile it
     * once per statement and keep it as SQLite auxiliary data. */
    struct glob *g = sqlite3_get_auxdata(ctx, 0);
    int fresh = g == NULL;
    if (fresh)
        g = glob_compile((const char *)glob, strlen((const char *)glob), GLOB_ICASE);
    sqlite3_result_int(ctx, glob_match(g, (const char *)host, strlen((const char *)host)));
    /* Last: SQLite may free G at once (it then runs the destructor). */
    if (fresh)
        sqlite3_set_auxdata(ctx, 0, g, sqlite_glob_free);
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

/* The query of SRC's aggregate rows in the range for COLS: the seven key
 * columns (NULL when not wanted; absent values as NULL), count and hist.
 * Malloc'd. */
static char *part_query(sqlite3 *src, const struct report_options *o, unsigned cols)
{
    static const struct {
        unsigned col;
        const char *expr;
    } fields[] = {
        {COL_MINUTE, "minute"},
        {COL_HOST, "host"},
        {COL_SCHEME, "scheme"},
        {COL_UPSTREAM, "NULLIF(upstream_code, -1)"},
        {COL_FINAL, "NULLIF(final_code, -1)"},
        {COL_RULE, "NULLIF(rule, '')"},
        {COL_ROUTE, "NULLIF(route, '')"},
    };
    /* A file older than schema 4 (read-only: never migrated here) has no
     * routes nor histograms: its rows count with route NULL and no durations. */
    int version = db_version(src), v4 = version >= 4;
    struct sbuf q = {0};
    sbuf_puts(&q, "SELECT ");
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        int want = cols & fields[i].col && (v4 || fields[i].col != COL_ROUTE);
        /* Before schema 5 every exchange was cleartext HTTP (schema 5's
         * migration says the same of the rows it converts). */
        if (want && fields[i].col == COL_SCHEME && version < 5)
            sbuf_puts(&q, "'http', ");
        else
            sbuf_printf(&q, "%s, ", want ? fields[i].expr : "NULL");
    }
    sbuf_printf(&q, "count, %s FROM minute_stats WHERE minute >= ?1 AND minute < ?2%s%s",
                v4 && cols & COL_HIST ? "hist" : "NULL",
                o->host_glob ? " AND sp_glob(?3, host)" : "",
                o->route_glob ? (v4 ? " AND sp_glob(?4, route)" : " AND sp_glob(?4, '')") : "");
    return sbuf_steal(&q);
}

/* Copy SRC's aggregates in the range, summed by the columns COLS, into
 * MEM's cells as PART. The rows are read in storage order and summed in
 * memory (report_group.c): no sort. */
static int copy_part(sqlite3 *src, sqlite3 *mem, const struct report_options *o, unsigned cols,
                     int part, const char *path, char *err, size_t errlen)
{
    char *sql = part_query(src, o, cols);
    sqlite3_stmt *sel = NULL, *ins = NULL;
    struct report_group *g = report_group_new();
    int64_t lo, hi;
    minute_bounds(o, &lo, &hi);
    int rc = -1, step;
    if (sqlite3_prepare_v2(src, sql, -1, &sel, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(src));
        goto done;
    }
    if (sqlite3_prepare_v2(mem, "INSERT INTO cells VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           -1, &ins, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "merging %s: %s", path, sqlite3_errmsg(mem));
        goto done;
    }
    sqlite3_bind_int64(sel, 1, lo);
    sqlite3_bind_int64(sel, 2, hi);
    if (o->host_glob)
        sqlite3_bind_text(sel, 3, o->host_glob, -1, SQLITE_STATIC);
    if (o->route_glob)
        sqlite3_bind_text(sel, 4, o->route_glob, -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 1, part);
    while ((step = sqlite3_step(sel)) == SQLITE_ROW)
        report_group_add(g, sel, 7);
    if (step != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(src));
        goto done;
    }
    if (report_group_flush(g, ins, 7) != 0) {
        snprintf(err, errlen, "merging %s: %s", path, sqlite3_errmsg(mem));
        goto done;
    }
    rc = 0;
done:
    report_group_free(g);
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    free(sql);
    return rc;
}

/* Open PATH read-only for a report, with its SQL functions. */
static sqlite3 *open_source(const char *path, char *err, size_t errlen)
{
    sqlite3 *src = db_open(path, DB_READ_ONLY, err, errlen);
    if (!src)
        return NULL;
    sqlite3_create_function(src, "sp_glob", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_glob,
                            NULL, NULL);
    return src;
}

/* Open PATH read-only, copy its aggregates in the range into MEM as the parts
 * PARTS[0..n), and add its lost records to *DROPPED. Returns 0 or -1 (ERR). */
static int load_source(sqlite3 *mem, const char *path, const struct report_options *o,
                       const unsigned *parts, size_t nparts, int part0, uint64_t *dropped,
                       char *err, size_t errlen)
{
    sqlite3 *src = open_source(path, err, errlen);
    if (!src)
        return -1;
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
        if (copy_part(src, mem, o, parts[i], part0 + (int)i, path, err, errlen) != 0)
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
                     "CREATE TABLE cells (part INTEGER NOT NULL, minute INTEGER, host TEXT, scheme TEXT,"
                     " upstream_code INTEGER, final_code INTEGER, rule TEXT, route TEXT,"
                     " count INTEGER NOT NULL, hist BLOB)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "in-memory database: %s", mem ? sqlite3_errmsg(mem) : "no memory");
        sqlite3_close(mem);
        return NULL;
    }
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
    sqlite3_create_function(mem, "status_name", 1, flags, NULL, sql_status_name, NULL, NULL);
    sqlite3_create_function(mem, "status_class", 1, flags, NULL, sql_status_class, NULL, NULL);
    sqlfn_register(mem);
    return mem;
}

/* ---- views -------------------------------------------------------------- */

#define CLASS_SUMS                                                                                 \
    " sum(CASE WHEN final_code BETWEEN 100 AND 199 THEN count ELSE 0 END) AS \"1xx\","             \
    " sum(CASE WHEN final_code BETWEEN 200 AND 299 THEN count ELSE 0 END) AS \"2xx\","             \
    " sum(CASE WHEN final_code BETWEEN 300 AND 399 THEN count ELSE 0 END) AS \"3xx\","             \
    " sum(CASE WHEN final_code BETWEEN 400 AND 499 THEN count ELSE 0 END) AS \"4xx\","             \
    " sum(CASE WHEN final_code BETWEEN 500 AND 599 THEN count ELSE 0 END) AS \"5xx\""

#define PCTS                                                                                       \
    " sp_hist_ms(h, 0.5) AS p50_ms, sp_hist_ms(h, 0.95) AS p95_ms, sp_hist_ms(h, 0.99) AS p99_ms"

/* ?1 is the total for shares, ?2 the row limit (-1: none), ?3 the part to
 * read. Ties are broken by the key, ascending, absent values last, so output
 * is deterministic. Views with percentiles merge the histograms of their
 * group in an inner query (h) and read three quantiles from it. */
static const char *const view_sql[] = {
    [REPORT_BY_CODE] =
        "SELECT code, status_name(code) AS name, status_class(code) AS class, count,"
        " count * 1.0 / ?1 AS share," PCTS
        " FROM (SELECT final_code AS code, sum(count) AS count, sp_hist_sum(hist) AS h"
        " FROM cells WHERE part = ?3 GROUP BY final_code)"
        " ORDER BY count DESC, code IS NULL, code LIMIT ?2",
    [REPORT_BY_CLASS] =
        "SELECT status_class(final_code) AS class, sum(count) AS count,"
        " sum(count) * 1.0 / ?1 AS share FROM cells WHERE part = ?3"
        " GROUP BY status_class(final_code)"
        " ORDER BY count DESC, class IS NULL, class LIMIT ?2",
    /* One row per origin, scheme and host: the same host over http and
     * https are two servers to a client, and a blind tunnel's 200s would
     * hide the failures of the host's exchanges if they were summed. */
    [REPORT_BY_HOST] =
        "SELECT host, scheme, count, \"1xx\", \"2xx\", \"3xx\", \"4xx\", \"5xx\"," PCTS
        " FROM (SELECT host, scheme, sum(count) AS count," CLASS_SUMS ", sp_hist_sum(hist) AS h"
        " FROM cells WHERE part = ?3 GROUP BY host, scheme)"
        " ORDER BY count DESC, host, scheme LIMIT ?2",
    [REPORT_BY_RULE] =
        "SELECT rule, count," PCTS
        " FROM (SELECT rule, sum(count) AS count, sp_hist_sum(hist) AS h FROM cells"
        " WHERE part = ?3 AND rule IS NOT NULL GROUP BY rule)"
        " ORDER BY count DESC, rule LIMIT ?2",
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
    /* A NULL route: aggregates written before schema 4 (no path was kept). */
    [REPORT_BY_ROUTE] =
        "SELECT host, route, count, \"1xx\", \"2xx\", \"3xx\", \"4xx\", \"5xx\"," PCTS
        " FROM (SELECT host, route, sum(count) AS count," CLASS_SUMS ", sp_hist_sum(hist) AS h"
        " FROM cells WHERE part = ?3 GROUP BY host, route)"
        " ORDER BY count DESC, host, route IS NULL, route LIMIT ?2",
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
    r->name = view_names[view];
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
    case REPORT_BOOL:
        sbuf_puts(out, v->i ? "true" : "false");
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
            else if (v->type == REPORT_BOOL)
                sbuf_puts(out, v->i ? "true" : "false");
        }
        sbuf_puts(out, "\r\n");
    }
}

/* Text for a terminal: absent values as "-", shares as percentages, and no
 * control characters (a Host header is outside data). */
static char *cell_text(const struct report_value *v, const char *col)
{
    int is_share = strstr(col, "share") != NULL;
    switch (v->type) {
    case REPORT_NULL:
        return xstrdup("-");
    case REPORT_INT:
        return xasprintf("%lld", (long long)v->i);
    case REPORT_REAL:
        if (is_share)
            return xasprintf(strncmp(col, "delta", 5) == 0 ? "%+.1f%%" : "%.1f%%", v->r * 100.0);
        return xasprintf("%g", v->r);
    case REPORT_BOOL:
        return xstrdup(v->i ? "yes" : "no");
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
            text[i * nc + c] = cell_text(v, r->cols[c]);
            size_t w = strlen(text[i * nc + c]);
            if (w > width[c])
                width[c] = w;
            if (v->type == REPORT_TEXT)
                right[c] = 0;
        }
        /* Columns of names stay left-aligned even when every value is absent. */
        if (strcmp(r->cols[c], "name") == 0 || strcmp(r->cols[c], "class") == 0 ||
            strcmp(r->cols[c], "host") == 0 || strcmp(r->cols[c], "rule") == 0 ||
            strcmp(r->cols[c], "scheme") == 0 ||
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

/* ---- comparison with a baseline ------------------------------------------ */

static int col_index(const struct report_result *r, const char *name)
{
    for (size_t c = 0; c < r->ncols; c++)
        if (strcmp(r->cols[c], name) == 0)
            return (int)c;
    return -1;
}

static int value_equal(const struct report_value *a, const struct report_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case REPORT_NULL: return 1;
    case REPORT_INT:
    case REPORT_BOOL: return a->i == b->i;
    case REPORT_REAL: return a->r == b->r;
    case REPORT_TEXT: return strcmp(a->s, b->s) == 0;
    }
    return 0;
}

static struct report_value copy_value(const struct report_value *v)
{
    struct report_value c = *v;
    if (v->type == REPORT_TEXT)
        c.s = xstrdup(v->s);
    return c;
}

/* The row of BASE whose key (the columns before "count") equals row I of CUR. */
static long find_key(const struct report_result *cur, size_t i, const struct report_result *base,
                     size_t nkey)
{
    for (size_t j = 0; j < base->nrows; j++) {
        size_t k = 0;
        while (k < nkey && value_equal(&cur->cells[i * cur->ncols + k],
                                       &base->cells[j * base->ncols + k]))
            k++;
        if (k == nkey)
            return (long)j;
    }
    return -1;
}

static struct report_value num_int(int64_t i)
{
    return (struct report_value){.type = REPORT_INT, .i = i};
}

static struct report_value num_real(double r)
{
    return (struct report_value){.type = REPORT_REAL, .r = r};
}

/* Fill the comparison cells of OUT's row R: counts C (current) and B (base),
 * p99s P and BP (NULL values when absent). */
static void put_deltas(struct report_result *out, size_t r, size_t first, int64_t c, int64_t b,
                       uint64_t total, uint64_t base_total, const struct report_value *p,
                       const struct report_value *bp)
{
    struct report_value *row = &out->cells[r * out->ncols + first];
    double share = total ? (double)c / (double)total : 0;
    double bshare = base_total ? (double)b / (double)base_total : 0;
    row[0] = num_int(b);
    row[1] = num_real(bshare);
    row[2] = num_real(share - bshare);
    if (out->ncols - first < 5)
        return;
    row[3] = bp && bp->type == REPORT_REAL ? *bp : (struct report_value){0};
    /* Rounded to the microsecond the percentiles are counted in. */
    row[4] = p && bp && p->type == REPORT_REAL && bp->type == REPORT_REAL
                 ? num_real(round((p->r - bp->r) * 1000) / 1000) : (struct report_value){0};
}

/* CUR with base_count, base_share, delta_share (and base_p99_ms,
 * delta_p99_ms when it has p99_ms) from BASE; keys only in BASE follow as
 * rows with zero counts. TOP then keeps the first rows. CUR is replaced. */
static void merge_baseline(struct report_result *cur, const struct report_result *base,
                           size_t top)
{
    int ccount = col_index(cur, "count"), cp99 = col_index(cur, "p99_ms");
    size_t nkey = (size_t)ccount, extra = cp99 >= 0 ? 5 : 3, first = cur->ncols;
    struct report_result out = *cur;
    out.ncols = cur->ncols + extra;
    out.cols = xcalloc(out.ncols, sizeof *out.cols);
    static const char *const names[] = {"base_count", "base_share", "delta_share", "base_p99_ms",
                                        "delta_p99_ms"};
    for (size_t c = 0; c < out.ncols; c++)
        out.cols[c] = xstrdup(c < first ? cur->cols[c] : names[c - first]);
    char *used = xcalloc(base->nrows + 1, 1);
    out.cells = xcalloc((cur->nrows + base->nrows) * out.ncols + 1, sizeof *out.cells);
    out.nrows = 0;
    for (size_t i = 0; i < cur->nrows; i++, out.nrows++) {
        const struct report_value *row = &cur->cells[i * cur->ncols];
        for (size_t c = 0; c < first; c++)
            out.cells[i * out.ncols + c] = copy_value(&row[c]);
        long j = find_key(cur, i, base, nkey);
        const struct report_value *brow = j >= 0 ? &base->cells[(size_t)j * base->ncols] : NULL;
        if (j >= 0)
            used[j] = 1;
        put_deltas(&out, i, first, row[ccount].i, brow ? brow[ccount].i : 0, cur->total,
                   base->total, cp99 >= 0 ? &row[cp99] : NULL, brow && cp99 >= 0 ? &brow[cp99] : NULL);
    }
    for (size_t j = 0; j < base->nrows; j++) {
        if (used[j])
            continue;
        const struct report_value *brow = &base->cells[j * base->ncols];
        struct report_value *row = &out.cells[out.nrows * out.ncols];
        for (size_t c = 0; c < first; c++)
            row[c] = c < nkey ? copy_value(&brow[c])
                     : brow[c].type == REPORT_INT ? num_int(0)
                     : brow[c].type == REPORT_REAL && strcmp(cur->cols[c], "share") == 0
                         ? num_real(0) : (struct report_value){0};
        put_deltas(&out, out.nrows, first, 0, brow[ccount].i, cur->total, base->total, NULL,
                   cp99 >= 0 ? &brow[cp99] : NULL);
        out.nrows++;
    }
    free(used);
    if (top && out.nrows > top) {
        for (size_t i = top * out.ncols; i < out.nrows * out.ncols; i++)
            free(out.cells[i].s);
        out.nrows = top;
    }
    report_result_free(cur);
    *cur = out;
}

/* ---- assertions --------------------------------------------------------- */

/* The measured value of A over part PART of MEM: a count, a percentage of
 * TOTAL or milliseconds. Returns 0, or -1 when there is nothing to measure
 * (a percentile of no exchanges). */
static int measure(sqlite3 *mem, int part, const struct report_assert *a, uint64_t total,
                   double *out)
{
    static const char *const where[] = {
        [REPORT_ASSERT_CLASS] = "final_code BETWEEN ?2 * 100 AND ?2 * 100 + 99",
        [REPORT_ASSERT_CODE] = "final_code = ?2",
        [REPORT_ASSERT_ERRORS] = "upstream_code IS NULL",
        [REPORT_ASSERT_COUNT] = "1",
    };
    static const double q[] = {[REPORT_ASSERT_P50] = 0.5, [REPORT_ASSERT_P95] = 0.95,
                               [REPORT_ASSERT_P99] = 0.99};
    int pct = a->what >= REPORT_ASSERT_P50;
    char sql[160];
    if (pct)
        snprintf(sql, sizeof sql, "SELECT sp_hist_ms(sp_hist_sum(hist), %g) FROM cells"
                 " WHERE part = ?1", q[a->what]);
    else
        snprintf(sql, sizeof sql, "SELECT coalesce(sum(count), 0) FROM cells WHERE part = ?1"
                 " AND %s", where[a->what]);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(mem, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int(st, 1, part);
        if (a->what == REPORT_ASSERT_CLASS || a->what == REPORT_ASSERT_CODE)
            sqlite3_bind_int(st, 2, a->arg);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *out = sqlite3_column_double(st, 0);
            if (a->unit == REPORT_UNIT_PERCENT)
                *out = total ? *out * 100.0 / (double)total : 0;
            rc = 0;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int compare(double v, enum report_assert_op op, double want)
{
    switch (op) {
    case REPORT_LT: return v < want;
    case REPORT_LE: return v <= want;
    case REPORT_GT: return v > want;
    case REPORT_GE: return v >= want;
    case REPORT_EQ: return v == want;
    }
    return 0;
}

/* Print PASS/FAIL EXPR (measured V) per assertion; 1 when any failed. */
static int run_asserts(sqlite3 *mem, const struct report_options *o, uint64_t total,
                       struct sbuf *out)
{
    int failed = 0;
    for (size_t i = 0; i < o->nasserts; i++) {
        const struct report_assert *a = &o->asserts[i];
        double v = 0;
        char shown[48];
        int have = measure(mem, 0, a, total, &v) == 0;
        int ok = have && compare(v, a->op, a->value);
        if (!have)
            snprintf(shown, sizeof shown, "no exchanges");
        else if (a->unit == REPORT_UNIT_PERCENT)
            snprintf(shown, sizeof shown, "%.3g%%", v);
        else if (a->unit == REPORT_UNIT_MS)
            snprintf(shown, sizeof shown, "%.1fms", v);
        else
            snprintf(shown, sizeof shown, "%.0f", v);
        sbuf_printf(out, "%s %s (measured %s)\n", ok ? "PASS" : "FAIL", a->expr, shown);
        failed |= !ok;
    }
    return failed;
}

/* ---- running ------------------------------------------------------------ */

/* Load the --db files (parts from 0) and the baseline (parts from
 * BASE_PART): --baseline files, or the --baseline-since window of the --db
 * files. *BASE is set when there is a baseline. */
static int load_all(sqlite3 *mem, const struct report_options *o, const unsigned *parts,
                    size_t nparts, uint64_t *dropped, int *base, char *err, size_t errlen)
{
    for (size_t i = 0; i < o->ndbs; i++)
        if (load_source(mem, o->dbs[i], o, parts, nparts, 0, dropped, err, errlen) != 0)
            return -1;
    *base = o->nbaselines > 0 || o->base_window;
    if (!*base)
        return 0;
    struct report_options bo = *o;
    if (o->base_window) {
        bo.since_ms = o->base_since_ms;
        bo.until_ms = o->base_until_ms;
    }
    const char **files = o->nbaselines ? o->baselines : o->dbs;
    size_t nfiles = o->nbaselines ? o->nbaselines : o->ndbs;
    uint64_t ignored = 0;
    for (size_t i = 0; i < nfiles; i++)
        if (load_source(mem, files[i], &bo, parts, nparts, BASE_PART, &ignored, err, errlen) != 0)
            return -1;
    return 0;
}

static uint64_t part_total(sqlite3 *mem, int part)
{
    sqlite3_stmt *st = NULL;
    uint64_t total = 0;
    if (sqlite3_prepare_v2(mem, "SELECT coalesce(sum(count), 0) FROM cells WHERE part = ?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int(st, 1, part);
        if (sqlite3_step(st) == SQLITE_ROW)
            total = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return total;
}

/* One view (of part PART) with its totals, compared with the baseline when
 * there is one. */
static int view_with_base(sqlite3 *mem, enum report_view v, int part, int base, size_t top,
                          uint64_t total, uint64_t base_total, uint64_t dropped,
                          struct report_result *r, char *err, size_t errlen)
{
    if (query_view(mem, v, part, base ? 0 : top, total, r, err, errlen) != 0)
        return -1;
    r->total = total;
    r->dropped = dropped;
    if (!base)
        return 0;
    struct report_result b;
    if (query_view(mem, v, part + BASE_PART, 0, base_total, &b, err, errlen) != 0) {
        report_result_free(r);
        return -1;
    }
    b.total = base_total;
    merge_baseline(r, &b, top);
    report_result_free(&b);
    return 0;
}

static int run_html(sqlite3 *mem, const struct report_options *o, int64_t now_ms, int base,
                    uint64_t dropped, struct sbuf *out, char *err, size_t errlen)
{
    struct report_result views[REPORT_AGG_VIEWS];
    uint64_t total = part_total(mem, 0), base_total = part_total(mem, BASE_PART);
    struct report_page page = {.opts = o, .generated_ms = now_ms, .total = total,
                               .dropped = dropped, .has_base = base, .base_total = base_total};
    struct report_chart_point *points = NULL, *base_points = NULL;
    size_t done = 0;
    int rc = -1;
    for (; done < REPORT_AGG_VIEWS; done++) {
        enum report_view v = (enum report_view)done;
        if (view_with_base(mem, v, html_part(v), base, o->top, total, base_total, dropped,
                           &views[done], err, errlen) != 0)
            goto out;
        page.views[done] = &views[done];
    }
    if (query_chart(mem, 0, &points, &page.npoints, err, errlen) != 0 ||
        (base && query_chart(mem, BASE_PART, &base_points, &page.base_npoints, err, errlen) != 0))
        goto out;
    page.points = points;
    page.base_points = base_points;
    report_html_write(&page, out);
    rc = 0;
out:
    for (size_t i = 0; i < done; i++)
        report_result_free(&views[i]);
    free(points);
    free(base_points);
    return rc;
}

static void write_result(const struct report_result *r, enum report_format f, struct sbuf *out)
{
    switch (f) {
    case REPORT_TABLE:
        report_write_table(r, out);
        break;
    case REPORT_JSON:
        report_write_json(r, out);
        break;
    case REPORT_CSV:
        report_write_csv(r, out);
        break;
    case REPORT_HTML:
        break;
    }
}

/* --by retry: raw rows of every --db, merged by time. */
static int run_retry(const struct report_options *o, struct sbuf *out, char *err, size_t errlen)
{
    struct report_retry *rt = report_retry_new();
    sqlite3 **srcs = xcalloc(o->ndbs + 1, sizeof *srcs);
    uint64_t raw = 0;
    int rc = -1;
    for (size_t i = 0; i < o->ndbs; i++)
        if (!(srcs[i] = open_source(o->dbs[i], err, errlen)))
            goto out;
    if (report_retry_scan(rt, srcs, o->ndbs, o, &raw, err, errlen) != 0)
        goto out;
    if (raw == 0) {
        snprintf(err, errlen,
                 "--by retry: %s no raw rows (written with --log-exchanges none?); "
                 "retries are seen only in raw rows",
                 o->ndbs > 1 ? "these databases have" : "the database has");
        goto out;
    }
    struct report_result r;
    report_retry_result(rt, o->top, &r);
    write_result(&r, o->format, out);
    report_result_free(&r);
    rc = 0;
out:
    for (size_t i = 0; i < o->ndbs; i++)
        db_close(srcs[i]);
    free(srcs);
    report_retry_free(rt);
    return rc;
}

int report_run(const struct report_options *o, int64_t now_ms, struct sbuf *out, char *err,
               size_t errlen)
{
    if (o->view == REPORT_BY_RETRY && !o->nasserts && o->format != REPORT_HTML)
        return run_retry(o, out, err, errlen);
    sqlite3 *mem = open_cells(err, errlen);
    if (!mem)
        return -1;
    int html = o->format == REPORT_HTML && !o->nasserts;
    const unsigned *parts = o->nasserts ? &assert_cols : html ? html_parts : &view_cols[o->view];
    size_t nparts = html ? ARRAY_LEN(html_parts) : 1;
    uint64_t dropped = 0;
    int rc = -1, base = 0;
    if (sqlite3_exec(mem, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "report: cannot start a transaction: %s", sqlite3_errmsg(mem));
        goto out;
    }
    if (load_all(mem, o, parts, nparts, &dropped, &base, err, errlen) != 0)
        goto out;
    if (sqlite3_exec(mem, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "report: cannot commit the merged counts: %s", sqlite3_errmsg(mem));
        goto out;
    }
    uint64_t total = part_total(mem, 0);
    if (o->nasserts) {
        rc = run_asserts(mem, o, total, out);
        goto out;
    }
    if (html) {
        rc = run_html(mem, o, now_ms, base, dropped, out, err, errlen);
        goto out;
    }
    struct report_result r;
    if (view_with_base(mem, o->view, 0, base, o->top, total, part_total(mem, BASE_PART), dropped,
                       &r, err, errlen) != 0)
        goto out;
    write_result(&r, o->format, out);
    report_result_free(&r);
    rc = 0;
out:
    sqlite3_close(mem);
    return rc;
}
