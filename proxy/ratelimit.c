/*
 * ratelimit — sliding windows of slot counters. Each window is a ring of
 * RATELIMIT_SLOTS counters indexed by absolute slot number (now / width);
 * moving to a later slot zeroes the slots that fell out, so the ring always
 * holds exactly the last RATELIMIT_SLOTS slots. Per-client windows live in
 * a fixed open-addressing table allocated on first use, so the memory of a
 * rule is bounded whatever the clients do.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "util.h"

struct window {
    uint8_t key[16];
    uint8_t keylen;
    uint8_t used;
    uint64_t head;  /* absolute number of the newest slot in the ring */
    uint64_t total; /* sum of count[] */
    uint64_t last_ms;
    uint32_t count[RATELIMIT_SLOTS];
};

struct ratelimit {
    pthread_mutex_t lock;
    uint64_t n, window_ms, width_ms;
    int per_client;
    struct window global;
    struct window *table; /* RATELIMIT_CLIENTS entries, or NULL until used */
    size_t clients;
};

struct ratelimit *ratelimit_new(uint64_t n, uint64_t window_ms, int per_client)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    pthread_mutex_init(&rl->lock, NULL);
    rl->n = n ? n : 1;
    rl->window_ms = window_ms ? window_ms : 1;
    /* 63 slots cover at least the window; the 64th is the one filling now. */
    rl->width_ms = (rl->window_ms + RATELIMIT_SLOTS - 2) / (RATELIMIT_SLOTS - 1);
    rl->per_client = per_client;
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl->table);
    free(rl);
}

/* Move W's ring forward to slot S, dropping the slots that left it. */
static void advance(struct window *w, uint64_t s)
{
    if (s <= w->head)
        return;
    if (s - w->head >= RATELIMIT_SLOTS) {
        memset(w->count, 0, sizeof w->count);
        w->total = 0;
    } else {
        for (uint64_t k = w->head + 1; k <= s; k++) {
            w->total -= w->count[k % RATELIMIT_SLOTS];
            w->count[k % RATELIMIT_SLOTS] = 0;
        }
    }
    w->head = s;
}

/* When does a full window have room again? The oldest slots leave first:
 * slot k leaves when slot k + RATELIMIT_SLOTS begins. */
static uint64_t retry_after(const struct ratelimit *rl, const struct window *w, uint64_t now_ms)
{
    uint64_t need = w->total - rl->n + 1, freed = 0;
    uint64_t first = w->head + 1 >= RATELIMIT_SLOTS ? w->head + 1 - RATELIMIT_SLOTS : 0;
    for (uint64_t k = first; k <= w->head; k++) {
        freed += w->count[k % RATELIMIT_SLOTS];
        if (freed >= need) {
            uint64_t at = (k + RATELIMIT_SLOTS) * rl->width_ms;
            return at > now_ms ? at - now_ms : 1;
        }
    }
    return rl->window_ms;
}

static int window_empty(const struct ratelimit *rl, const struct window *w, uint64_t now_ms)
{
    return w->total == 0 || w->last_ms + rl->window_ms + 2 * rl->width_ms < now_ms;
}

static int rank(const struct ratelimit *rl, const struct window *w, uint64_t now_ms)
{
    return !w->used ? 0 : window_empty(rl, w, now_ms) ? 1 : 2;
}

/* The client window of KEY, claimed if new; never NULL. */
static struct window *client_window(struct ratelimit *rl, const void *key, size_t keylen,
                                    uint64_t now_ms)
{
    if (!rl->table)
        rl->table = xcalloc(RATELIMIT_CLIENTS, sizeof *rl->table);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < keylen; i++)
        h = (h ^ ((const uint8_t *)key)[i]) * 0x100000001b3ULL;
    struct window *spare = NULL;
    for (size_t p = 0; p < RATELIMIT_PROBE; p++) {
        struct window *w = &rl->table[(h + p) & (RATELIMIT_CLIENTS - 1)];
        if (w->used && w->keylen == keylen && memcmp(w->key, key, keylen) == 0)
            return w;
        /* Prefer a free slot, then an expired one, then the least recent. */
        if (!spare || rank(rl, w, now_ms) < rank(rl, spare, now_ms) ||
            (rank(rl, w, now_ms) == rank(rl, spare, now_ms) && w->last_ms < spare->last_ms))
            spare = w;
    }
    if (!spare->used)
        rl->clients++;
    memset(spare, 0, sizeof *spare);
    memcpy(spare->key, key, keylen);
    spare->keylen = (uint8_t)keylen;
    spare->used = 1;
    return spare;
}

int ratelimit_check(struct ratelimit *rl, const void *key, size_t keylen, uint64_t now_ms,
                    uint64_t *retry_ms)
{
    if (keylen > 16)
        keylen = 16;
    pthread_mutex_lock(&rl->lock);
    struct window *w = rl->per_client ? client_window(rl, key, keylen, now_ms) : &rl->global;
    uint64_t s = now_ms / rl->width_ms;
    if (w->total == 0)
        w->head = s; /* a fresh or emptied window starts here */
    advance(w, s);
    w->last_ms = now_ms;
    int full = w->total >= rl->n;
    if (full) {
        if (retry_ms)
            *retry_ms = retry_after(rl, w, now_ms);
    } else {
        w->count[s % RATELIMIT_SLOTS]++;
        w->total++;
    }
    pthread_mutex_unlock(&rl->lock);
    return full;
}

size_t ratelimit_clients(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->lock);
    size_t n = rl->clients;
    pthread_mutex_unlock(&rl->lock);
    return n;
}
