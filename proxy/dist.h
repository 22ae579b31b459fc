/*
 * dist — the random delay distributions of DESIGN §10 (`delay normal MEAN
 * SD`, `delay lognormal P50 P99`), computed from uniform 64-bit draws that
 * the caller supplies. Pure functions: the caller owns the random streams,
 * so that the same seed gives the same sequence whoever asks.
 */
#ifndef STATUSPROXY_DIST_H
#define STATUSPROXY_DIST_H

#include <stdint.h>

enum dist_kind { DIST_NORMAL, DIST_LOGNORMAL };

/* Delays are truncated (clamped) to [0, DIST_MAX_MS]. */
#define DIST_MAX_MS (3600u * 1000u)

/* The z value of the 99th percentile of the standard normal distribution. */
#define DIST_Z99 2.3263478740408408

/* One standard normal value from two uniform 64-bit draws (Box-Muller). */
double dist_std_normal(uint64_t r1, uint64_t r2);

/* One delay in milliseconds: KIND normal takes A = mean, B = standard
 * deviation; lognormal takes A = median (P50), B = 99th percentile (P99),
 * both > 0 with B >= A. Clamped to [0, DIST_MAX_MS]. */
uint64_t dist_delay_ms(enum dist_kind kind, double a, double b, uint64_t r1, uint64_t r2);

#endif
