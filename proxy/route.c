/*
 * route — path templating and the per-host cap (see route.h).
 *
 * Templating walks the path segment by segment and classifies each one by
 * its characters alone, so it costs one pass over the path and no
 * allocation: it runs on the audit writer thread for every exchange. The cap
 * is an open-addressing set of (host, route) strings plus a per-host count.
 */
#include "route.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "util.h"

struct route_patterns {
    char **list;
    size_t n;
};

struct route_patterns *route_patterns_new(void)
{
    return xcalloc(1, sizeof(struct route_patterns));
}

int route_patterns_add(struct route_patterns *p, const char *pattern, char *err, size_t errlen)
{
    size_t len = strlen(pattern);
    if (pattern[0] != '/' || len > ROUTE_MAX) {
        snprintf(err, errlen, "--route: expected a path pattern starting with '/', got '%s'",
                 pattern);
        return -1;
    }
    const char *star = strchr(pattern, '*');
    if (star && (star[1] != '\0' || star[-1] != '/')) {
        snprintf(err, errlen, "--route: '*' may only be the last segment, in '%s'", pattern);
        return -1;
    }
    p->list = xrealloc(p->list, (p->n + 1) * sizeof *p->list);
    p->list[p->n++] = xstrdup(pattern);
    return 0;
}

size_t route_patterns_count(const struct route_patterns *p)
{
    return p ? p->n : 0;
}

void route_patterns_free(struct route_patterns *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->list[i]);
    free(p->list);
    free(p);
}

/* Does PATH[0..len) match PAT segment by segment? "{x}" is one non-empty
 * segment, a final "*" any rest (also none). */
static int pattern_match(const char *pat, const char *path, size_t len)
{
    const char *end = path + len;
    while (*pat) {
        if (pat[0] == '*')
            return 1;
        if (path == end || *pat != '/' || *path != '/')
            return 0;
        pat++;
        path++;
        if (pat[0] == '*')
            return 1;
        const char *pseg_end = strchr(pat, '/');
        size_t plen = pseg_end ? (size_t)(pseg_end - pat) : strlen(pat);
        const char *seg_end = memchr(path, '/', (size_t)(end - path));
        size_t slen = seg_end ? (size_t)(seg_end - path) : (size_t)(end - path);
        if (plen >= 2 && pat[0] == '{' && pat[plen - 1] == '}') {
            if (slen == 0)
                return 0;
        } else if (plen != slen || memcmp(pat, path, slen) != 0) {
            return 0;
        }
        pat += plen;
        path += slen;
    }
    return path == end;
}

static int is_hex(int c)
{
    return isdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* 8-4-4-4-12 hex digits. */
static int is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/* What replaces segment S[0..n), or NULL to keep it. */
static const char *classify(const char *s, size_t n)
{
    size_t digits = 0, hex = 0, alpha = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isdigit(c))
            digits++;
        else if (isalpha(c))
            alpha++, hex += is_hex(c);
        else if (c != '-' && c != '_')
            other++;
    }
    if (n == 0)
        return NULL;
    if (digits == n)
        return "{n}";
    if (is_uuid(s, n))
        return "{uuid}";
    /* A digit is required: "feedback" and "deadbeef" read as words. */
    if (n >= 8 && digits && digits + hex == n)
        return "{hex}";
    if (n >= 16 && digits && alpha && !other)
        return "{token}";
    return NULL;
}

static size_t put(char *out, size_t cap, size_t o, const char *s, size_t n)
{
    size_t room = o + 1 < cap ? cap - 1 - o : 0;
    if (n > room)
        n = room;
    memcpy(out + o, s, n);
    return o + n;
}

size_t route_template(const struct route_patterns *p, const char *path, size_t len, char *out,
                      size_t cap)
{
    if (cap == 0)
        return 0;
    for (size_t i = 0; p && i < p->n; i++)
        if (pattern_match(p->list[i], path, len)) {
            size_t o = put(out, cap, 0, p->list[i], strlen(p->list[i]));
            out[o] = '\0';
            return o;
        }
    size_t o = 0;
    if (len == 0)
        o = put(out, cap, o, "/", 1);
    for (size_t i = 0; i < len;) {
        if (path[i] == '/') {
            o = put(out, cap, o, "/", 1);
            i++;
            continue;
        }
        const char *seg_end = memchr(path + i, '/', len - i);
        size_t n = seg_end ? (size_t)(seg_end - (path + i)) : len - i;
        const char *rep = classify(path + i, n);
        o = rep ? put(out, cap, o, rep, strlen(rep)) : put(out, cap, o, path + i, n);
        i += n;
    }
    out[o] = '\0';
    return o;
}

/* ---- the cap ---- */

struct cap_entry {
    char *key;          /* host '\0' route '\0'; NULL: free */
    size_t klen;        /* without the last '\0' */
    uint64_t hash;
    uint64_t count;
};

struct host_count {
    char *host;         /* NULL: free */
    size_t hlen;
    size_t n;
};

struct route_cap {
    size_t max, total;
    struct cap_entry *set;
    size_t set_cap, set_n;
    struct host_count *hosts;
    size_t hosts_cap, hosts_n;
};

struct route_cap *route_cap_new(size_t max, size_t total)
{
    struct route_cap *c = xcalloc(1, sizeof *c);
    c->max = max ? max : ROUTE_DEFAULT_MAX;
    c->total = total ? total : ROUTE_DEFAULT_TOTAL;
    return c;
}

/* The host's count slot, added when missing. */
static struct host_count *host_slot(struct route_cap *c, const char *host, size_t hlen)
{
    if ((c->hosts_n + 1) * 2 > c->hosts_cap) {
        size_t ncap = c->hosts_cap ? c->hosts_cap * 2 : 16;
        struct host_count *nh = xcalloc(ncap, sizeof *nh);
        for (size_t i = 0; i < c->hosts_cap; i++) {
            if (!c->hosts[i].host)
                continue;
            size_t j =
                hash_fnv64(HASH_FNV64_BASIS, c->hosts[i].host, c->hosts[i].hlen) & (ncap - 1);
            while (nh[j].host)
                j = (j + 1) & (ncap - 1);
            nh[j] = c->hosts[i];
        }
        free(c->hosts);
        c->hosts = nh;
        c->hosts_cap = ncap;
    }
    size_t j = hash_fnv64(HASH_FNV64_BASIS, host, hlen) & (c->hosts_cap - 1);
    for (; c->hosts[j].host; j = (j + 1) & (c->hosts_cap - 1))
        if (c->hosts[j].hlen == hlen && memcmp(c->hosts[j].host, host, hlen) == 0)
            return &c->hosts[j];
    c->hosts[j].host = xmalloc(hlen + 1);
    memcpy(c->hosts[j].host, host, hlen);
    c->hosts[j].hlen = hlen;
    c->hosts_n++;
    return &c->hosts[j];
}

static void set_grow(struct route_cap *c)
{
    size_t ncap = c->set_cap ? c->set_cap * 2 : 64;
    struct cap_entry *ns = xcalloc(ncap, sizeof *ns);
    for (size_t i = 0; i < c->set_cap; i++) {
        if (!c->set[i].key)
            continue;
        size_t j = c->set[i].hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = c->set[i];
    }
    free(c->set);
    c->set = ns;
    c->set_cap = ncap;
}

/* The entry of ROUTE of HOST, added when missing and ADD (else NULL). */
static struct cap_entry *entry(struct route_cap *c, const char *host, size_t hlen,
                               const char *route, size_t rlen, int add)
{
    uint64_t h = hash_fnv64(hash_fnv64(HASH_FNV64_BASIS, host, hlen) ^ 0xff, route, rlen);
    size_t klen = hlen + 1 + rlen;
    if ((c->set_n + 1) * 2 > c->set_cap)
        set_grow(c);
    size_t j = h & (c->set_cap - 1);
    for (; c->set[j].key; j = (j + 1) & (c->set_cap - 1)) {
        struct cap_entry *e = &c->set[j];
        if (e->hash == h && e->klen == klen && memcmp(e->key, host, hlen) == 0 &&
            e->key[hlen] == '\0' && memcmp(e->key + hlen + 1, route, rlen) == 0)
            return e;
    }
    if (!add)
        return NULL;
    char *key = xmalloc(klen + 1);
    memcpy(key, host, hlen);
    key[hlen] = '\0';
    memcpy(key + hlen + 1, route, rlen);
    key[klen] = '\0';
    c->set[j] = (struct cap_entry){key, klen, h, 0};
    c->set_n++;
    return &c->set[j];
}

int route_cap_admit(struct route_cap *c, const char *host, size_t hlen, const char *route,
                    size_t rlen, uint64_t n)
{
    struct cap_entry *e = entry(c, host, hlen, route, rlen, 0);
    int kept = 1;
    if (!e && c->set_n >= c->total) {
        /* Full: a new route is {other}, counted where its host has one. */
        e = entry(c, host, hlen, ROUTE_OTHER, strlen(ROUTE_OTHER), 0);
        if (e)
            e->count += n;
        return 0;
    }
    if (!e) {
        struct host_count *hc = host_slot(c, host, hlen);
        if (hc->n < c->max) {
            hc->n++;
        } else {
            route = ROUTE_OTHER;
            rlen = strlen(ROUTE_OTHER);
            kept = 0;
        }
        e = entry(c, host, hlen, route, rlen, 1);
    }
    e->count += n;
    return kept;
}

size_t route_cap_top(const struct route_cap *c, struct route_count *out, size_t n)
{
    size_t got = 0;
    for (size_t i = 0; i < c->set_cap; i++) {
        const struct cap_entry *e = &c->set[i];
        if (!e->key)
            continue;
        /* Insertion into the sorted OUT[0..got), keeping the N largest. */
        size_t k = got < n ? got++ : n;
        if (k == n && (n == 0 || out[n - 1].count >= e->count))
            continue;
        if (k == n)
            k = n - 1;
        while (k > 0 && out[k - 1].count < e->count) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = (struct route_count){e->key, e->key + strlen(e->key) + 1, e->count};
    }
    return got;
}

void route_cap_free(struct route_cap *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->set_cap; i++)
        free(c->set[i].key);
    for (size_t i = 0; i < c->hosts_cap; i++)
        free(c->hosts[i].host);
    free(c->set);
    free(c->hosts);
    free(c);
}
