/*
 * report_group — in-memory GROUP BY for reports (see report_group.h).
 *
 * A key is its values serialized back to back: a type byte, then 8 bytes
 * of an integer or a 4-byte length and the text. Groups live in an array;
 * an open-addressing index over it finds them by hash.
 */
#include "report_group.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "util.h"

#define MAX_KEY_TEXT 4096

enum { K_NULL, K_INT, K_TEXT };

struct group {
    char *key;
    size_t klen;
    uint64_t hash;
    int64_t count;
    struct hist *hist;          /* NULL until a row brings one */
};

struct report_group {
    struct group *groups;
    size_t n, cap;
    uint32_t *index;            /* 0: free; else group position + 1 */
    size_t index_cap;
    struct sbuf key;            /* the key being built */
};

struct report_group *report_group_new(void)
{
    return xcalloc(1, sizeof(struct report_group));
}

void report_group_free(struct report_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        free(g->groups[i].key);
        free(g->groups[i].hist);
    }
    free(g->groups);
    free(g->index);
    sbuf_free(&g->key);
    free(g);
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 31);
}

static void build_key(struct sbuf *k, sqlite3_stmt *st, int nkey)
{
    sbuf_reset(k);
    for (int c = 0; c < nkey; c++) {
        switch (sqlite3_column_type(st, c)) {
        case SQLITE_NULL:
            sbuf_putc(k, K_NULL);
            break;
        case SQLITE_INTEGER: {
            int64_t v = sqlite3_column_int64(st, c);
            sbuf_putc(k, K_INT);
            sbuf_append(k, (const char *)&v, sizeof v);
            break;
        }
        default: {
            const char *t = (const char *)sqlite3_column_text(st, c);
            uint32_t len = (uint32_t)sqlite3_column_bytes(st, c);
            if (len > MAX_KEY_TEXT)
                len = MAX_KEY_TEXT;
            sbuf_putc(k, K_TEXT);
            sbuf_append(k, (const char *)&len, sizeof len);
            sbuf_append(k, t ? t : "", t ? len : 0);
        }
        }
    }
}

static void index_grow(struct report_group *g)
{
    size_t cap = g->index_cap ? g->index_cap * 2 : 256;
    uint32_t *idx = xcalloc(cap, sizeof *idx);
    for (size_t i = 0; i < g->n; i++) {
        size_t j = g->groups[i].hash & (cap - 1);
        while (idx[j])
            j = (j + 1) & (cap - 1);
        idx[j] = (uint32_t)i + 1;
    }
    free(g->index);
    g->index = idx;
    g->index_cap = cap;
}

static struct group *find(struct report_group *g, const char *key, size_t klen)
{
    if ((g->n + 1) * 2 > g->index_cap)
        index_grow(g);
    uint64_t h = hash_bytes(key, klen);
    size_t j = h & (g->index_cap - 1);
    for (; g->index[j]; j = (j + 1) & (g->index_cap - 1)) {
        struct group *e = &g->groups[g->index[j] - 1];
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->groups = xrealloc(g->groups, g->cap * sizeof *g->groups);
    }
    struct group *e = &g->groups[g->n];
    *e = (struct group){.key = xmalloc(klen + 1), .klen = klen, .hash = h};
    memcpy(e->key, key, klen);
    g->index[j] = (uint32_t)++g->n;
    return e;
}

void report_group_add(struct report_group *g, sqlite3_stmt *st, int nkey)
{
    build_key(&g->key, st, nkey);
    struct group *e = find(g, g->key.data, g->key.len);
    e->count += sqlite3_column_int64(st, nkey);
    if (sqlite3_column_type(st, nkey + 1) != SQLITE_BLOB)
        return;
    if (!e->hist) {
        e->hist = xmalloc(sizeof *e->hist);
        hist_clear(e->hist);
    }
    hist_decode_add(e->hist, sqlite3_column_blob(st, nkey + 1),
                    (size_t)sqlite3_column_bytes(st, nkey + 1));
}

/* Bind the key K to ?2.. of INS. */
static void bind_key(sqlite3_stmt *ins, const char *k, int nkey)
{
    for (int c = 0; c < nkey; c++) {
        char type = *k++;
        if (type == K_NULL) {
            sqlite3_bind_null(ins, c + 2);
        } else if (type == K_INT) {
            int64_t v;
            memcpy(&v, k, sizeof v);
            k += sizeof v;
            sqlite3_bind_int64(ins, c + 2, v);
        } else {
            uint32_t len;
            memcpy(&len, k, sizeof len);
            k += sizeof len;
            sqlite3_bind_text(ins, c + 2, k, (int)len, SQLITE_STATIC);
            k += len;
        }
    }
}

int report_group_flush(const struct report_group *g, sqlite3_stmt *ins, int nkey)
{
    uint8_t *buf = xmalloc(HIST_MAX_ENCODED);
    int rc = 0;
    for (size_t i = 0; i < g->n && rc == 0; i++) {
        const struct group *e = &g->groups[i];
        bind_key(ins, e->key, nkey);
        sqlite3_bind_int64(ins, nkey + 2, e->count);
        if (e->hist && e->hist->total)
            sqlite3_bind_blob(ins, nkey + 3, buf, (int)hist_encode(e->hist, buf, HIST_MAX_ENCODED),
                              SQLITE_STATIC);
        else
            sqlite3_bind_null(ins, nkey + 3);
        if (sqlite3_step(ins) != SQLITE_DONE)
            rc = -1;
        sqlite3_reset(ins);
    }
    free(buf);
    return rc;
}
