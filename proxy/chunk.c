/*
 * chunk — a per-thread free list of fixed-size buffers, so a busy
 * connection does not go to malloc for every read.
 */
#include "chunk.h"

#include <stdlib.h>

#include "util.h"

#define FREE_LIST_MAX 64

static _Thread_local struct chunk *free_list;
static _Thread_local unsigned free_count;

struct chunk *chunk_new(void)
{
    struct chunk *c = free_list;
    if (c) {
        free_list = c->next_free;
        free_count--;
    } else {
        c = xmalloc(sizeof *c);
    }
    c->refs = 1;
    c->len = 0;
    c->next_free = NULL;
    return c;
}

void chunk_unref(struct chunk *c)
{
    if (!c || --c->refs > 0)
        return;
    if (free_count >= FREE_LIST_MAX) {
        free(c);
        return;
    }
    c->next_free = free_list;
    free_list = c;
    free_count++;
}

void chunk_trim(void)
{
    while (free_list) {
        struct chunk *c = free_list;
        free_list = c->next_free;
        free(c);
    }
    free_count = 0;
}
