/*
 * test_faults — DESIGN §10: the time matchers against an injected clock,
 * the rate-limit sliding window (alone and through rules_match, with its
 * Retry-After value), the delay distributions (sample statistics of 10,000
 * draws; the same seed gives the same sequence), fault-header values,
 * slow-head pacing and the blast-radius counter.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>

#include "dist.h"
#include "fault.h"
#include "ratelimit.h"
#include "rules.h"
#include "unit.h"

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static struct rules *load(const char *text, uint64_t seed)
{
    struct rules_diags d = {0};
    struct rules *rs = rules_parse(text, strlen(text), "t.rules", seed, &d);
    if (!rs)
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "    %d:%d: %s\n", d.items[i].line, d.items[i].col, d.items[i].message);
    rules_diags_free(&d);
    return rs;
}

static struct sockaddr_in client_v4(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

/* Does some rule of the request phase apply to a GET / from IP? */
static int hits(struct rules *rs, const char *ip, struct rules_verdict *v)
{
    struct sockaddr_in sa = client_v4(ip);
    struct rules_exchange x = {.method = "GET", .method_len = 3, .host = "h", .host_len = 1,
                               .path = "/", .path_len = 1, .client = (struct sockaddr *)&sa};
    struct rules_verdict local;
    return rules_match(rs, RULES_REQUEST, &x, v ? v : &local);
}

/* ---- time windows ---- */

static void test_during_window(void)
{
    fake_now = 1000000;
    struct rules *rs = load("rule o during 2s..5s => abort 503\n", 1);
    CHECK(rs != NULL);
    int active;
    uint64_t next;
    CHECK(rule_time_state(rules_at(rs, 0), fake_now, &active, &next) == 1);
    CHECK_INT(active, 0);
    CHECK_INT(next, 2000);
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0);
    fake_now += 1999;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0);
    fake_now += 1;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 1);
    CHECK(rule_time_state(rules_at(rs, 0), fake_now, &active, &next) == 1);
    CHECK_INT(active, 1);
    CHECK_INT(next, 3000);
    fake_now += 2999;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 1);
    fake_now += 1;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0);
    CHECK(rule_time_state(rules_at(rs, 0), fake_now, &active, &next) == 1);
    CHECK_INT(active, 0);
    CHECK(next == UINT64_MAX);
    /* Enabling restarts the rule's clock. */
    CHECK_INT(rules_set_enabled(rs, "o", 1), 0);
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0);
    fake_now += 2000;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 1);
    rules_unref(rs);
}

static void test_during_open_end(void)
{
    fake_now = 500;
    struct rules *rs = load("rule o during 30s.. => abort 503\n", 1);
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0);
    fake_now += 30000;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 1);
    fake_now += 86400000;
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 1);
    int active;
    uint64_t next;
    rule_time_state(rules_at(rs, 0), fake_now, &active, &next);
    CHECK_INT(active, 1);
    CHECK(next == UINT64_MAX);
    rules_unref(rs);
}

static void test_cycle_flaps(void)
{
    fake_now = 7;
    struct rules *rs = load("rule f cycle 10s on 3s => abort 503\n", 1);
    int pattern[20];
    for (int i = 0; i < 20; i++) {
        pattern[i] = hits(rs, "127.0.0.1", NULL);
        fake_now += 1000;
    }
    for (int i = 0; i < 20; i++)
        CHECK_INT(pattern[i], i % 10 < 3);
    /* At 20 s: on for 3 s more; at 23 s: off for 7 s. */
    int active;
    uint64_t next;
    rule_time_state(rules_at(rs, 0), 7 + 20000, &active, &next);
    CHECK_INT(active, 1);
    CHECK_INT(next, 3000);
    rule_time_state(rules_at(rs, 0), 7 + 23500, &active, &next);
    CHECK_INT(active, 0);
    CHECK_INT(next, 6500);
    rules_unref(rs);
}

static void test_cycle_inside_during(void)
{
    fake_now = 0;
    struct rules *rs = load("rule f during 10s..20s cycle 4s on 1s => abort 503\n", 1);
    int active;
    uint64_t next;
    /* Before the window: the first change is at 12 s (cycle on at 12). */
    rule_time_state(rules_at(rs, 0), 0, &active, &next);
    CHECK_INT(active, 0);
    CHECK_INT(next, 12000);
    rule_time_state(rules_at(rs, 0), 12500, &active, &next);
    CHECK_INT(active, 1);
    CHECK_INT(next, 500);
    rule_time_state(rules_at(rs, 0), 25000, &active, &next);
    CHECK_INT(active, 0);
    CHECK(next == UINT64_MAX);
    rules_unref(rs);
}

static void test_rule_without_time_has_no_state(void)
{
    struct rules *rs = load("rule p path / => abort 503\n", 1);
    int active;
    uint64_t next;
    CHECK_INT(rule_time_state(rules_at(rs, 0), 0, &active, &next), 0);
    rules_unref(rs);
}

/* ---- the sliding window ---- */

static void test_window_counts_and_slides(void)
{
    struct ratelimit *rl = ratelimit_new(3, 1000, 0);
    uint64_t retry = 0;
    uint64_t t = 100000;
    CHECK_INT(ratelimit_check(rl, NULL, 0, t, &retry), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 100, &retry), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 200, &retry), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 300, &retry), 1);
    /* Room exactly when the first one leaves, 1000 ms after it. */
    CHECK_INT(retry, 700);
    /* Not yet room just before, room after. */
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 990, &retry), 1);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 1000, &retry), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 1001, &retry), 1);
    CHECK_INT(retry, 99);
    /* A long pause empties the window. */
    for (int i = 0; i < 3; i++)
        CHECK_INT(ratelimit_check(rl, NULL, 0, t + 10000 + (uint64_t)i, NULL), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 10003, NULL), 1);
    ratelimit_free(rl);
}

/* Offer one exchange per ms for 10 s: every W ms span lets at most N
 * through, and about N per window do get through. */
static void never_exceeds(uint64_t n, uint64_t w)
{
    enum { T = 10000 };
    struct ratelimit *rl = ratelimit_new(n, w, 0);
    static unsigned char ok[T];
    for (int t = 0; t < T; t++)
        ok[t] = !ratelimit_check(rl, NULL, 0, 5000 + (uint64_t)t, NULL);
    uint64_t worst = 0, total = 0, run = 0;
    for (int t = 0; t < T; t++) {
        run += ok[t];
        if (t >= (int)w)
            run -= ok[t - (int)w];
        if (run > worst)
            worst = run;
        total += ok[t];
    }
    CHECK_INT(worst, n);
    CHECK(total >= (T / w) * n * 9 / 10);
    ratelimit_free(rl);
}

static void test_window_never_exceeds_n_in_any_span(void)
{
    never_exceeds(50, 1000);  /* the exact log */
    never_exceeds(200, 1000); /* slot counters */
    never_exceeds(64, 100);
    never_exceeds(65, 100);
}

static void test_window_slots_retry_after(void)
{
    /* 100 in 1 s (slots of 16 ms): full at once; room when the first slot
     * leaves, between 1000 and 1032 ms after it. */
    struct ratelimit *rl = ratelimit_new(100, 1000, 0);
    uint64_t retry = 0, t = 64000;
    for (int i = 0; i < 100; i++)
        CHECK_INT(ratelimit_check(rl, NULL, 0, t, NULL), 0);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 10, &retry), 1);
    CHECK(retry >= 990 && retry <= 1022);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 999, NULL), 1);
    CHECK_INT(ratelimit_check(rl, NULL, 0, t + 10 + retry, NULL), 0);
    ratelimit_free(rl);
}

static void test_window_per_client(void)
{
    struct ratelimit *rl = ratelimit_new(2, 1000, 1);
    uint8_t a[4] = {127, 0, 0, 1}, b[4] = {127, 0, 0, 2};
    CHECK_INT(ratelimit_check(rl, a, 4, 0, NULL), 0);
    CHECK_INT(ratelimit_check(rl, a, 4, 1, NULL), 0);
    CHECK_INT(ratelimit_check(rl, a, 4, 2, NULL), 1);
    CHECK_INT(ratelimit_check(rl, b, 4, 3, NULL), 0);
    CHECK_INT(ratelimit_check(rl, b, 4, 4, NULL), 0);
    CHECK_INT(ratelimit_check(rl, b, 4, 5, NULL), 1);
    CHECK_INT(ratelimit_clients(rl), 2);
    ratelimit_free(rl);
}

static void test_window_client_table_is_bounded(void)
{
    struct ratelimit *rl = ratelimit_new(1, 1000, 1);
    for (uint32_t i = 0; i < 20000; i++)
        ratelimit_check(rl, &i, sizeof i, 1000 + i / 100, NULL);
    CHECK(ratelimit_clients(rl) <= RATELIMIT_CLIENTS);
    /* A new client always gets a window, even with the table full. */
    uint32_t fresh = 999999;
    CHECK_INT(ratelimit_check(rl, &fresh, sizeof fresh, 1300, NULL), 0);
    CHECK_INT(ratelimit_check(rl, &fresh, sizeof fresh, 1301, NULL), 1);
    ratelimit_free(rl);
}

struct hammer {
    struct ratelimit *rl;
    int passed;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 20000; i++)
        h->passed += !ratelimit_check(h->rl, NULL, 0, 777, NULL);
    return NULL;
}

static void test_window_thread_safe(void)
{
    struct ratelimit *rl = ratelimit_new(1000, 60000, 0);
    struct hammer h[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){rl, 0};
        pthread_create(&th[i], NULL, hammer_run, &h[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += h[i].passed;
    }
    CHECK_INT(total, 1000);
    ratelimit_free(rl);
}

static void test_rate_limit_rule_and_retry_after(void)
{
    fake_now = 50000;
    struct rules *rs = load("rule q rate-limit 2/10s per-client => abort 429 "
                            "set-header Retry-After auto\n", 1);
    struct rules_verdict v;
    CHECK_INT(hits(rs, "127.0.0.1", &v), 0);
    fake_now += 1000;
    CHECK_INT(hits(rs, "127.0.0.1", &v), 0);
    fake_now += 1000;
    CHECK_INT(hits(rs, "127.0.0.1", &v), 1);
    CHECK(v.actions->retry_after_auto);
    /* The first leaves at 50 s + 10 s: 8 s from 52 s. */
    CHECK_INT(v.retry_after_s, 8);
    CHECK_INT(hits(rs, "127.0.0.2", &v), 0);
    fake_now += 9000;
    CHECK_INT(hits(rs, "127.0.0.1", &v), 0);
    rules_unref(rs);
}

static void test_rate_limit_after_other_matchers(void)
{
    /* Exchanges that fail the path do not use the window. */
    fake_now = 1;
    struct rules *rs = load("rule q path /x rate-limit 1/1m => abort 429\n", 1);
    CHECK_INT(hits(rs, "127.0.0.1", NULL), 0); /* path is / */
    struct sockaddr_in sa = client_v4("127.0.0.1");
    struct rules_exchange x = {.method = "GET", .method_len = 3, .host = "h", .host_len = 1,
                               .path = "/x", .path_len = 2, .client = (struct sockaddr *)&sa};
    struct rules_verdict v;
    CHECK_INT(rules_match(rs, RULES_REQUEST, &x, &v), 0);
    CHECK_INT(rules_match(rs, RULES_REQUEST, &x, &v), 1);
    rules_unref(rs);
}

static void test_match_next_goes_on_after_the_rule(void)
{
    struct rules *rs = load("rule a path / => delay 1s\n"
                            "rule b method POST => abort 503\n"
                            "rule c path / every 1 => abort 502\n"
                            "rule d => abort 500\n", 1);
    struct rules_verdict v;
    CHECK_INT(hits(rs, "127.0.0.1", &v), 1);
    CHECK_STR(rule_name(v.rule), "a");
    struct sockaddr_in sa = client_v4("127.0.0.1");
    struct rules_exchange x = {.method = "GET", .method_len = 3, .host = "h", .host_len = 1,
                               .path = "/", .path_len = 1, .client = (struct sockaddr *)&sa};
    CHECK_INT(rules_match_next(rs, RULES_REQUEST, &x, &v), 1);
    CHECK_STR(rule_name(v.rule), "c");
    CHECK_INT(rules_match_next(rs, RULES_REQUEST, &x, &v), 1);
    CHECK_STR(rule_name(v.rule), "d");
    CHECK_INT(rules_match_next(rs, RULES_REQUEST, &x, &v), 0);
    rules_unref(rs);
}

/* ---- distributions ---- */

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_normal_statistics(void)
{
    enum { N = 10000 };
    double sum = 0, sq = 0;
    for (uint64_t i = 0; i < N; i++) {
        double v = (double)dist_delay_ms(DIST_NORMAL, 500, 100, mix(2 * i), mix(2 * i + 1));
        sum += v;
        sq += v * v;
    }
    double mean = sum / N, sd = sqrt(sq / N - mean * mean);
    CHECK(fabs(mean - 500) < 5);  /* standard error 1 ms */
    CHECK(fabs(sd - 100) < 4);
}

static void test_normal_truncated_at_zero(void)
{
    int zeros = 0;
    for (uint64_t i = 0; i < 10000; i++)
        zeros += dist_delay_ms(DIST_NORMAL, 10, 100, mix(2 * i), mix(2 * i + 1)) == 0;
    /* P(X <= 0) for N(10, 100) is about 46%. */
    CHECK(zeros > 4300 && zeros < 4900);
}

static void test_lognormal_percentiles(void)
{
    enum { N = 10000 };
    static uint64_t v[N];
    for (uint64_t i = 0; i < N; i++)
        v[i] = dist_delay_ms(DIST_LOGNORMAL, 100, 2000, mix(2 * i), mix(2 * i + 1));
    qsort(v, N, sizeof v[0], cmp_u64);
    uint64_t p50 = v[N / 2], p99 = v[N * 99 / 100];
    CHECK(p50 >= 95 && p50 <= 105);
    CHECK(p99 >= 1700 && p99 <= 2350);
    CHECK(v[N - 1] <= DIST_MAX_MS);
}

static void test_lognormal_capped_at_one_hour(void)
{
    int capped = 0;
    for (uint64_t i = 0; i < 1000; i++)
        capped += dist_delay_ms(DIST_LOGNORMAL, 3000000, 3600000 * 100.0, mix(2 * i),
                                mix(2 * i + 1)) == DIST_MAX_MS;
    CHECK(capped > 300);
}

static void draws_of(uint64_t seed, const char *text, uint64_t *out, int n)
{
    struct rules *rs = load(text, seed);
    for (int i = 0; i < n; i++) {
        struct rules_verdict v;
        out[i] = hits(rs, "127.0.0.1", &v) ? v.delay_ms : (uint64_t)-1;
    }
    rules_unref(rs);
}

static void test_same_seed_same_delays(void)
{
    static const char *texts[] = {"rule d => delay lognormal 100ms 2s\n",
                                  "rule d => delay normal 300ms 50ms\n"};
    for (size_t k = 0; k < 2; k++) {
        uint64_t a[50], b[50], c[50];
        draws_of(7, texts[k], a, 50);
        draws_of(7, texts[k], b, 50);
        draws_of(8, texts[k], c, 50);
        CHECK(memcmp(a, b, sizeof a) == 0);
        CHECK(memcmp(a, c, sizeof a) != 0);
        int distinct = 0;
        for (int i = 1; i < 50; i++)
            distinct += a[i] != a[0];
        CHECK(distinct > 40);
    }
}

/* ---- fault headers, pacing, blast radius ---- */

static void test_fault_header_values(void)
{
    uint64_t ms;
    char text[48];
    CHECK_INT(fault_header_delay("250ms", 5, &ms, text, sizeof text), 0);
    CHECK_INT(ms, 250);
    CHECK_STR(text, "delay 250ms");
    const char *ln = "lognormal 100ms 2s";
    CHECK_INT(fault_header_delay(ln, strlen(ln), &ms, text, sizeof text), 0);
    CHECK_STR(text, "delay lognormal 100ms 2s");
    CHECK(ms <= 600000);
    const char *nm = " normal  1s 100ms ";
    CHECK_INT(fault_header_delay(nm, strlen(nm), &ms, text, sizeof text), 0);
    CHECK_STR(text, "delay normal 1s 100ms");
    static const char *bad[] = {"lognormal 2s 1s", "weibull 1s 2s", "normal 1s", "11m", "",
                                "normal 1s 2s 3s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(fault_header_delay(bad[i], strlen(bad[i]), &ms, text, sizeof text), -1);
    enum rules_break brk;
    int bc;
    CHECK_INT(fault_header_kind("hang", 4, &brk, &bc), 0);
    CHECK_INT(brk, RULES_BREAK_HANG);
    CHECK_INT(fault_header_kind("garbage", 7, &brk, &bc), 0);
    CHECK_INT(brk, RULES_BREAK_GARBAGE);
    CHECK_INT(fault_header_kind("empty", 5, &brk, &bc), 0);
    CHECK_INT(brk, RULES_BREAK_EMPTY);
    CHECK_INT(fault_header_kind("bad-chunk", 9, &brk, &bc), 0);
    CHECK_INT(bc, 1);
    CHECK_INT(brk, RULES_BREAK_NONE);
    CHECK_INT(fault_header_kind("reset", 5, &brk, &bc), -1);
}

static void test_garbage_is_not_http(void)
{
    uint8_t buf[64];
    for (int i = 0; i < 100; i++) {
        fault_garbage(buf, sizeof buf);
        CHECK(buf[0] >= 0x80);
    }
}

static void test_slow_head_pacing(void)
{
    /* 100 bytes over 2 s: the first at once, in proportion, the last at the end. */
    CHECK_INT(fault_slow_due(100, 2000, 0), 1);
    CHECK_INT(fault_slow_due(100, 2000, 1000), 51);
    CHECK_INT(fault_slow_due(100, 2000, 1999), 99);
    CHECK_INT(fault_slow_due(100, 2000, 2000), 100);
    CHECK(fault_slow_tick_ms(100, 2000) >= 20 && fault_slow_tick_ms(100, 2000) <= 100);
    CHECK_INT(fault_slow_tick_ms(3, 2000), 1000);
}

static void test_blast_radius(void)
{
    fault_set_max_active(2);
    uint64_t over0 = fault_overflow();
    CHECK_INT(fault_acquire(), 1);
    CHECK_INT(fault_acquire(), 1);
    CHECK_INT(fault_acquire(), 0);
    CHECK_INT(fault_active(), 2);
    CHECK_INT(fault_overflow() - over0, 1);
    fault_release();
    CHECK_INT(fault_acquire(), 1);
    fault_release();
    fault_release();
    CHECK_INT(fault_active(), 0);
    fault_set_max_active(0);
    for (int i = 0; i < 5; i++)
        CHECK_INT(fault_acquire(), 1);
    for (int i = 0; i < 5; i++)
        fault_release();
}

int main(void)
{
    rules_set_clock(fake_clock);
    RUN(test_during_window);
    RUN(test_during_open_end);
    RUN(test_cycle_flaps);
    RUN(test_cycle_inside_during);
    RUN(test_rule_without_time_has_no_state);
    RUN(test_window_counts_and_slides);
    RUN(test_window_never_exceeds_n_in_any_span);
    RUN(test_window_slots_retry_after);
    RUN(test_window_per_client);
    RUN(test_window_client_table_is_bounded);
    RUN(test_window_thread_safe);
    RUN(test_rate_limit_rule_and_retry_after);
    RUN(test_rate_limit_after_other_matchers);
    RUN(test_match_next_goes_on_after_the_rule);
    RUN(test_normal_statistics);
    RUN(test_normal_truncated_at_zero);
    RUN(test_lognormal_percentiles);
    RUN(test_lognormal_capped_at_one_hour);
    RUN(test_same_seed_same_delays);
    RUN(test_fault_header_values);
    RUN(test_garbage_is_not_http);
    RUN(test_slow_head_pacing);
    RUN(test_blast_radius);
    rules_set_clock(NULL);
    return unit_summary("faults");
}
