/*
 * rules — rule sets and matching. A set is built once by the parser and
 * then only read, except for the per-rule counters and enabled flags, which
 * are C11 atomics so that every worker thread can match against one set
 * without locks. Matching allocates nothing: globs, CIDRs, status specs and
 * method lists were compiled when the set was parsed.
 *
 * Inside one rule, matchers are evaluated in this order, and the order is
 * part of the language's meaning:
 *   1. the static matchers (method, host, path, header, client, status):
 *      pure tests of the exchange;
 *   2. `every N` / `after N`, which share one per-rule counter n of the
 *      exchanges that reached this rule and passed step 1: `every N` holds
 *      iff n % N == 0, `after N` iff n > N. (n is kept only by rules that
 *      have either matcher: it is invisible otherwise.)
 *   2a. the time matchers `during` and `cycle`, read against the rule's
 *      clock (one clock read, only once step 1 held);
 *   3. `chance P%`, one draw of the rule's random stream;
 *   3a. `rate-limit N/D`, the rule's sliding window (a mutex per rule,
 *      taken only here): it holds for an exchange beyond N in the window;
 *      the exchanges it lets through are the ones the window counts;
 *   4. `limit N`, a compare-and-swap on the rule's hit count, so that
 *      concurrent workers never let it act more than N times.
 * If all hold, the hit count grows by one and the rule applies. Within a
 * phase the first enabled rule in file order that applies wins, and later
 * rules are not evaluated at all (their counters do not move). A disabled
 * rule is skipped entirely.
 *
 * Randomness is counter-based: the k-th draw of a rule's chance (or delay)
 * stream is splitmix64 at position k of a stream keyed by the seed and the
 * rule's name, so it is the same in every run with the same seed, costs one
 * atomic increment, and does not shift when rules are added around it.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "hash.h"
#include "rules_int.h"

/* ---- the clock ---- */

static uint64_t default_clock(void)
{
    return time_mono_us() / 1000;
}

static uint64_t (*clock_fn)(void) = default_clock;

void rules_set_clock(uint64_t (*now_ms)(void))
{
    clock_fn = now_ms ? now_ms : default_clock;
}

uint64_t rules_now_ms(void)
{
    return clock_fn();
}

/* ---- the random streams ---- */

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t stream_key(uint64_t seed, const char *name, uint64_t stream)
{
    return mix64(mix64(seed + stream * GOLDEN_GAMMA) ^ hash_fnv64_str(name));
}

/* Draw number K of the stream KEY: splitmix64's K-th output from state KEY. */
static uint64_t draw(uint64_t key, uint64_t k)
{
    return mix64(key + (k + 1) * GOLDEN_GAMMA);
}

/* ---- building and freeing ---- */

void rules_rule_free(struct rule *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->source);
    free(r->normalized);
    free(r->methods_text);
    free(r->methods);
    glob_free(r->host);
    glob_free(r->path);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        glob_free(r->headers[i].value);
    }
    free(r->headers);
    free((char *)r->actions.reason);
    free((char *)r->actions.body);
    /* The header names and values are the rule's own copies; the public
     * struct shows them const. */
    for (size_t i = 0; i < r->actions.n_set_headers; i++) {
        free((char *)r->set_headers[i].name);
        free((char *)r->set_headers[i].value);
    }
    free(r->set_headers);
    for (size_t i = 0; i < r->actions.n_del_headers; i++)
        free((char *)r->del_headers[i].name);
    free(r->del_headers);
    ratelimit_free(r->rate);
    free(r);
}

struct rules *rules_set_build(struct rule **v, size_t n, uint64_t seed)
{
    struct rules *rs = xcalloc(1, sizeof *rs);
    atomic_init(&rs->refs, 1);
    rs->seed = seed;
    rs->v = v;
    rs->n = n;
    for (int p = 0; p < 2; p++)
        rs->by_phase[p] = xcalloc(n ? n : 1, sizeof *rs->by_phase[p]);
    uint64_t now = rules_now_ms();
    for (size_t i = 0; i < n; i++) {
        struct rule *r = v[i];
        atomic_init(&r->epoch_ms, now);
        if (r->rate_n)
            r->rate = ratelimit_new(r->rate_n, r->rate_ms, r->rate_per_client);
        r->chance_key = stream_key(seed, r->name, 1);
        r->delay_key = stream_key(seed, r->name, 2);
        atomic_init(&r->seen, 0);
        atomic_init(&r->hits, 0);
        atomic_init(&r->chance_draws, 0);
        atomic_init(&r->delay_draws, 0);
        atomic_init(&r->enabled, 1);
        rs->by_phase[r->phase][rs->n_phase[r->phase]++] = r;
    }
    return rs;
}

struct rules *rules_ref(struct rules *rs)
{
    atomic_fetch_add_explicit(&rs->refs, 1, memory_order_relaxed);
    return rs;
}

void rules_unref(struct rules *rs)
{
    if (!rs)
        return;
    /* acq_rel: the last owner must see every other owner's writes to the
     * counters before it frees them. */
    if (atomic_fetch_sub_explicit(&rs->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < rs->n; i++)
        rules_rule_free(rs->v[i]);
    free(rs->v);
    free(rs->by_phase[0]);
    free(rs->by_phase[1]);
    free(rs);
}

/* ---- matching ---- */

static int has(const struct rule *r, enum rule_matcher m)
{
    return (r->has >> m) & 1;
}

static int method_matches(const struct rule *r, const struct rules_exchange *x)
{
    for (size_t i = 0; i < r->n_methods; i++)
        if (r->methods[i].len == x->method_len &&
            memcmp(r->methods[i].name, x->method, x->method_len) == 0)
            return 1;
    return 0;
}

static int header_matches(const struct rule_header_match *h, const struct http_head *head)
{
    if (!head)
        return 0;
    for (int i = http_head_find(head, h->name, 0); i >= 0; i = http_head_find(head, h->name, i + 1)) {
        const struct http_field *f = &head->fields[i];
        if (!h->value || glob_match(h->value, http_head_str(head, f->value), f->value_len))
            return 1;
    }
    return 0;
}

static int static_match(const struct rule *r, const struct rules_exchange *x)
{
    if (has(r, RM_METHOD) && !method_matches(r, x))
        return 0;
    if (r->host && !glob_match(r->host, x->host, x->host ? x->host_len : 0))
        return 0;
    if (r->path && !glob_match(r->path, x->path, x->path ? x->path_len : 0))
        return 0;
    for (size_t i = 0; i < r->n_headers; i++)
        if (!header_matches(&r->headers[i], x->request))
            return 0;
    if (has(r, RM_SCHEME) && x->scheme != r->scheme)
        return 0;
    if (has(r, RM_CLIENT) && (!x->client || !cidr_contains(&r->client, x->client)))
        return 0;
    if (has(r, RM_STATUS) &&
        (x->status < 100 || x->status > 599 ||
         !((r->status_bits[x->status / 64] >> (x->status % 64)) & 1)))
        return 0;
    return 1;
}

/* Take one hit if the limit allows it. */
static int take_hit(struct rule *r)
{
    if (!r->limit) {
        atomic_fetch_add_explicit(&r->hits, 1, memory_order_relaxed);
        return 1;
    }
    uint64_t h = atomic_load_explicit(&r->hits, memory_order_relaxed);
    do {
        if (h >= r->limit)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(&r->hits, &h, h + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 1;
}

static uint64_t pick_delay(struct rule *r)
{
    const struct rule_actions *a = &r->actions;
    if (a->has_delay && a->delay_kind != RULES_DELAY_UNIFORM) {
        /* Two draws per value, at positions 2k and 2k+1 of the stream. */
        uint64_t k = atomic_fetch_add_explicit(&r->delay_draws, 1, memory_order_relaxed);
        return dist_delay_ms(a->delay_kind == RULES_DELAY_NORMAL ? DIST_NORMAL : DIST_LOGNORMAL,
                             a->delay_a, a->delay_b, draw(r->delay_key, 2 * k),
                             draw(r->delay_key, 2 * k + 1));
    }
    if (!a->has_delay || a->delay_min_ms == a->delay_max_ms)
        return a->has_delay ? a->delay_min_ms : 0;
    uint64_t k = atomic_fetch_add_explicit(&r->delay_draws, 1, memory_order_relaxed);
    uint64_t span = a->delay_max_ms - a->delay_min_ms;
    uint64_t x = draw(r->delay_key, k);
    /* Uniform over [min, max]; the modulo bias is below 2^-40 for any
     * delay a person would write. */
    return a->delay_min_ms + (span == UINT64_MAX ? x : x % (span + 1));
}

/* Do the time matchers hold at T milliseconds on the rule's clock? */
static int time_holds(const struct rule *r, uint64_t t)
{
    if (has(r, RM_DURING) && (t < r->during_start || t >= r->during_end))
        return 0;
    if (has(r, RM_CYCLE) && t % r->cycle_period >= r->cycle_on)
        return 0;
    return 1;
}

/* Milliseconds on the rule's clock. */
static uint64_t rule_clock(const struct rule *r, uint64_t now)
{
    uint64_t epoch = atomic_load_explicit(&((struct rule *)r)->epoch_ms, memory_order_relaxed);
    return now > epoch ? now - epoch : 0;
}

/* The client address as a rate-limit key: 4 bytes for IPv4 (v4-mapped
 * included), 16 for IPv6. */
static size_t client_key(const struct sockaddr *sa, uint8_t key[16])
{
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0) {
            memcpy(key, b + 12, 4);
            return 4;
        }
        memcpy(key, b, 16);
        return 16;
    }
    return 0;
}

/* Step 3a: 1 when the exchange is beyond the rate (the matcher holds). */
static int rate_holds(struct rule *r, const struct rules_exchange *x, uint64_t now,
                      uint64_t *retry_s)
{
    uint8_t key[16];
    size_t keylen = r->rate_per_client ? client_key(x->client, key) : 0;
    uint64_t retry_ms = 0;
    if (!ratelimit_check(r->rate, key, keylen, now, &retry_ms))
        return 0;
    *retry_s = (retry_ms + 999) / 1000;
    if (*retry_s == 0)
        *retry_s = 1;
    return 1;
}

/* The clock, read at most once per rules_match and only when needed. */
struct lazy_now {
    uint64_t ms;
    int read;
};

static uint64_t now_of(struct lazy_now *now)
{
    if (!now->read) {
        now->ms = rules_now_ms();
        now->read = 1;
    }
    return now->ms;
}

/* Steps 2-4 of the order in the file comment. */
static int dynamic_match(struct rule *r, const struct rules_exchange *x, struct lazy_now *now,
                         uint64_t *retry_s)
{
    if ((has(r, RM_DURING) || has(r, RM_CYCLE)) && !time_holds(r, rule_clock(r, now_of(now))))
        return 0;
    if (r->every || has(r, RM_AFTER)) {
        uint64_t n = atomic_fetch_add_explicit(&r->seen, 1, memory_order_relaxed) + 1;
        if (r->every && n % r->every != 0)
            return 0;
        if (has(r, RM_AFTER) && n <= r->after)
            return 0;
    }
    if (has(r, RM_CHANCE)) {
        uint64_t k = atomic_fetch_add_explicit(&r->chance_draws, 1, memory_order_relaxed);
        /* The top 53 bits as a double in [0, 1): exact, so 100% always holds. */
        double u = (double)(draw(r->chance_key, k) >> 11) * 0x1.0p-53;
        if (!(u < r->chance))
            return 0;
    }
    if (r->rate && !rate_holds(r, x, now_of(now), retry_s))
        return 0;
    return take_hit(r);
}

static int match_from(struct rules *rs, enum rules_phase phase, size_t from,
                      const struct rules_exchange *x, struct rules_verdict *v)
{
    struct rule **list = rs->by_phase[phase];
    struct lazy_now now = {0, 0};
    for (size_t i = from; i < rs->n_phase[phase]; i++) {
        struct rule *r = list[i];
        if (!atomic_load_explicit(&r->enabled, memory_order_relaxed))
            continue;
        uint64_t retry_s = 0;
        if (!static_match(r, x) || !dynamic_match(r, x, &now, &retry_s))
            continue;
        v->rule = r;
        v->actions = &r->actions;
        v->delay_ms = pick_delay(r);
        v->retry_after_s = retry_s;
        v->next = i + 1;
        return 1;
    }
    return 0;
}

int rules_match(struct rules *rs, enum rules_phase phase, const struct rules_exchange *x,
                struct rules_verdict *v)
{
    return match_from(rs, phase, 0, x, v);
}

int rules_match_next(struct rules *rs, enum rules_phase phase, const struct rules_exchange *x,
                     struct rules_verdict *v)
{
    return match_from(rs, phase, v->next, x, v);
}

int rules_has_phase(const struct rules *rs, enum rules_phase phase)
{
    return rs->n_phase[phase] > 0;
}

/* ---- introspection ---- */

size_t rules_count(const struct rules *rs)
{
    return rs->n;
}

const struct rule *rules_at(const struct rules *rs, size_t i)
{
    return i < rs->n ? rs->v[i] : NULL;
}

const struct rule *rules_find(const struct rules *rs, const char *name)
{
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->v[i]->name, name) == 0)
            return rs->v[i];
    return NULL;
}

const char *rule_name(const struct rule *r)
{
    return r->name;
}

enum rules_phase rule_phase(const struct rule *r)
{
    return r->phase;
}

int rule_line(const struct rule *r)
{
    return r->line;
}

const char *rule_source(const struct rule *r)
{
    return r->source;
}

const char *rule_normalized(const struct rule *r)
{
    return r->normalized;
}

const char *rule_actions_text(const struct rule *r)
{
    return r->normalized + r->actions_off;
}

const struct rule_actions *rule_get_actions(const struct rule *r)
{
    return &r->actions;
}

int rule_enabled(const struct rule *r)
{
    /* The counters are atomics inside a const view: reading them is safe. */
    return atomic_load_explicit(&((struct rule *)r)->enabled, memory_order_relaxed);
}

uint64_t rule_hits(const struct rule *r)
{
    return atomic_load_explicit(&((struct rule *)r)->hits, memory_order_relaxed);
}

/* The next time after T (rule clock) at which a time matcher flips. */
static uint64_t next_flip(const struct rule *r, uint64_t t)
{
    uint64_t next = UINT64_MAX;
    if (has(r, RM_DURING)) {
        if (t < r->during_start)
            return r->during_start; /* nothing holds before it anyway */
        if (t < r->during_end)
            next = r->during_end;
    }
    if (has(r, RM_CYCLE)) {
        uint64_t phase = t % r->cycle_period, base = t - phase;
        uint64_t c = phase < r->cycle_on ? base + r->cycle_on : base + r->cycle_period;
        if (c < next)
            next = c;
    }
    return next;
}

int rule_time_state(const struct rule *r, uint64_t now_ms, int *active, uint64_t *next_ms)
{
    if (!has(r, RM_DURING) && !has(r, RM_CYCLE))
        return 0;
    uint64_t t0 = rule_clock(r, now_ms), t = t0;
    *active = time_holds(r, t0);
    *next_ms = UINT64_MAX;
    /* After `during` ended nothing changes any more; otherwise step from
     * flip to flip until the combined answer changes (bounded). */
    if (has(r, RM_DURING) && t0 >= r->during_end)
        return 1;
    for (int i = 0; i < 1000; i++) {
        t = next_flip(r, t);
        if (t == UINT64_MAX)
            break;
        if (time_holds(r, t) != *active) {
            *next_ms = t - t0;
            break;
        }
    }
    return 1;
}

int rules_set_enabled(struct rules *rs, const char *name, int enabled)
{
    struct rule *r = (struct rule *)rules_find(rs, name);
    if (!r)
        return -1;
    if (enabled)
        atomic_store_explicit(&r->epoch_ms, rules_now_ms(), memory_order_relaxed);
    atomic_store_explicit(&r->enabled, enabled ? 1 : 0, memory_order_relaxed);
    return 0;
}
