/*
 * report_keys — open addressing over an array of keys (see report_keys.h).
 * The index holds positions + 1 (0: free) and is kept under half full.
 */
#include "report_keys.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "util.h"

struct key {
    char *bytes;
    size_t len;
    uint64_t hash;
};

struct report_keys {
    struct key *keys;
    size_t n, cap;
    uint32_t *index;
    size_t index_cap;
};

struct report_keys *report_keys_new(void)
{
    return xcalloc(1, sizeof(struct report_keys));
}

void report_keys_free(struct report_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        free(k->keys[i].bytes);
    free(k->keys);
    free(k->index);
    free(k);
}

/* FNV-1a, its high bits folded in: the index masks the low ones. */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = hash_fnv64(HASH_FNV64_BASIS, s, n);
    return h ^ (h >> 31);
}

static void index_grow(struct report_keys *k)
{
    size_t cap = k->index_cap ? k->index_cap * 2 : 256;
    uint32_t *idx = xcalloc(cap, sizeof *idx);
    for (size_t i = 0; i < k->n; i++) {
        size_t j = k->keys[i].hash & (cap - 1);
        while (idx[j])
            j = (j + 1) & (cap - 1);
        idx[j] = (uint32_t)i + 1;
    }
    free(k->index);
    k->index = idx;
    k->index_cap = cap;
}

long report_keys_find(struct report_keys *k, const char *key, size_t n, int add)
{
    if ((k->n + 1) * 2 > k->index_cap)
        index_grow(k);
    uint64_t h = hash_bytes(key, n);
    size_t j = h & (k->index_cap - 1);
    for (; k->index[j]; j = (j + 1) & (k->index_cap - 1)) {
        const struct key *e = &k->keys[k->index[j] - 1];
        if (e->hash == h && e->len == n && memcmp(e->bytes, key, n) == 0)
            return (long)(k->index[j] - 1);
    }
    if (!add)
        return -1;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 256;
        k->keys = xrealloc(k->keys, k->cap * sizeof *k->keys);
    }
    struct key *e = &k->keys[k->n];
    *e = (struct key){.bytes = xmalloc(n + 1), .len = n, .hash = h};
    memcpy(e->bytes, key, n);
    k->index[j] = (uint32_t)++k->n;
    return (long)(k->n - 1);
}

void *report_keys_grow_values(void *values, size_t *cap, size_t i, size_t size)
{
    if (i < *cap)
        return values;
    size_t n = *cap ? *cap : 256;
    while (n <= i)
        n *= 2;
    *cap = n;
    return xrealloc(values, n * size);
}

size_t report_keys_count(const struct report_keys *k)
{
    return k->n;
}

const char *report_keys_get(const struct report_keys *k, size_t i, size_t *len)
{
    *len = k->keys[i].len;
    return k->keys[i].bytes;
}
