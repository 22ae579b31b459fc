/* Unit tests for histogram: bucket bounds, percentile accuracy against exact
 * nearest-rank percentiles of random samples, merging equal to building from
 * the union, and the compact encoding round trip. */
#include <math.h>
#include <stdlib.h>

#include "histogram.h"
#include "unit.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A deterministic generator (xorshift), so a failure reproduces. */
static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* Log-uniform from 1 µs to about 100 s. */
static uint64_t sample(void)
{
    double u = (double)(rnd() >> 11) / 9007199254740992.0;
    return (uint64_t)exp(u * log(1e8));
}

static void test_every_value_is_within_its_bucket_error(void)
{
    for (uint64_t v = 0; v < 5000000; v = v < 100 ? v + 1 : v + v / 97) {
        uint64_t mid = hist_value(hist_index(v));
        double err = v ? fabs((double)mid - (double)v) / (double)v : (double)mid;
        if (err > 1.0 / 32 + 1e-9) {
            CHECK(err <= 1.0 / 32);
            return;
        }
    }
    CHECK_INT(hist_index(0), 0);
    CHECK_INT(hist_index(15), 15);
    CHECK_INT(hist_index(16), 16);
    CHECK_INT(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
    CHECK(hist_index(1ull << 40) < HIST_BUCKETS);
}

static void test_percentiles_match_exact_ones_within_5_percent(void)
{
    enum { N = 20000 };
    static uint64_t v[N];
    static struct hist h;
    hist_clear(&h);
    for (int i = 0; i < N; i++) {
        v[i] = sample();
        hist_add(&h, v[i], 1);
    }
    qsort(v, N, sizeof v[0], cmp_u64);
    const double qs[] = {0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        size_t rank = (size_t)ceil(qs[k] * N);
        double exact = (double)v[rank - 1], got = hist_quantile_us(&h, qs[k]);
        if (fabs(got - exact) > 0.05 * exact + 1) {
            fprintf(stderr, "q=%g exact %g got %g\n", qs[k], exact, got);
            CHECK(fabs(got - exact) <= 0.05 * exact + 1);
        }
    }
    CHECK(hist_quantile_us(&(struct hist){0}, 0.5) < 0);
}

static void test_merge_equals_union(void)
{
    static struct hist a, b, u;
    hist_clear(&a);
    hist_clear(&b);
    hist_clear(&u);
    for (int i = 0; i < 5000; i++) {
        uint64_t x = sample();
        hist_add(i % 3 ? &a : &b, x, 1);
        hist_add(&u, x, 1);
    }
    hist_merge(&a, &b);
    CHECK(memcmp(&a, &u, sizeof a) == 0);
    /* And through the stored form, as reports merge minutes and files. */
    static uint8_t buf[HIST_MAX_ENCODED];
    static struct hist d;
    hist_clear(&d);
    size_t n = hist_encode(&b, buf, sizeof buf);
    CHECK(hist_decode_add(&d, buf, n) == 0);
    CHECK(memcmp(&d, &b, sizeof d) == 0);
    /* Decoding adds: a second copy doubles every bucket. */
    CHECK(hist_decode_add(&d, buf, n) == 0);
    CHECK(d.total == 2 * b.total && d.counts[hist_index(1000)] == 2 * b.counts[hist_index(1000)]);
    n = hist_encode(&u, buf, sizeof buf);
    CHECK(n > 1 && n < 1200);
    hist_clear(&d);
    CHECK(hist_decode_add(&d, buf, n) == 0);
    CHECK(memcmp(&d, &u, sizeof d) == 0);
}

static void test_decode_refuses_garbage(void)
{
    static struct hist h;
    const uint8_t bad_version[] = {9, 0, 1};
    const uint8_t cut[] = {1, 5, 0x80};
    const uint8_t past_end[] = {1, 0xff, 0x7f, 1};
    /* A step so large that the index would wrap around to a valid bucket. */
    const uint8_t wraps[] = {1, 5, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1};
    CHECK_INT(hist_decode_add(&h, bad_version, sizeof bad_version), -1);
    CHECK_INT(hist_decode_add(&h, cut, sizeof cut), -1);
    CHECK_INT(hist_decode_add(&h, past_end, sizeof past_end), -1);
    CHECK_INT(hist_decode_add(&h, cut, 0), -1);
    hist_clear(&h);
    CHECK_INT(hist_decode_add(&h, wraps, sizeof wraps), -1);
}

int main(void)
{
    RUN(test_every_value_is_within_its_bucket_error);
    RUN(test_percentiles_match_exact_ones_within_5_percent);
    RUN(test_merge_equals_union);
    RUN(test_decode_refuses_garbage);
    return unit_summary("histogram");
}
