/* Unit tests for metrics: counting exchanges per label set, rules, errors,
 * and the Prometheus text they render as. */
#include "metrics.h"
#include "unit.h"

#include <stdlib.h>

#include "util.h"

static struct audit_entry exchange(int final, int upstream, const char *rule, const char *error)
{
    struct audit_entry e = {
        .duration_us = 2000, .final_code = final, .upstream_code = upstream,
        .client = AUDIT_TEXT("127.0.0.1"), .method = AUDIT_TEXT("GET"),
        .host = AUDIT_TEXT("h"), .path = AUDIT_TEXT("/"), .rule = AUDIT_TEXT(rule),
        .action = AUDIT_TEXT(""), .error = AUDIT_TEXT(error),
    };
    return e;
}

/* The count on the line of TEXT that starts with PREFIX, or -1. */
static long long count_of(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        size_t n = strlen(prefix);
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return atoll(p + n + 1);
    }
    return -1;
}

static void test_label_sets_counted_in_any_order(void)
{
    struct metrics *m = metrics_new();
    struct metrics_local *l = metrics_local_new();
    struct audit_entry ok = exchange(200, 200, "", "");
    struct audit_entry masked = exchange(503, 500, "mask", "");
    struct audit_entry refused = exchange(502, -1, "", "connect_refused");
    for (int i = 0; i < 3; i++)
        metrics_record(l, &ok, NULL);
    metrics_record(l, &masked, NULL);
    metrics_record(l, &ok, NULL);
    metrics_record(l, &refused, NULL);
    metrics_publish(l, m, 0);
    /* Many label sets after a publish: the local map grows, and the label
     * set seen last before it must still land on its own count. */
    metrics_record(l, &ok, NULL);
    char rule[16];
    for (int i = 0; i < 100; i++) {
        snprintf(rule, sizeof rule, "r%d", i);
        struct audit_entry e = exchange(200, 200, rule, "");
        metrics_record(l, &e, NULL);
    }
    metrics_record(l, &ok, NULL);
    metrics_record(l, &masked, "first");
    metrics_publish(l, m, 0);
    char *text = metrics_prometheus(m, 0);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"200\",class=\"2xx\","
                             "upstream_code=\"200\",rule=\"\",scheme=\"http\"}"),
              6);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"503\",class=\"5xx\","
                             "upstream_code=\"500\",rule=\"mask\",scheme=\"http\"}"),
              2);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"502\",class=\"5xx\","
                             "upstream_code=\"\",rule=\"\",scheme=\"http\"}"),
              1);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"200\",class=\"2xx\","
                             "upstream_code=\"200\",rule=\"r42\",scheme=\"http\"}"),
              1);
    CHECK_INT(count_of(text, "statusproxy_rule_hits_total{rule=\"mask\"}"), 2);
    CHECK_INT(count_of(text, "statusproxy_rule_hits_total{rule=\"first\"}"), 1);
    CHECK_INT(count_of(text, "statusproxy_upstream_errors_total{error=\"connect_refused\"}"), 1);
    CHECK_INT(count_of(text, "statusproxy_request_duration_seconds_count"), 109);
    free(text);
    metrics_local_free(l);
    metrics_free(m);
}

/* Rule names are cut where the audit log cuts them, so that /metrics and the
 * database name the same rule. */
static void test_long_rule_name_cut_like_the_log(void)
{
    struct metrics *m = metrics_new();
    struct metrics_local *l = metrics_local_new();
    char name[100];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    struct audit_entry e = exchange(200, 200, name, "");
    metrics_record(l, &e, NULL);
    metrics_publish(l, m, 0);
    char *text = metrics_prometheus(m, 0);
    char want[200];
    snprintf(want, sizeof want, "statusproxy_rule_hits_total{rule=\"%.*s\"}", AUDIT_MAX_RULE,
             name);
    CHECK_INT(count_of(text, want), 1);
    free(text);
    metrics_local_free(l);
    metrics_free(m);
}

/* Each scheme is its own series, also when exchanges of the same labels but
 * another scheme come in a row (the last-slot shortcut must not merge
 * them); /stats sums them per scheme. */
static void test_scheme_label(void)
{
    struct metrics *m = metrics_new();
    struct metrics_local *l = metrics_local_new();
    struct audit_entry plain = exchange(200, 200, "", "");
    struct audit_entry tls = plain, tunnel = exchange(200, -1, "", "");
    tls.scheme = AUDIT_SCHEME_HTTPS;
    tunnel.scheme = AUDIT_SCHEME_TUNNEL;
    metrics_record(l, &plain, NULL);
    metrics_record(l, &tls, NULL);
    metrics_record(l, &tls, NULL);
    metrics_record(l, &plain, NULL);
    metrics_record(l, &tunnel, NULL);
    metrics_publish(l, m, 0);
    char *text = metrics_prometheus(m, 0);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"200\",class=\"2xx\","
                             "upstream_code=\"200\",rule=\"\",scheme=\"http\"}"),
              2);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"200\",class=\"2xx\","
                             "upstream_code=\"200\",rule=\"\",scheme=\"https\"}"),
              2);
    CHECK_INT(count_of(text, "statusproxy_responses_total{code=\"200\",class=\"2xx\","
                             "upstream_code=\"\",rule=\"\",scheme=\"tunnel\"}"),
              1);
    free(text);
    char *json = metrics_stats_json(m, 0);
    CHECK(strstr(json, "\"schemes\": {\"http\": 2, \"https\": 2, \"tunnel\": 1}") != NULL);
    free(json);
    metrics_local_free(l);
    metrics_free(m);
}

int main(void)
{
    RUN(test_scheme_label);
    RUN(test_label_sets_counted_in_any_order);
    RUN(test_long_rule_name_cut_like_the_log);
    return unit_summary("metrics");
}
