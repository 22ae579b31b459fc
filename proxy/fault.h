/*
 * fault — what the faults of DESIGN §10 need outside the rule language:
 * the blast-radius cap (`run --max-active-faults`), shared by all workers
 * through atomics; the fault headers' new values (`X-Statusproxy-Delay:
 * lognormal 100ms 2s`, `X-Statusproxy-Fault: hang|empty|garbage|bad-chunk`);
 * the bytes of `garbage` and `bad-chunk`; the pacing of `slow-head`.
 * Pure: no event loop, no I/O. The connection (conn.c, relay.c) does the
 * writing and the timers.
 */
#ifndef STATUSPROXY_FAULT_H
#define STATUSPROXY_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

/* ---- blast radius ---- */

/* At most N exchanges held by a delay, hang, throttle or slow-head at once;
 * 0: unlimited (the default). Set once at start. */
void fault_set_max_active(uint64_t n);
uint64_t fault_max_active(void);
/* Take one slot for an exchange about to be held. 1: taken (release it with
 * fault_release when the exchange ends); 0: the cap is reached, the fault
 * must be skipped, and the skip is counted. */
int fault_acquire(void);
void fault_release(void);
uint64_t fault_active(void);   /* slots held now */
uint64_t fault_overflow(void); /* faults skipped since start */

/* ---- fault headers ---- */

/* Seed the fault headers' random stream (the run's --seed). */
void fault_set_seed(uint64_t seed);
/* Parse an X-Statusproxy-Delay value: a duration, `normal MEAN SD` or
 * `lognormal P50 P99` (at most 10 minutes each). 0 with *MS drawn and TEXT
 * (the canonical form, for the record) filled; -1 if malformed. */
int fault_header_delay(const char *v, size_t len, uint64_t *ms, char *text, size_t textlen);
/* Parse an X-Statusproxy-Fault value: hang, empty, garbage or bad-chunk.
 * 0 with *BRK or *BAD_CHUNK set; -1 if unknown. */
int fault_header_kind(const char *v, size_t len, enum rules_break *brk, int *bad_chunk);

/* ---- bytes ---- */

/* The default size of `garbage`. */
#define FAULT_GARBAGE_DEFAULT 64
/* Fill BUF[0..n) with random bytes that cannot be read as an HTTP answer
 * (the first byte is not a token character); drawn from the seeded stream. */
void fault_garbage(uint8_t *buf, size_t n);
/* What `bad-chunk` writes after the first chunk: a chunk-size line that is
 * not hexadecimal (RFC 9112 §7.1), after which the connection closes. */
#define FAULT_BAD_CHUNK_LINE "zz-not-a-chunk-size\r\n"

/* ---- slow-head pacing ---- */

/* Milliseconds between two pieces of a head of LEN bytes spread over DUR_MS. */
uint64_t fault_slow_tick_ms(size_t len, uint64_t dur_ms);
/* How many of LEN bytes should be out ELAPSED_MS after the start. The last
 * byte waits for the end (it goes out when ELAPSED_MS >= DUR_MS). */
size_t fault_slow_due(size_t len, uint64_t dur_ms, uint64_t elapsed_ms);

#endif
