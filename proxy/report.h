/*
 * report — `statusproxy report`: status statistics from one or more audit
 * databases, read from their per-minute aggregates (never the raw rows, so a
 * report over millions of exchanges stays fast), merged across files and
 * written as an aligned table, JSON, CSV or one self-contained HTML page.
 * Databases are opened read-only; nothing is created or changed. The output
 * goes to a caller's buffer: this module neither prints nor exits.
 */
#ifndef STATUSPROXY_REPORT_H
#define STATUSPROXY_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum report_view {
    REPORT_BY_CODE,
    REPORT_BY_CLASS,
    REPORT_BY_HOST,
    REPORT_BY_RULE,
    REPORT_BY_REWRITE,
    REPORT_BY_MINUTE,
    REPORT_BY_ROUTE,         /* DESIGN §11 */
    REPORT_BY_RETRY,         /* from raw rows, not the aggregates */
};
/* The views read from the aggregates (and shown on the HTML page). */
#define REPORT_AGG_VIEWS (REPORT_BY_ROUTE + 1)

/* --assert WHAT OP VALUE (DESIGN §11). */
enum report_assert_what {
    REPORT_ASSERT_CLASS,     /* 1xx..5xx: arg is the class digit */
    REPORT_ASSERT_CODE,      /* code NNN: arg is the code */
    REPORT_ASSERT_ERRORS,    /* exchanges that got no upstream answer */
    REPORT_ASSERT_COUNT,
    REPORT_ASSERT_P50,
    REPORT_ASSERT_P95,
    REPORT_ASSERT_P99,
};
enum report_assert_op { REPORT_LT, REPORT_LE, REPORT_GT, REPORT_GE, REPORT_EQ };
enum report_assert_unit { REPORT_UNIT_COUNT, REPORT_UNIT_PERCENT, REPORT_UNIT_MS };
struct report_assert {
    const char *expr;        /* as given, borrowed from argv */
    enum report_assert_what what;
    int arg;
    enum report_assert_op op;
    enum report_assert_unit unit;
    double value;            /* a count, a percentage (1 for 1%) or milliseconds */
};

enum report_format { REPORT_TABLE, REPORT_JSON, REPORT_CSV, REPORT_HTML };

struct report_options {
    const char **dbs;        /* paths, borrowed from argv; the array is owned */
    size_t ndbs;
    enum report_view view;
    enum report_format format;
    int64_t since_ms;        /* INT64_MIN: from the beginning */
    int64_t until_ms;        /* INT64_MAX: up to now and beyond */
    const char *host_glob;   /* borrowed from argv; NULL: every host */
    const char *route_glob;  /* borrowed from argv; NULL: every route */
    size_t top;              /* 0: every row */
    const char **baselines;  /* --baseline paths; the array is owned */
    size_t nbaselines;
    int64_t base_since_ms;   /* --baseline-since/--baseline-until: a window of the --db files */
    int64_t base_until_ms;
    int base_window;         /* those were given */
    struct report_assert *asserts; /* owned array */
    size_t nasserts;
};

/* One value of a result: what SQLite gave, so JSON can say number/string/null. */
enum report_type { REPORT_NULL, REPORT_INT, REPORT_REAL, REPORT_TEXT, REPORT_BOOL };
struct report_value {
    enum report_type type;
    int64_t i;
    double r;
    char *s;                 /* owned */
};

/* The rows of one view: the field names of DESIGN §6, in order. */
struct report_result {
    enum report_view view;
    const char *name;        /* the view's name for --by, static */
    size_t ncols, nrows;
    char **cols;             /* owned */
    struct report_value *cells; /* nrows * ncols, row-major, owned */
    uint64_t total;          /* exchanges in the range (before the view's own filter) */
    uint64_t dropped;        /* records lost in the range (the host filter does not apply) */
};

/* Parse the arguments after "report". NOW_MS anchors durations ("1h" back
 * from now). Returns 0, or -1 with one line in ERR that names the bad flag
 * (the caller exits 2). On success free the options with report_options_free. */
int report_parse_args(int argc, char **argv, int64_t now_ms, struct report_options *o, char *err,
                      size_t errlen);
void report_options_free(struct report_options *o);

/* Run the report and append its text to OUT. Returns 0; 1 when an --assert
 * failed (OUT holds every PASS/FAIL line); or -1 with a message in ERR (a
 * database missing, not ours, too new or too old, or --by retry over
 * databases without raw rows: the caller exits 1). */
int report_run(const struct report_options *o, int64_t now_ms, struct sbuf *out, char *err,
               size_t errlen);

/* Parse T as a duration back from NOW_MS ("90s", "1h", "7d") or an ISO 8601
 * UTC time ("2026-11-24", "2026-11-24T10:00Z", "2026-11-24T10:00:00Z",
 * "2026-11-24T10:00:00.250Z", "+00:00" for "Z"). Returns 0 or -1. */
int report_parse_time(const char *t, int64_t now_ms, int64_t *out_ms);

/* Parse EXPR ("5xx < 1%", "p99 <= 500ms", "code 503 == 0") into A (A->expr
 * points at EXPR). Returns 0, or -1 with a message naming EXPR in ERR. */
int report_assert_parse(const char *expr, struct report_assert *a, char *err, size_t errlen);

/* Does HOST match GLOB ("*" any run, "?" one character), ASCII case-insensitively? */
int report_glob_match(const char *glob, const char *host);

/* Writers of a result, exposed for tests. */
void report_write_table(const struct report_result *r, struct sbuf *out);
void report_write_json(const struct report_result *r, struct sbuf *out);
void report_write_csv(const struct report_result *r, struct sbuf *out);
/* The shortest text that reads back as exactly D ("0.25", "0.1"). */
void report_format_double(double d, char *buf, size_t len);

void report_result_free(struct report_result *r);

/* The field name of a view for --by ("code", "class", ...). */
const char *report_view_name(enum report_view v);

#endif
