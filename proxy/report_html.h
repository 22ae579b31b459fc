/*
 * report_html — the HTML form of a report: one self-contained page (inline
 * CSS and SVG, no script, no external asset) with a chart of status classes
 * over time and the table of every view. Pure formatting of results that
 * report.c computed; no SQLite here.
 */
#ifndef STATUSPROXY_REPORT_HTML_H
#define STATUSPROXY_REPORT_HTML_H

#include <stddef.h>
#include <stdint.h>

#include "report.h"
#include "util.h"

/* Chart series: the classes, then exchanges that got no status at all. */
enum {
    REPORT_SERIES_1XX,
    REPORT_SERIES_2XX,
    REPORT_SERIES_3XX,
    REPORT_SERIES_4XX,
    REPORT_SERIES_5XX,
    REPORT_SERIES_INVALID,
    REPORT_SERIES_NONE,
    REPORT_SERIES_COUNT
};

/* Exchanges of one minute, per series. */
struct report_chart_point {
    int64_t minute_s;                       /* Unix seconds of the minute's start */
    uint64_t counts[REPORT_SERIES_COUNT];
};

struct report_page {
    const struct report_options *opts;
    int64_t generated_ms;
    const struct report_result *views[REPORT_AGG_VIEWS]; /* indexed by enum report_view */
    const struct report_chart_point *points; /* minutes with exchanges, ascending */
    size_t npoints;
    uint64_t total, dropped;
    /* A baseline (--baseline, --baseline-since): its chart beside the
     * current one; the views then carry base_* and delta_* columns. */
    int has_base;
    uint64_t base_total;
    const struct report_chart_point *base_points;
    size_t base_npoints;
};

/* Append the page to OUT. */
void report_html_write(const struct report_page *page, struct sbuf *out);

#endif
