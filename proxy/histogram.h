/*
 * histogram — a mergeable histogram of durations for latency percentiles.
 * Buckets are log-spaced: values below 16 µs are exact, above that every
 * power of two is cut into 16 equal buckets, so a bucket's midpoint is within
 * 1/32 (about 3.1%) of any value in it. Adding, merging and reading
 * percentiles need no allocation; the compact form (hist_encode) lists only
 * the buckets in use, as varints, and is what the aggregates store as a BLOB.
 * Pure: no SQLite, no I/O.
 */
#ifndef STATUSPROXY_HISTOGRAM_H
#define STATUSPROXY_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB 16                     /* buckets per power of two */
#define HIST_MAX_EXP 40                 /* values up to 2^41 µs (25 days) are kept apart */
#define HIST_BUCKETS ((HIST_MAX_EXP - 2) * HIST_SUB)
/* The longest encoding: a version byte, then per bucket a 2-byte index step
 * and a count of at most 10 bytes. */
#define HIST_MAX_ENCODED (1 + HIST_BUCKETS * 12)

struct hist {
    uint64_t total;
    uint64_t counts[HIST_BUCKETS];
};

/* The bucket of a duration of US microseconds, and the value a bucket stands
 * for (its midpoint; the value itself below 16 µs). */
unsigned hist_index(uint64_t us);
uint64_t hist_value(unsigned index);

void hist_clear(struct hist *h);
/* Count N more durations of US microseconds. */
void hist_add(struct hist *h, uint64_t us, uint64_t n);
/* DST += SRC. */
void hist_merge(struct hist *dst, const struct hist *src);

/* The Q-quantile (0 < Q <= 1) by nearest rank, in microseconds, or -1 when
 * H is empty. */
double hist_quantile_us(const struct hist *h, double q);

/* Write H's compact form to OUT (room for HIST_MAX_ENCODED bytes suffices);
 * returns its length. */
size_t hist_encode(const struct hist *h, uint8_t *out, size_t cap);
/* Add the histogram encoded in P[0..len) to H. Returns 0, or -1 for bytes
 * that are not an encoding (H may then hold part of it). */
int hist_decode_add(struct hist *h, const uint8_t *p, size_t len);

#endif
