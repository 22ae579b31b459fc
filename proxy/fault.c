/*
 * fault — blast-radius counters, fault-header parsing, garbage bytes and
 * slow-head pacing. The counters are process-wide atomics: the cap is
 * global across worker threads. The random stream (garbage bytes, delays
 * asked for by header) is counter-based like the rules' streams: draw k is
 * splitmix64 at position k of a stream keyed by the seed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dist.h"
#include "fault.h"
#include "units.h"

static _Atomic uint64_t max_active, active, overflow;
static _Atomic uint64_t draws;
static uint64_t stream_key = 0x6a09e667f3bcc909ULL;

void fault_set_max_active(uint64_t n)
{
    atomic_store(&max_active, n);
}

uint64_t fault_max_active(void)
{
    return atomic_load_explicit(&max_active, memory_order_relaxed);
}

int fault_acquire(void)
{
    uint64_t cap = atomic_load_explicit(&max_active, memory_order_relaxed);
    if (!cap) {
        atomic_fetch_add_explicit(&active, 1, memory_order_relaxed);
        return 1;
    }
    /* A compare-and-swap, so that racing workers never exceed the cap. */
    uint64_t n = atomic_load_explicit(&active, memory_order_relaxed);
    do {
        if (n >= cap) {
            atomic_fetch_add_explicit(&overflow, 1, memory_order_relaxed);
            return 0;
        }
    } while (!atomic_compare_exchange_weak_explicit(&active, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 1;
}

void fault_release(void)
{
    atomic_fetch_sub_explicit(&active, 1, memory_order_relaxed);
}

uint64_t fault_active(void)
{
    return atomic_load_explicit(&active, memory_order_relaxed);
}

uint64_t fault_overflow(void)
{
    return atomic_load_explicit(&overflow, memory_order_relaxed);
}

/* ---- the random stream ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void fault_set_seed(uint64_t seed)
{
    stream_key = mix64(seed ^ 0x6a09e667f3bcc909ULL);
}

static uint64_t next_draw(void)
{
    uint64_t k = atomic_fetch_add_explicit(&draws, 1, memory_order_relaxed);
    return mix64(stream_key + (k + 1) * 0x9e3779b97f4a7c15ULL);
}

/* ---- fault headers ---- */

#define HEADER_DELAY_MAX_MS (10 * 60 * 1000)

/* Cut V[0..len) at spaces into at most 3 words; returns how many. */
static size_t words(const char *v, size_t len, const char *w[3], size_t wl[3])
{
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i == len)
            break;
        if (n == 3)
            return 4;
        w[n] = v + i;
        while (i < len && v[i] != ' ' && v[i] != '\t')
            i++;
        wl[n] = (size_t)(v + i - w[n]);
        n++;
    }
    return n;
}

int fault_header_delay(const char *v, size_t len, uint64_t *ms, char *text, size_t textlen)
{
    const char *w[3];
    size_t wl[3];
    size_t n = words(v, len, w, wl);
    uint64_t a, b;
    char x[32], y[32];
    if (n == 1) {
        if (units_parse_duration(w[0], wl[0], &a) != 0 || a > HEADER_DELAY_MAX_MS)
            return -1;
        *ms = a;
        units_format_duration(a, x, sizeof x);
        snprintf(text, textlen, "delay %s", x);
        return 0;
    }
    if (n != 3 || units_parse_duration(w[1], wl[1], &a) != 0 ||
        units_parse_duration(w[2], wl[2], &b) != 0 || a > HEADER_DELAY_MAX_MS ||
        b > HEADER_DELAY_MAX_MS)
        return -1;
    int lognormal = wl[0] == 9 && memcmp(w[0], "lognormal", 9) == 0;
    if (!lognormal && !(wl[0] == 6 && memcmp(w[0], "normal", 6) == 0))
        return -1;
    if (lognormal && (a == 0 || b < a))
        return -1;
    uint64_t r1 = next_draw(), r2 = next_draw();
    *ms = dist_delay_ms(lognormal ? DIST_LOGNORMAL : DIST_NORMAL, (double)a, (double)b, r1, r2);
    if (*ms > HEADER_DELAY_MAX_MS)
        *ms = HEADER_DELAY_MAX_MS;
    units_format_duration(a, x, sizeof x);
    units_format_duration(b, y, sizeof y);
    snprintf(text, textlen, "delay %s %s %s", lognormal ? "lognormal" : "normal", x, y);
    return 0;
}

int fault_header_kind(const char *v, size_t len, enum rules_break *brk, int *bad_chunk)
{
    static const struct {
        const char *word;
        enum rules_break brk;
    } kinds[] = {
        {"hang", RULES_BREAK_HANG}, {"empty", RULES_BREAK_EMPTY},
        {"garbage", RULES_BREAK_GARBAGE}, {"bad-chunk", RULES_BREAK_NONE},
    };
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].word) == len && memcmp(kinds[i].word, v, len) == 0) {
            *brk = kinds[i].brk;
            *bad_chunk = kinds[i].brk == RULES_BREAK_NONE;
            return 0;
        }
    }
    return -1;
}

/* ---- bytes ---- */

void fault_garbage(uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = next_draw();
        for (size_t k = 0; k < 8 && i + k < n; k++)
            buf[i + k] = (uint8_t)(r >> (8 * k));
    }
    /* No status line starts with a byte at or above 0x80. */
    if (n)
        buf[0] |= 0x80;
}

/* ---- slow-head pacing ---- */

uint64_t fault_slow_tick_ms(size_t len, uint64_t dur_ms)
{
    /* About 20 pieces a second, fewer when the head is short. */
    uint64_t tick = len > 1 ? dur_ms / (len - 1) : dur_ms;
    if (tick < 50)
        tick = 50;
    return tick > dur_ms ? (dur_ms ? dur_ms : 1) : tick;
}

size_t fault_slow_due(size_t len, uint64_t dur_ms, uint64_t elapsed_ms)
{
    if (len == 0 || elapsed_ms >= dur_ms)
        return len;
    /* The first byte at once, the rest in proportion to the time gone. */
    size_t due = 1 + (size_t)((double)len * (double)elapsed_ms / (double)dur_ms);
    return due >= len ? (len > 1 ? len - 1 : 0) : due;
}
