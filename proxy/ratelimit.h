/*
 * ratelimit — the sliding window behind the rule matcher `rate-limit
 * N/DURATION [per-client]` (DESIGN §10). A window counts the exchanges it
 * let through in the last DURATION. With N <= RATELIMIT_SLOTS it keeps
 * their exact times (a true sliding log); with a larger N it counts them in
 * slots of DURATION/63 (rounded up to whole ms) each, so an exchange counted
 * at time t still counts until at least t + DURATION (never less, at most
 * one slot more). Either way no DURATION-long span ever lets more than N through.
 * Thread-safe: one mutex per window set, taken only when a rule's other
 * matchers already hold. No event loop.
 */
#ifndef STATUSPROXY_RATELIMIT_H
#define STATUSPROXY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_SLOTS 64
/* Client addresses tracked at most by one per-client window. An address
 * whose window emptied is forgotten; when the table is full, the address
 * seen least recently among the candidates is forgotten (it starts anew). */
#define RATELIMIT_CLIENTS 1024
/* Probe length of the client table: bounds the work per exchange. */
#define RATELIMIT_PROBE 8

struct ratelimit; /* opaque */

/* A window of N exchanges per WINDOW_MS (N >= 1, WINDOW_MS >= 1); PER_CLIENT:
 * one window per client key. */
struct ratelimit *ratelimit_new(uint64_t n, uint64_t window_ms, int per_client);
void ratelimit_free(struct ratelimit *rl); /* NULL is fine */

/* One exchange at NOW_MS (monotonic) from KEY[0..keylen) (at most 16 bytes;
 * ignored without per-client). Returns 0 when the window has room, and
 * counts the exchange; or 1 when it is full (the exchange is not counted),
 * with *RETRY_MS (may be NULL) set to the milliseconds until it has room. */
int ratelimit_check(struct ratelimit *rl, const void *key, size_t keylen, uint64_t now_ms,
                    uint64_t *retry_ms);

/* Client keys currently held (for tests and introspection). */
size_t ratelimit_clients(struct ratelimit *rl);

#endif
