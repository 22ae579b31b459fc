/*
 * sender — batching writes. A batch holds up to BATCH_BUFS pieces; a copy
 * lands in the batch's scratch area and is addressed by offset until the
 * batch is submitted, because the scratch area may move while it grows.
 */
#include "sender.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define BATCH_BUFS 64
#define NOT_SCRATCH UINT32_MAX
#define BATCH_CACHE_MAX 64

struct send_batch {
    struct transport_write req;
    struct sender *sender;
    unsigned nbufs, nrefs;
    size_t bytes;
    uv_buf_t bufs[BATCH_BUFS];
    uint32_t scratch_off[BATCH_BUFS]; /* NOT_SCRATCH: bufs[i].base is final */
    struct chunk *refs[BATCH_BUFS];
    char *scratch;
    size_t scratch_len, scratch_cap;
    struct send_batch *next_free;
};

static _Thread_local struct send_batch *batch_cache;
static _Thread_local unsigned batch_cache_count;

static struct send_batch *batch_new(struct sender *s)
{
    struct send_batch *b = batch_cache;
    if (b) {
        batch_cache = b->next_free;
        batch_cache_count--;
    } else {
        b = xcalloc(1, sizeof *b);
    }
    b->sender = s;
    b->nbufs = b->nrefs = 0;
    b->bytes = 0;
    b->scratch_len = 0;
    return b;
}

static void batch_free(struct send_batch *b)
{
    for (unsigned i = 0; i < b->nrefs; i++)
        chunk_unref(b->refs[i]);
    b->nrefs = 0;
    if (batch_cache_count >= BATCH_CACHE_MAX || b->scratch_cap > 64 * 1024) {
        free(b->scratch);
        free(b);
        return;
    }
    b->next_free = batch_cache;
    batch_cache = b;
    batch_cache_count++;
}

void sender_trim(void)
{
    while (batch_cache) {
        struct send_batch *b = batch_cache;
        batch_cache = b->next_free;
        free(b->scratch);
        free(b);
    }
    batch_cache_count = 0;
}

void sender_init(struct sender *s, struct transport *tr, sender_written_cb on_written)
{
    memset(s, 0, sizeof *s);
    s->tr = tr;
    s->on_written = on_written;
}

/* The batch to add one more piece to; submits a full one first. */
static struct send_batch *batch_for_piece(struct sender *s)
{
    /* A failure here is kept in s->error and returned by the next flush. */
    if (s->cur && s->cur->nbufs == BATCH_BUFS)
        (void)sender_flush(s);
    if (!s->cur)
        s->cur = batch_new(s);
    return s->cur;
}

void sender_ref(struct sender *s, struct chunk *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    struct send_batch *b = batch_for_piece(s);
    b->bufs[b->nbufs] = uv_buf_init((char *)p, (unsigned)n);
    b->scratch_off[b->nbufs++] = NOT_SCRATCH;
    b->refs[b->nrefs++] = chunk_ref(c);
    b->bytes += n;
}

void sender_static(struct sender *s, const char *p, size_t n)
{
    if (n == 0)
        return;
    struct send_batch *b = batch_for_piece(s);
    b->bufs[b->nbufs] = uv_buf_init((char *)p, (unsigned)n);
    b->scratch_off[b->nbufs++] = NOT_SCRATCH;
    b->bytes += n;
}

void sender_copy(struct sender *s, const void *p, size_t n)
{
    if (n == 0)
        return;
    struct send_batch *b = s->cur;
    /* Extend the previous piece when it is the tail of the scratch area. */
    int extend = b && b->nbufs && b->scratch_off[b->nbufs - 1] != NOT_SCRATCH &&
                 b->scratch_off[b->nbufs - 1] + b->bufs[b->nbufs - 1].len == b->scratch_len;
    if (!extend)
        b = batch_for_piece(s);
    if (b->scratch_len + n > b->scratch_cap) {
        size_t cap = b->scratch_cap ? b->scratch_cap : 512;
        while (cap < b->scratch_len + n)
            cap *= 2;
        b->scratch = xrealloc(b->scratch, cap);
        b->scratch_cap = cap;
    }
    memcpy(b->scratch + b->scratch_len, p, n);
    if (extend) {
        b->bufs[b->nbufs - 1].len += n;
    } else {
        b->bufs[b->nbufs] = uv_buf_init(NULL, (unsigned)n);
        b->scratch_off[b->nbufs++] = (uint32_t)b->scratch_len;
    }
    b->scratch_len += n;
    b->bytes += n;
}

size_t sender_queued(const struct sender *s)
{
    return s->cur ? s->cur->bytes : 0;
}

static void on_batch_written(struct transport_write *req, int status)
{
    struct send_batch *b = CONTAINER_OF(req, struct send_batch, req);
    struct sender *s = b->sender;
    s->inflight -= b->bytes;
    s->writes--;
    batch_free(b);
    if (s->on_written)
        s->on_written(s, status);
}

int sender_flush(struct sender *s)
{
    struct send_batch *b = s->cur;
    if (s->error) {
        sender_discard(s);
        return s->error;
    }
    if (!b)
        return 0;
    s->cur = NULL;
    for (unsigned i = 0; i < b->nbufs; i++)
        if (b->scratch_off[i] != NOT_SCRATCH)
            b->bufs[i].base = b->scratch + b->scratch_off[i];
    uv_buf_t *bufs = b->bufs;
    unsigned nbufs = b->nbufs;
    size_t left = b->bytes;
    if (s->writes == 0) {
        /* Nothing queued in libuv: write now. Most batches go out whole,
         * which spares the write request and the poll registration a
         * queued write costs. */
        int n = transport_try_write(s->tr, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            batch_free(b);
            s->error = n;
            return n;
        }
        if (n > 0) {
            left -= (size_t)n;
            s->total += (size_t)n;
            while (nbufs > 0 && (size_t)n >= bufs->len) {
                n -= (int)bufs->len;
                bufs++;
                nbufs--;
            }
            if (nbufs > 0) {
                bufs->base += n;
                bufs->len -= (size_t)n;
            }
        }
        if (left == 0) {
            batch_free(b);
            return 0;
        }
    }
    int rc = transport_write(s->tr, &b->req, bufs, nbufs, on_batch_written);
    if (rc != 0) {
        batch_free(b);
        s->error = rc;
        return rc;
    }
    s->total += left;
    b->bytes = left;
    s->inflight += left;
    s->writes++;
    return 0;
}

void sender_discard(struct sender *s)
{
    if (s->cur) {
        batch_free(s->cur);
        s->cur = NULL;
    }
}
