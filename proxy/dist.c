/*
 * dist — normal and lognormal delays from uniform draws. Box-Muller keeps
 * it to two draws per value and no state, which is what lets a rule's k-th
 * delay be a pure function of (seed, rule, k).
 */
#include <math.h>

#include "dist.h"

/* The top 53 bits as a double in (0, 1]: never 0, so log() is finite. */
static double unit_open(uint64_t r)
{
    return ((double)(r >> 11) + 1.0) * 0x1.0p-53;
}

double dist_std_normal(uint64_t r1, uint64_t r2)
{
    double u1 = unit_open(r1), u2 = unit_open(r2);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

uint64_t dist_delay_ms(enum dist_kind kind, double a, double b, uint64_t r1, uint64_t r2)
{
    double z = dist_std_normal(r1, r2), v;
    if (kind == DIST_NORMAL) {
        v = a + b * z;
    } else {
        /* median = e^mu, P99 = e^(mu + z99 sigma) */
        double mu = log(a), sigma = (log(b) - log(a)) / DIST_Z99;
        v = exp(mu + sigma * z);
    }
    if (!(v > 0)) /* also NaN */
        return 0;
    if (v >= (double)DIST_MAX_MS)
        return DIST_MAX_MS;
    return (uint64_t)(v + 0.5);
}
