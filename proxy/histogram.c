/*
 * histogram — log-spaced duration buckets (see histogram.h).
 *
 * Index of a value v >= 16 with its highest set bit e: the octave (e - 3)
 * times HIST_SUB, plus the next four bits below the highest one. Below 16
 * the index is the value. The encoding is a version byte then, for each
 * non-empty bucket in order, varint(index - previous index) and
 * varint(count): a minute of one endpoint typically uses a dozen buckets,
 * some 25 bytes.
 */
#include "histogram.h"

#include <math.h>
#include <string.h>

#define HIST_VERSION 1

unsigned hist_index(uint64_t us)
{
    if (us < HIST_SUB)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    return (e - 3) * HIST_SUB + (unsigned)((us >> (e - 4)) & (HIST_SUB - 1));
}

uint64_t hist_value(unsigned index)
{
    if (index < HIST_SUB)
        return index;
    unsigned e = index / HIST_SUB + 3, sub = index % HIST_SUB;
    uint64_t width = 1ull << (e - 4);
    return (HIST_SUB + sub) * width + width / 2;
}

void hist_clear(struct hist *h)
{
    memset(h, 0, sizeof *h);
}

void hist_add(struct hist *h, uint64_t us, uint64_t n)
{
    h->counts[hist_index(us)] += n;
    h->total += n;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
}

double hist_quantile_us(const struct hist *h, double q)
{
    if (h->total == 0)
        return -1;
    /* Nearest rank: the smallest value with at least q * total at or below. */
    double want = ceil(q * (double)h->total);
    uint64_t rank = want < 1 ? 1 : want > (double)h->total ? h->total : (uint64_t)want;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            return (double)hist_value(i);
    }
    return (double)hist_value(HIST_BUCKETS - 1);
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p == end)
            return -1;
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

size_t hist_encode(const struct hist *h, uint8_t *out, size_t cap)
{
    if (cap < HIST_MAX_ENCODED)
        return 0;
    size_t n = 0;
    out[n++] = HIST_VERSION;
    unsigned prev = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (!h->counts[i])
            continue;
        n += put_varint(out + n, i - prev);
        n += put_varint(out + n, h->counts[i]);
        prev = i;
    }
    return n;
}

int hist_decode_add(struct hist *h, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    if (len == 0 || *p++ != HIST_VERSION)
        return -1;
    uint64_t index = 0;
    while (p < end) {
        uint64_t step, count;
        if (get_varint(&p, end, &step) || get_varint(&p, end, &count))
            return -1;
        /* Compared before adding: a huge step must not wrap the index
         * around to a bucket that looks valid. */
        if (step >= HIST_BUCKETS - index)
            return -1;
        index += step;
        h->counts[index] += count;
        h->total += count;
    }
    return 0;
}
