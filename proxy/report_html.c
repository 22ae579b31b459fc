/*
 * report_html — one self-contained HTML page: summary, an inline SVG chart of
 * exchanges per status class over time, and a table per view.
 *
 * Hosts, rules and paths come from clients and upstreams, so every text is
 * escaped. The chart draws one <path class="series series-CLASS"
 * data-class="CLASS"> per class present in the range; exchanges that got no
 * status at all are drawn apart (class "no-status"), since they have no class.
 */
#include "report_html.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHART_W 960
#define CHART_H 300
#define PAD_L 64
#define PAD_R 24
#define PAD_T 16
#define PAD_B 44
#define MAX_BUCKETS 240
#define MAX_POINT_MARKS 60

static const struct {
    const char *name;  /* as in the class view; "none" for no status */
    const char *label;
    const char *color;
} series_info[REPORT_SERIES_COUNT] = {
    {"1xx", "1xx informational", "#6b7280"}, {"2xx", "2xx success", "#16a34a"},
    {"3xx", "3xx redirection", "#2563eb"},   {"4xx", "4xx client error", "#d97706"},
    {"5xx", "5xx server error", "#dc2626"},  {"invalid", "invalid status", "#7c3aed"},
    {"none", "no status (reset, client gone)", "#111827"},
};

static void esc(struct sbuf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sbuf_puts(out, "&amp;"); break;
        case '<': sbuf_puts(out, "&lt;"); break;
        case '>': sbuf_puts(out, "&gt;"); break;
        case '"': sbuf_puts(out, "&quot;"); break;
        case '\'': sbuf_puts(out, "&#39;"); break;
        default:
            if ((unsigned char)*s < 0x20 || *s == 0x7f)
                sbuf_putc(out, '?');
            else
                sbuf_putc(out, *s);
        }
    }
}

static void iso_minute(int64_t unix_s, char *buf, size_t len)
{
    char full[32];
    time_format_iso(unix_s * 1000, full, sizeof full);
    /* "YYYY-MM-DDTHH:MM:SSZ" -> "YYYY-MM-DD HH:MM" */
    snprintf(buf, len, "%.10s %.5s", full, full + 11);
}

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>statusproxy report</title>\n<style>\n"
    "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;"
    "max-width:1000px;padding:0 16px;color:#111827;background:#fff}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}\n"
    ".meta{color:#4b5563;margin:2px 0}.summary{font-size:16px;margin:10px 0}\n"
    ".dropped-some{color:#b91c1c;font-weight:600}\n"
    "table{border-collapse:collapse;min-width:360px}\n"
    "th,td{padding:3px 10px;border-bottom:1px solid #e5e7eb;text-align:left;"
    "white-space:nowrap}\n"
    "th{background:#f3f4f6;font-weight:600}td.num,th.num{text-align:right;"
    "font-variant-numeric:tabular-nums}\n"
    "td.absent{color:#9ca3af}.bar{display:inline-block;height:10px;background:#2563eb;"
    "vertical-align:middle;margin-left:6px}\n"
    ".empty{color:#6b7280;font-style:italic}\n"
    "svg{max-width:100%;height:auto;border:1px solid #e5e7eb;border-radius:4px}\n"
    "svg text{font:11px system-ui,sans-serif;fill:#374151}\n"
    ".grid{stroke:#e5e7eb}.axis{stroke:#9ca3af}\n"
    ".series,.no-status{fill:none;stroke-width:2;stroke-linejoin:round}\n"
    ".no-status{stroke-dasharray:5 4}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:14px;margin:8px 0}\n"
    ".swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;"
    "vertical-align:-1px}\n"
    "details summary{cursor:pointer;color:#1d4ed8}\n"
    ".periods{display:flex;flex-wrap:wrap;gap:16px}.periods svg{max-width:100%;height:auto}\n"
    ".latency{display:flex;flex-wrap:wrap;gap:12px 24px;margin:12px 0}\n"
    ".route-latency{margin:0}.route-latency figcaption{font-size:12px;color:#374151}\n"
    "</style>\n</head>\n<body>\n";

/* A round step for the y axis: 1, 2 or 5 times a power of ten, >= MAX/4. */
static uint64_t nice_step(uint64_t max)
{
    uint64_t target = (max + 3) / 4, p = 1;
    if (target == 0)
        return 1;
    for (;;) {
        if (p >= target)
            return p;
        if (2 * p >= target)
            return 2 * p;
        if (5 * p >= target)
            return 5 * p;
        p *= 10;
    }
}

/* Minutes per bucket: a round length that keeps at most MAX_BUCKETS points. */
static int64_t bucket_minutes(int64_t span_minutes)
{
    static const int64_t steps[] = {1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080};
    for (size_t i = 0; i < ARRAY_LEN(steps); i++)
        if (span_minutes / steps[i] < MAX_BUCKETS)
            return steps[i];
    return span_minutes / MAX_BUCKETS + 1;
}

/* The x position of bucket K of NB across the plot. */
static double bucket_x(size_t k, size_t nb, int plot_w)
{
    return nb == 1 ? PAD_L + plot_w / 2.0 : PAD_L + (double)k * plot_w / (double)(nb - 1);
}

/* The grid, y labels, x axis, x labels and the bucket caption of a chart of
 * NB buckets of STEP seconds from BASE, with y from 0 to YMAX by YSTEP. */
static void write_axes(struct sbuf *out, size_t nb, int64_t base, int64_t step, uint64_t ymax,
                       uint64_t ystep, int plot_w, int plot_h)
{
    /* Grid and y labels. */
    for (uint64_t v = 0; v <= ymax; v += ystep) {
        double y = PAD_T + plot_h - (double)v / (double)ymax * plot_h;
        sbuf_printf(out,
                    "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
                    "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%llu</text>\n",
                    PAD_L, y, PAD_L + plot_w, y, PAD_L - 6, y + 4, (unsigned long long)v);
    }
    sbuf_printf(out, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", PAD_L,
                PAD_T + plot_h, PAD_L + plot_w, PAD_T + plot_h);
    /* X labels: the first and last bucket, and the middle one when there is room. */
    size_t marks[3] = {0, nb / 2, nb - 1};
    for (int m = 0; m < 3; m++) {
        if ((m == 1 && nb < 5) || (m == 2 && nb == 1))
            continue;
        size_t k = marks[m];
        double x = bucket_x(k, nb, plot_w);
        char when[32];
        iso_minute(base + (int64_t)k * step, when, sizeof when);
        sbuf_printf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">%s UTC</text>\n", x,
                    CHART_H - 22, m == 0 && nb > 1 ? "start" : m == 2 ? "end" : "middle", when);
    }
    sbuf_printf(out, "<text x=\"%d\" y=\"%d\">exchanges per %lld min</text>\n", PAD_L,
                CHART_H - 6, (long long)(step / 60));
}

/* Series S's line across the NB buckets B, titled with its TOTAL, and a
 * marker per bucket when there are few enough to tell apart. */
static void write_series(struct sbuf *out, const uint64_t (*b)[REPORT_SERIES_COUNT], size_t nb,
                         int s, uint64_t total, uint64_t ymax, int plot_w, int plot_h)
{
    int none = s == REPORT_SERIES_NONE;
    sbuf_printf(out, "<path class=\"%s%s\" data-class=\"%s\" stroke=\"%s\" d=\"",
                none ? "no-status" : "series series-", none ? "" : series_info[s].name,
                series_info[s].name, series_info[s].color);
    for (size_t k = 0; k < nb; k++) {
        double x = bucket_x(k, nb, plot_w);
        double y = PAD_T + plot_h - (double)b[k][s] / (double)ymax * plot_h;
        sbuf_printf(out, "%s%.1f %.1f", k ? " L" : "M", x, y);
    }
    sbuf_printf(out, "\"><title>%s: %llu</title></path>\n", series_info[s].label,
                (unsigned long long)total);
    if (nb > MAX_POINT_MARKS)
        return;
    for (size_t k = 0; k < nb; k++) {
        double x = bucket_x(k, nb, plot_w);
        double y = PAD_T + plot_h - (double)b[k][s] / (double)ymax * plot_h;
        sbuf_printf(out,
                    "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\""
                    " fill=\"%s\"/>",
                    x, y, series_info[s].color);
    }
    sbuf_putc(out, '\n');
}

/* The legend: one swatch and total per series that has any exchanges. */
static void write_legend(struct sbuf *out, const uint64_t *totals)
{
    sbuf_puts(out, "<div class=\"legend\">\n");
    for (int s = 0; s < REPORT_SERIES_COUNT; s++) {
        if (totals[s] == 0)
            continue;
        sbuf_printf(out,
                    "<span data-class=\"%s\"><span class=\"swatch\" style=\"background:%s\"></span>"
                    "%s: %llu</span>\n",
                    series_info[s].name, series_info[s].color, series_info[s].label,
                    (unsigned long long)totals[s]);
    }
    sbuf_puts(out, "</div>\n");
}

static void write_chart(const struct report_chart_point *points, size_t npoints, const char *id,
                        struct sbuf *out)
{
    sbuf_printf(out,
                "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\""
                " width=\"%d\" height=\"%d\" role=\"img\""
                " aria-label=\"Exchanges per status class over time\">\n",
                id, CHART_W, CHART_H, CHART_W, CHART_H);
    int plot_w = CHART_W - PAD_L - PAD_R, plot_h = CHART_H - PAD_T - PAD_B;
    if (npoints == 0) {
        sbuf_printf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">No exchanges in this "
                         "range</text>\n</svg>\n",
                    CHART_W / 2, CHART_H / 2);
        return;
    }
    int64_t first = points[0].minute_s, last = points[npoints - 1].minute_s;
    int64_t step = bucket_minutes((last - first) / 60) * 60;
    int64_t base = first / step * step - (first % step < 0 ? step : 0);
    size_t nb = (size_t)((last - base) / step) + 1;
    uint64_t(*b)[REPORT_SERIES_COUNT] = xcalloc(nb, sizeof *b);
    uint64_t totals[REPORT_SERIES_COUNT] = {0}, max = 0;
    for (size_t i = 0; i < npoints; i++) {
        size_t k = (size_t)((points[i].minute_s - base) / step);
        for (int s = 0; s < REPORT_SERIES_COUNT; s++) {
            b[k][s] += points[i].counts[s];
            totals[s] += points[i].counts[s];
        }
    }
    for (size_t k = 0; k < nb; k++)
        for (int s = 0; s < REPORT_SERIES_COUNT; s++)
            if (b[k][s] > max)
                max = b[k][s];
    uint64_t ystep = nice_step(max), ymax = (max + ystep - 1) / ystep * ystep;
    if (ymax == 0)
        ymax = ystep;

    write_axes(out, nb, base, step, ymax, ystep, plot_w, plot_h);
    for (int s = 0; s < REPORT_SERIES_COUNT; s++)
        if (totals[s] != 0)
            write_series(out, (const uint64_t(*)[REPORT_SERIES_COUNT])b, nb, s, totals[s], ymax,
                         plot_w, plot_h);
    sbuf_puts(out, "</svg>\n");
    write_legend(out, totals);
    free(b);
}

static void write_value(struct sbuf *out, const struct report_value *v, int is_share, int numeric)
{
    char num[32];
    switch (v->type) {
    case REPORT_NULL:
        sbuf_printf(out, "<td class=\"absent%s\">&mdash;</td>", numeric ? " num" : "");
        break;
    case REPORT_INT:
        sbuf_printf(out, "<td class=\"num\">%lld</td>", (long long)v->i);
        break;
    case REPORT_REAL:
        if (is_share) {
            sbuf_printf(out,
                        "<td class=\"num\">%.1f%%<span class=\"bar\" style=\"width:%.0fpx\">"
                        "</span></td>",
                        v->r * 100.0, v->r * 120.0);
        } else {
            snprintf(num, sizeof num, "%g", v->r);
            sbuf_printf(out, "<td class=\"num\">%s</td>", num);
        }
        break;
    case REPORT_TEXT:
        sbuf_puts(out, "<td>");
        esc(out, v->s);
        sbuf_puts(out, "</td>");
        break;
    case REPORT_BOOL:
        sbuf_printf(out, "<td>%s</td>", v->i ? "yes" : "no");
        break;
    }
}

static void write_view(const struct report_result *r, struct sbuf *out)
{
    const char *name = r->name;
    sbuf_printf(out, "<table class=\"view\" id=\"by-%s\" data-view=\"%s\">\n<thead><tr>", name,
                name);
    int share_col = -1;
    int *numeric = xcalloc(r->ncols + 1, sizeof *numeric);
    for (size_t c = 0; c < r->ncols; c++) {
        numeric[c] = strstr(r->cols[c], "count") || strstr(r->cols[c], "share") ||
                     strstr(r->cols[c], "_ms") ||
                      strcmp(r->cols[c], "code") == 0 || strcmp(r->cols[c], "upstream_code") == 0 ||
                      (r->cols[c][0] >= '1' && r->cols[c][0] <= '5');
        if (strcmp(r->cols[c], "share") == 0)
            share_col = (int)c;
        sbuf_printf(out, "<th%s>", numeric[c] ? " class=\"num\"" : "");
        esc(out, r->cols[c]);
        sbuf_puts(out, "</th>");
    }
    sbuf_puts(out, "</tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < r->nrows; i++) {
        sbuf_puts(out, "<tr>");
        for (size_t c = 0; c < r->ncols; c++)
            write_value(out, &r->cells[i * r->ncols + c], (int)c == share_col, numeric[c]);
        sbuf_puts(out, "</tr>\n");
    }
    sbuf_puts(out, "</tbody>\n</table>\n");
    free(numeric);
    if (r->nrows == 0)
        sbuf_puts(out, "<p class=\"empty\">No exchanges.</p>\n");
}

#define LAT_ROUTES 10
#define LAT_W 360
#define LAT_BAR 14

/* A small chart per top route: bars for p50, p95 and p99, scaled to the
 * route's own p99, so the shape of its tail shows at a glance. */
static void write_route_latency(const struct report_result *r, struct sbuf *out)
{
    int ch = -1, cr = -1, cp[3] = {-1, -1, -1};
    static const char *const pn[3] = {"p50_ms", "p95_ms", "p99_ms"};
    for (size_t c = 0; c < r->ncols; c++) {
        if (strcmp(r->cols[c], "host") == 0)
            ch = (int)c;
        if (strcmp(r->cols[c], "route") == 0)
            cr = (int)c;
        for (int k = 0; k < 3; k++)
            if (strcmp(r->cols[c], pn[k]) == 0)
                cp[k] = (int)c;
    }
    if (ch < 0 || cr < 0 || cp[2] < 0)
        return;
    sbuf_puts(out, "<div class=\"latency\">\n");
    for (size_t i = 0; i < r->nrows && i < LAT_ROUTES; i++) {
        const struct report_value *row = &r->cells[i * r->ncols];
        if (row[cp[2]].type != REPORT_REAL || row[cp[2]].r <= 0)
            continue;
        double max = row[cp[2]].r;
        sbuf_puts(out, "<figure class=\"route-latency\"><figcaption>");
        esc(out, row[ch].type == REPORT_TEXT ? row[ch].s : "");
        sbuf_puts(out, " ");
        esc(out, row[cr].type == REPORT_TEXT ? row[cr].s : "(before routes)");
        sbuf_printf(out, "</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\""
                         " height=\"%d\" viewBox=\"0 0 %d %d\">",
                    LAT_W, 3 * (LAT_BAR + 4), LAT_W, 3 * (LAT_BAR + 4));
        for (int k = 0; k < 3; k++) {
            double v = row[cp[k]].type == REPORT_REAL ? row[cp[k]].r : 0;
            double w = v / max * (LAT_W - 130);
            int y = k * (LAT_BAR + 4);
            sbuf_printf(out,
                        "<text x=\"0\" y=\"%d\">p%.2s</text><rect class=\"lat\" x=\"40\" y=\"%d\""
                        " width=\"%.1f\" height=\"%d\" fill=\"%s\"/><text x=\"%.1f\" y=\"%d\">%.1f ms"
                        "</text>",
                        y + LAT_BAR - 2, pn[k] + 1, y, w, LAT_BAR,
                        k == 2 ? "#dc2626" : k == 1 ? "#d97706" : "#16a34a", 44 + w,
                        y + LAT_BAR - 2, v);
        }
        sbuf_puts(out, "</svg></figure>\n");
    }
    sbuf_puts(out, "</div>\n");
}

/* One end of the report's range: its time, or OPEN_TEXT when it is the open
 * end (MS == OPEN). */
static void write_bound(struct sbuf *out, int64_t ms, int64_t open, const char *open_text)
{
    char when[32];
    if (ms == open) {
        sbuf_puts(out, open_text);
    } else {
        time_format_iso(ms, when, sizeof when);
        sbuf_puts(out, when);
    }
}

void report_html_write(const struct report_page *p, struct sbuf *out)
{
    static const char *const titles[] = {
        "By status code (what clients received)",
        "By class",
        "By host",
        "By rule (exchanges where a rule acted)",
        "Rewrites (final code differs from the upstream's, or a rule acted)",
        "By minute",
        "By route (latency in ms)",
    };
    const struct report_options *o = p->opts;
    char when[32];
    sbuf_puts(out, page_head);
    sbuf_puts(out, "<header>\n<h1>statusproxy report</h1>\n<p class=\"meta\">Database");
    sbuf_puts(out, o->ndbs > 1 ? "s: " : ": ");
    for (size_t i = 0; i < o->ndbs; i++) {
        sbuf_puts(out, i ? ", <code>" : "<code>");
        esc(out, o->dbs[i]);
        sbuf_puts(out, "</code>");
    }
    sbuf_puts(out, "</p>\n<p class=\"meta\">Range: ");
    write_bound(out, o->since_ms, INT64_MIN, "the beginning");
    sbuf_puts(out, " to ");
    write_bound(out, o->until_ms, INT64_MAX, "now");
    if (o->host_glob) {
        sbuf_puts(out, " &middot; hosts matching <code>");
        esc(out, o->host_glob);
        sbuf_puts(out, "</code>");
    }
    time_format_iso(p->generated_ms, when, sizeof when);
    sbuf_printf(out, " &middot; generated %s</p>\n", when);
    sbuf_printf(out,
                "<p class=\"summary\"><span id=\"total\" data-total=\"%llu\">%llu exchanges</span>"
                " &middot; <span id=\"dropped\" data-dropped=\"%llu\"%s>%llu records dropped"
                "%s</span></p>\n</header>\n",
                (unsigned long long)p->total, (unsigned long long)p->total,
                (unsigned long long)p->dropped, p->dropped ? " class=\"dropped-some\"" : "",
                (unsigned long long)p->dropped,
                p->dropped ? " (the writer fell behind; the counts below miss them)" : "");

    sbuf_puts(out, "<section>\n<h2>Status classes over time</h2>\n");
    if (p->has_base) {
        sbuf_puts(out, "<div class=\"periods\">\n<div><h3>This period</h3>\n");
        write_chart(p->points, p->npoints, "chart", out);
        sbuf_printf(out, "</div>\n<div><h3>Baseline (%llu exchanges)</h3>\n",
                    (unsigned long long)p->base_total);
        write_chart(p->base_points, p->base_npoints, "base-chart", out);
        sbuf_puts(out, "</div>\n</div>\n");
    } else {
        write_chart(p->points, p->npoints, "chart", out);
    }
    sbuf_puts(out, "</section>\n");
    for (int v = REPORT_BY_CODE; v < REPORT_AGG_VIEWS; v++) {
        sbuf_printf(out, "<section>\n<h2>%s</h2>\n", titles[v]);
        if (v == REPORT_BY_MINUTE)
            sbuf_puts(out, "<details>\n<summary>Show every minute</summary>\n");
        write_view(p->views[v], out);
        if (v == REPORT_BY_ROUTE)
            write_route_latency(p->views[v], out);
        if (v == REPORT_BY_MINUTE)
            sbuf_puts(out, "</details>\n");
        sbuf_puts(out, "</section>\n");
    }
    sbuf_puts(out, "</body>\n</html>\n");
}
