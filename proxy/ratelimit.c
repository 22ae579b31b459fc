/*
 * ratelimit — sliding windows. A window of n <= RATELIMIT_SLOTS keeps the
 * times of the last n exchanges it let through (an exact log). A larger
 * one is a ring of RATELIMIT_SLOTS counters indexed by absolute slot number
 * (now / width); moving to a later slot zeroes the slots that fell out, so
 * the ring holds exactly the last `span` slots. Per-client windows live in
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
    union {
        uint32_t count[RATELIMIT_SLOTS]; /* slot counters (n > RATELIMIT_SLOTS) */
        uint64_t stamp[RATELIMIT_SLOTS]; /* exact log: head is the next write */
    } u;
};

struct ratelimit {
    pthread_mutex_t lock;
    uint64_t n, window_ms, width_ms;
    uint64_t span; /* slots an exchange counts in: ceil(window / width) + 1 */
    int per_client;
    int exact; /* n <= RATELIMIT_SLOTS: a log of the last n times, exact */
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
    rl->span = (rl->window_ms + rl->width_ms - 1) / rl->width_ms + 1;
    rl->per_client = per_client;
    rl->exact = rl->n <= RATELIMIT_SLOTS;
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

/* Move W's ring forward to slot S: slot k leaves when slot k + span begins. */
static void advance(const struct ratelimit *rl, struct window *w, uint64_t s)
{
    if (s <= w->head)
        return;
    if (s - w->head >= rl->span) {
        memset(w->u.count, 0, sizeof w->u.count);
        w->total = 0;
    } else {
        for (uint64_t j = w->head + 1; j <= s; j++) {
            uint64_t k = (j - rl->span) % RATELIMIT_SLOTS;
            w->total -= w->u.count[k];
            w->u.count[k] = 0;
        }
    }
    w->head = s;
}

/* When does a full window have room again? The oldest slots leave first:
 * slot k leaves when slot k + RATELIMIT_SLOTS begins. */
static uint64_t retry_after(const struct ratelimit *rl, const struct window *w, uint64_t now_ms)
{
    uint64_t need = w->total - rl->n + 1, freed = 0;
    uint64_t first = w->head + 1 >= rl->span ? w->head + 1 - rl->span : 0;
    for (uint64_t k = first; k <= w->head; k++) {
        freed += w->u.count[k % RATELIMIT_SLOTS];
        if (freed >= need) {
            uint64_t at = (k + rl->span) * rl->width_ms;
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

/* The exact log: the last n admitted times, oldest at head - total. */
static int check_exact(const struct ratelimit *rl, struct window *w, uint64_t now_ms,
                       uint64_t *retry_ms)
{
    uint64_t n = rl->n;
    while (w->total && w->u.stamp[(w->head + n - w->total) % n] + rl->window_ms <= now_ms)
        w->total--;
    if (w->total >= n) {
        if (retry_ms)
            *retry_ms = w->u.stamp[(w->head + n - w->total) % n] + rl->window_ms - now_ms;
        return 1;
    }
    w->u.stamp[w->head] = now_ms;
    w->head = (w->head + 1) % n;
    w->total++;
    return 0;
}

static int check_slots(const struct ratelimit *rl, struct window *w, uint64_t now_ms,
                       uint64_t *retry_ms)
{
    uint64_t s = now_ms / rl->width_ms;
    if (w->total == 0)
        w->head = s; /* a fresh or emptied window starts here */
    advance(rl, w, s);
    if (w->total >= rl->n) {
        if (retry_ms)
            *retry_ms = retry_after(rl, w, now_ms);
        return 1;
    }
    w->u.count[s % RATELIMIT_SLOTS]++;
    w->total++;
    return 0;
}

int ratelimit_check(struct ratelimit *rl, const void *key, size_t keylen, uint64_t now_ms,
                    uint64_t *retry_ms)
{
    if (keylen > 16)
        keylen = 16;
    pthread_mutex_lock(&rl->lock);
    struct window *w = rl->per_client ? client_window(rl, key, keylen, now_ms) : &rl->global;
    w->last_ms = now_ms;
    int full = rl->exact ? check_exact(rl, w, now_ms, retry_ms) : check_slots(rl, w, now_ms,
                                                                               retry_ms);

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
