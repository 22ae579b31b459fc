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
    size_t top;              /* 0: every row */
};

/* One value of a result: what SQLite gave, so JSON can say number/string/null. */
enum report_type { REPORT_NULL, REPORT_INT, REPORT_REAL, REPORT_TEXT };
struct report_value {
    enum report_type type;
    int64_t i;
    double r;
    char *s;                 /* owned */
};

/* The rows of one view: the field names of DESIGN §6, in order. */
struct report_result {
    enum report_view view;
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

/* Run the report and append its text to OUT. Returns 0, or -1 with a message
 * in ERR (a database missing, not ours, or too new: the caller exits 1). */
int report_run(const struct report_options *o, int64_t now_ms, struct sbuf *out, char *err,
               size_t errlen);

/* Parse T as a duration back from NOW_MS ("90s", "1h", "7d") or an ISO 8601
 * UTC time ("2026-11-24", "2026-11-24T10:00Z", "2026-11-24T10:00:00Z",
 * "2026-11-24T10:00:00.250Z", "+00:00" for "Z"). Returns 0 or -1. */
int report_parse_time(const char *t, int64_t now_ms, int64_t *out_ms);

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
