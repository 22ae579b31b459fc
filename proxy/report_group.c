/*
 * report_group — in-memory GROUP BY for reports (see report_group.h).
 *
 * A key is its values serialized back to back: a type byte, then 8 bytes
 * of an integer or a 4-byte length and the text. Keys are numbered by
 * report_keys; the sums live in an array by that number.
 */
#include "report_group.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "report_keys.h"
#include "util.h"

#define MAX_KEY_TEXT 4096

enum { K_NULL, K_INT, K_TEXT };

/* The sums of one group, indexed by its key's number in keys. */
struct group {
    int64_t count;
    struct hist *hist;          /* NULL until a row brings one */
};

struct report_group {
    struct report_keys *keys;
    struct group *groups;
    size_t cap;
    struct sbuf key;            /* the key being built */
};

struct report_group *report_group_new(void)
{
    struct report_group *g = xcalloc(1, sizeof(struct report_group));
    g->keys = report_keys_new();
    return g;
}

void report_group_free(struct report_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < report_keys_count(g->keys); i++)
        free(g->groups[i].hist);
    report_keys_free(g->keys);
    free(g->groups);
    sbuf_free(&g->key);
    free(g);
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

void report_group_add(struct report_group *g, sqlite3_stmt *st, int nkey)
{
    build_key(&g->key, st, nkey);
    size_t before = report_keys_count(g->keys);
    size_t i = (size_t)report_keys_find(g->keys, g->key.data, g->key.len, 1);
    if (i == before) { /* a new group */
        g->groups = report_keys_grow_values(g->groups, &g->cap, i, sizeof *g->groups);
        g->groups[i] = (struct group){0};
    }
    struct group *e = &g->groups[i];
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
    for (size_t i = 0; i < report_keys_count(g->keys) && rc == 0; i++) {
        const struct group *e = &g->groups[i];
        size_t klen;
        bind_key(ins, report_keys_get(g->keys, i, &klen), nkey);
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
