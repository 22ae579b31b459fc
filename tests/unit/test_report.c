/* Unit tests for report: flags, times, globs and the text writers. */
#include "report.h"
#include "unit.h"

#include <stdlib.h>

#include "util.h"

#define NOW 1795000000000LL /* 2026-11-18T11:06:40Z */

static int64_t parse_time(const char *t, int *ok)
{
    int64_t v = 0;
    *ok = report_parse_time(t, NOW, &v) == 0;
    return v;
}

static void test_times_iso(void)
{
    int ok;
    CHECK_INT(parse_time("2026-11-24T10:00:00Z", &ok), 1795514400000LL);
    CHECK(ok);
    CHECK_INT(parse_time("2026-11-24T10:00Z", &ok), 1795514400000LL);
    CHECK(ok);
    CHECK_INT(parse_time("2026-11-24T10:00:00.25Z", &ok), 1795514400250LL);
    CHECK(ok);
    CHECK_INT(parse_time("2026-11-24T10:00:00.123456Z", &ok), 1795514400123LL);
    CHECK(ok);
    CHECK_INT(parse_time("2026-11-24T10:00:00+00:00", &ok), 1795514400000LL);
    CHECK(ok);
    CHECK_INT(parse_time("2026-11-24", &ok), 1795478400000LL);
    CHECK(ok);
    CHECK_INT(parse_time("1970-01-01T00:00:00Z", &ok), 0);
    CHECK(ok);
    CHECK_INT(parse_time("2024-02-29T23:59:59Z", &ok), 1709251199000LL);
    CHECK(ok);
    CHECK_INT(parse_time("2000-03-01T00:00:00Z", &ok), 951868800000LL);
    CHECK(ok);
}

static void test_times_durations(void)
{
    int ok;
    CHECK_INT(parse_time("1h", &ok), NOW - 3600000);
    CHECK(ok);
    CHECK_INT(parse_time("90s", &ok), NOW - 90000);
    CHECK(ok);
    CHECK_INT(parse_time("7d", &ok), NOW - 7 * 86400000LL);
    CHECK(ok);
}

static void test_times_invalid(void)
{
    const char *bad[] = {"",
                         "yesterday",
                         "1 h",
                         "2026-11-24T10:00:00",       /* no zone: would be read as local */
                         "2026-11-24T10:00:00+01:00", /* UTC only */
                         "2026-13-01T00:00:00Z",
                         "2026-02-29T00:00:00Z",
                         "2026-11-31",
                         "2026-11-24T24:00Z",
                         "2026-11-24T10:60Z",
                         "2026-11-24T10Z",
                         "2026-11-24T10:00:00.Z",
                         "2026-11-24T10:00:00Zjunk",
                         "26-11-24"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        int ok;
        parse_time(bad[i], &ok);
        if (ok)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        CHECK(!ok);
    }
}

static void test_glob(void)
{
    CHECK(report_glob_match("*", "anything.example"));
    CHECK(report_glob_match("*", ""));
    CHECK(report_glob_match("api.example", "API.Example"));
    CHECK(report_glob_match("*.example", "shop.example"));
    CHECK(!report_glob_match("*.example", "example"));
    CHECK(report_glob_match("api?.example", "api1.example"));
    CHECK(!report_glob_match("api?.example", "api.example"));
    CHECK(!report_glob_match("api?.example", "api12.example"));
    CHECK(report_glob_match("a*b*c", "aXXbYYbZc"));
    CHECK(!report_glob_match("a*b*c", "aXXbYYbZ"));
    CHECK(report_glob_match("*api*", "my-API-host"));
    CHECK(!report_glob_match("api", "api.example"));
}

static int parse(const char *line, struct report_options *o, char *err, size_t errlen)
{
    char *copy = xstrdup(line);
    static char *argv[32];
    static char *keep[8];
    static int nkeep;
    int argc = 0;
    for (char *t = strtok(copy, " "); t && argc < 32; t = strtok(NULL, " "))
        argv[argc++] = t;
    /* The options borrow argv's strings: keep a few copies alive. */
    free(keep[nkeep % 8]);
    keep[nkeep++ % 8] = copy;
    return report_parse_args(argc, argv, NOW, o, err, errlen);
}

static void test_flags_good(void)
{
    struct report_options o;
    char err[256] = "";
    CHECK_INT(parse("--db a.db --db b.db --by rewrite --since 1h --until 2026-11-18T11:00Z"
                    " --host *.example --top 3 --format csv",
                    &o, err, sizeof err),
              0);
    CHECK_STR(err, "");
    if (o.ndbs != 2) {
        CHECK_INT(o.ndbs, 2);
        return;
    }
    CHECK_STR(o.dbs[1], "b.db");
    CHECK_INT(o.view, REPORT_BY_REWRITE);
    CHECK_INT(o.format, REPORT_CSV);
    CHECK_INT(o.since_ms, NOW - 3600000);
    CHECK_INT(o.until_ms, 1794999600000LL);
    CHECK_STR(o.host_glob, "*.example");
    CHECK_INT(o.top, 3);
    report_options_free(&o);

    if (parse("--db=a.db --by=minute --format=json", &o, err, sizeof err) != 0) {
        CHECK_STR(err, "");
        return;
    }
    CHECK_STR(o.dbs[0], "a.db");
    CHECK_INT(o.view, REPORT_BY_MINUTE);
    CHECK_INT(o.format, REPORT_JSON);
    CHECK_INT(o.since_ms, INT64_MIN);
    CHECK_INT(o.until_ms, INT64_MAX);
    CHECK(o.host_glob == NULL);
    CHECK_INT(o.top, 0);
    report_options_free(&o);
}

static void test_flags_bad_name_the_flag(void)
{
    static const struct {
        const char *args, *flag;
    } cases[] = {
        {"--by code", "--db"},
        {"--db a.db --by colour", "--by"},
        {"--db a.db --format xml", "--format"},
        {"--db a.db --since soon", "--since"},
        {"--db a.db --until 2026-11-24T10:00", "--until"},
        {"--db a.db --top 0", "--top"},
        {"--db a.db --top -3", "--top"},
        {"--db a.db --top 5x", "--top"},
        {"--db a.db --verbose", "--verbose"},
        {"--db a.db --by", "--by"},
        {"--db a.db --since 1h --until 2h", "--until"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct report_options o;
        char err[256] = "";
        CHECK_INT(parse(cases[i].args, &o, err, sizeof err), -1);
        if (strncmp(err, cases[i].flag, strlen(cases[i].flag)) != 0)
            fprintf(stderr, "  '%s' gave '%s'\n", cases[i].args, err);
        CHECK(strncmp(err, cases[i].flag, strlen(cases[i].flag)) == 0);
        CHECK(strchr(err, '\n') == NULL);
    }
}

static void test_double_format_round_trips(void)
{
    char buf[32];
    double values[] = {0.25, 0.5, 1, 0, 1.0 / 3, 2.0 / 7, 0.1, 1e-7};
    for (size_t i = 0; i < ARRAY_LEN(values); i++) {
        report_format_double(values[i], buf, sizeof buf);
        CHECK(strtod(buf, NULL) == values[i]);
    }
    report_format_double(0.25, buf, sizeof buf);
    CHECK_STR(buf, "0.25");
    report_format_double(1, buf, sizeof buf);
    CHECK_STR(buf, "1");
    report_format_double(0.1, buf, sizeof buf);
    CHECK_STR(buf, "0.1");
}

/* A small hand-made result: code, name, share. */
static void make_result(struct report_result *r)
{
    static const char *const cols[] = {"code", "name", "count", "share"};
    memset(r, 0, sizeof *r);
    r->view = REPORT_BY_CODE;
    r->ncols = 4;
    r->nrows = 2;
    r->cols = xcalloc(4, sizeof *r->cols);
    for (int c = 0; c < 4; c++)
        r->cols[c] = xstrdup(cols[c]);
    r->cells = xcalloc(8, sizeof *r->cells);
    r->cells[0] = (struct report_value){REPORT_INT, 200, 0, NULL};
    r->cells[1] = (struct report_value){REPORT_TEXT, 0, 0, xstrdup("say \"hi\", ok")};
    r->cells[2] = (struct report_value){REPORT_INT, 3, 0, NULL};
    r->cells[3] = (struct report_value){REPORT_REAL, 0, 0.75, NULL};
    r->cells[4] = (struct report_value){REPORT_NULL, 0, 0, NULL};
    r->cells[5] = (struct report_value){REPORT_TEXT, 0, 0, xstrdup("line\nbreak\x1b")};
    r->cells[6] = (struct report_value){REPORT_INT, 1, 0, NULL};
    r->cells[7] = (struct report_value){REPORT_REAL, 0, 0.25, NULL};
    r->total = 4;
    r->dropped = 7;
}

static void test_csv_quoting(void)
{
    struct report_result r;
    struct sbuf out = {0};
    make_result(&r);
    report_write_csv(&r, &out);
    CHECK_STR(out.data, "code,name,count,share\r\n"
                        "200,\"say \"\"hi\"\", ok\",3,0.75\r\n"
                        ",\"line\nbreak\x1b\",1,0.25\r\n");
    sbuf_free(&out);
    report_result_free(&r);
}

static void test_json_types(void)
{
    struct report_result r;
    struct sbuf out = {0};
    make_result(&r);
    report_write_json(&r, &out);
    CHECK_STR(out.data,
              "[\n"
              "  {\"code\": 200, \"name\": \"say \\\"hi\\\", ok\", \"count\": 3, \"share\": 0.75},\n"
              "  {\"code\": null, \"name\": \"line\\nbreak\\u001b\", \"count\": 1, \"share\": 0.25}\n"
              "]\n");
    sbuf_free(&out);
    r.nrows = 0;
    report_write_json(&r, &out);
    CHECK_STR(out.data, "[]\n");
    r.nrows = 2;
    sbuf_free(&out);
    report_result_free(&r);
}

static void test_table_aligned_with_bars_and_footer(void)
{
    struct report_result r;
    struct sbuf out = {0};
    make_result(&r);
    report_write_table(&r, &out);
    /* Every line of the table part starts its columns at the same offsets. */
    const char *want_head = "CODE  NAME          COUNT  SHARE\n";
    CHECK(strncmp(out.data, want_head, strlen(want_head)) == 0);
    CHECK(strstr(out.data, " 200  say \"hi\", ok      3  75.0%  ") != NULL);
    CHECK(strstr(out.data, "   -  line?break?       1  25.0%  ") != NULL);
    CHECK(strstr(out.data, "\x1b") == NULL); /* no terminal escapes from outside data */
    CHECK(strstr(out.data, "\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588") != NULL);
    CHECK(strstr(out.data, "\n4 exchanges, 7 records dropped\n") != NULL);
    sbuf_free(&out);
    report_result_free(&r);
}

static void test_assert_parse_good(void)
{
    struct report_assert a;
    char err[256];
    CHECK_INT(report_assert_parse("5xx < 1%", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_CLASS);
    CHECK_INT(a.arg, 5);
    CHECK_INT(a.op, REPORT_LT);
    CHECK_INT(a.unit, REPORT_UNIT_PERCENT);
    CHECK(a.value == 1);
    CHECK_INT(report_assert_parse("p99<=500ms", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_P99);
    CHECK_INT(a.op, REPORT_LE);
    CHECK_INT(a.unit, REPORT_UNIT_MS);
    CHECK(a.value == 500);
    CHECK_INT(report_assert_parse("p50 > 2s", &a, err, sizeof err), 0);
    CHECK(a.value == 2000);
    CHECK_INT(a.op, REPORT_GT);
    CHECK_INT(report_assert_parse("code 503 == 0", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_CODE);
    CHECK_INT(a.arg, 503);
    CHECK_INT(a.op, REPORT_EQ);
    CHECK_INT(a.unit, REPORT_UNIT_COUNT);
    CHECK_INT(report_assert_parse("  errors >= 0.5 %", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_ERRORS);
    CHECK_INT(a.op, REPORT_GE);
    CHECK(a.value == 0.5);
    CHECK_INT(report_assert_parse("count > 100", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_COUNT);
    CHECK_INT(report_assert_parse("p95 < 250ms", &a, err, sizeof err), 0);
    CHECK_INT(a.what, REPORT_ASSERT_P95);
    CHECK_STR(a.expr, "p95 < 250ms");
}

static void test_assert_parse_bad_names_the_expression(void)
{
    static const char *const bad[] = {
        "", "5xx", "5xx <", "5xx < ", "6xx < 1", "5xx <> 1", "5xx = 1", "5xx < x",
        "5xx < 1ms",     /* a duration for a count */
        "p99 < 5",       /* a percentile needs a duration */
        "p99 < 5%", "count < 5%", "code 50 == 1", "code 5000 == 1", "code abc == 1",
        "latency < 5ms", "5xx < 1% extra", "5xx < -1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct report_assert a;
        char err[256] = "";
        int rc = report_assert_parse(bad[i], &a, err, sizeof err);
        if (rc != -1 || !strstr(err, "--assert") || !strstr(err, bad[i])) {
            fprintf(stderr, "  expression '%s': rc %d, err '%s'\n", bad[i], rc, err);
            CHECK(rc == -1 && strstr(err, bad[i]));
        }
    }
}

static void test_flags_deep(void)
{
    struct report_options o;
    char err[256];
    char *argv[] = {"--db", "a.db", "--by", "route", "--route", "/users/*", "--baseline",
                    "b.db", "--baseline", "c.db", "--assert", "5xx < 1%"};
    CHECK_INT(report_parse_args(12, argv, 1000000, &o, err, sizeof err), 0);
    CHECK_INT(o.view, REPORT_BY_ROUTE);
    CHECK_STR(o.route_glob, "/users/*");
    CHECK_INT(o.nbaselines, 2);
    CHECK_STR(o.baselines[1], "c.db");
    CHECK_INT(o.nasserts, 1);
    report_options_free(&o);
    char *bad[] = {"--db", "a.db", "--assert", "nonsense"};
    CHECK_INT(report_parse_args(4, bad, 1000000, &o, err, sizeof err), -1);
    CHECK(strstr(err, "nonsense") != NULL);
    char *half[] = {"--db", "a.db", "--baseline-since", "1h"};
    CHECK_INT(report_parse_args(4, half, 10000000, &o, err, sizeof err), -1);
    CHECK(strstr(err, "--baseline-until") != NULL);
    char *retry[] = {"--db", "a.db", "--by", "retry", "--baseline", "b.db"};
    CHECK_INT(report_parse_args(6, retry, 10000000, &o, err, sizeof err), -1);
}

int main(void)
{
    RUN(test_assert_parse_good);
    RUN(test_assert_parse_bad_names_the_expression);
    RUN(test_flags_deep);
    RUN(test_times_iso);
    RUN(test_times_durations);
    RUN(test_times_invalid);
    RUN(test_glob);
    RUN(test_flags_good);
    RUN(test_flags_bad_name_the_flag);
    RUN(test_double_format_round_trips);
    RUN(test_csv_quoting);
    RUN(test_json_types);
    RUN(test_table_aligned_with_bars_and_footer);
    return unit_summary("report");
}
