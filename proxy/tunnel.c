/*
 * tunnel — relaying bytes both ways after CONNECT or 101.
 */
#include "tunnel.h"

#include <stdlib.h>

#include "util.h"

#define TUNNEL_HIGH (512 * 1024)
#define TUNNEL_LOW (128 * 1024)

struct tunnel {
    struct sender *to_client;
    struct upstream *up;
    const struct tunnel_ops *ops;
    void *owner;
    int client_eof, upstream_eof;       /* each side sent its FIN */
    int up_shut_done, client_shut_done; /* our FIN to each side was flushed */
    int client_paused, upstream_paused;
    int done;
    int pending_reqs;                   /* shutdowns whose callback is still due */
    int freed;                          /* tunnel_free ran; the last callback frees */
    uint64_t from_client;
};

struct tunnel *tunnel_new(struct sender *to_client, struct upstream *up,
                          const struct tunnel_ops *ops, void *owner)
{
    struct tunnel *t = xcalloc(1, sizeof *t);
    t->to_client = to_client;
    t->up = up;
    t->ops = ops;
    t->owner = owner;
    return t;
}

void tunnel_free(struct tunnel *t)
{
    if (!t)
        return;
    /* Closing the transports cancels a pending shutdown, but its callback
     * runs later, with T as its argument: T is freed by whichever comes
     * last, this or that callback. */
    upstream_release(t->up, 0);
    t->up = NULL;
    t->freed = 1;
    if (t->pending_reqs == 0)
        free(t);
}

/* A shutdown request completed: 1 when T is gone (freed here). */
static int request_done(struct tunnel *t)
{
    t->pending_reqs--;
    if (!t->freed)
        return 0;
    if (t->pending_reqs == 0)
        free(t);
    return 1;
}

static void finish(struct tunnel *t, const char *error)
{
    if (t->done)
        return;
    t->done = 1;
    t->ops->finished(t->owner, error);
}

static void maybe_finished(struct tunnel *t)
{
    if (t->client_eof && t->upstream_eof && t->up_shut_done && t->client_shut_done)
        finish(t, NULL);
}

static void on_up_shutdown(struct transport *tr, int status, void *arg)
{
    struct tunnel *t = arg;
    UNUSED(tr);
    if (request_done(t) || t->done)
        return;
    if (status != 0) {
        finish(t, "upstream_closed");
        return;
    }
    t->up_shut_done = 1;
    maybe_finished(t);
}

static void on_client_shutdown(struct transport *tr, int status, void *arg)
{
    struct tunnel *t = arg;
    UNUSED(tr);
    if (request_done(t) || t->done)
        return;
    if (status != 0) {
        finish(t, "client_closed");
        return;
    }
    t->client_shut_done = 1;
    maybe_finished(t);
}

void tunnel_from_client(struct tunnel *t, struct chunk *c, size_t pos)
{
    if (t->done || pos >= c->len)
        return;
    struct sender *s = upstream_sender(t->up);
    sender_ref(s, c, c->data + pos, c->len - pos);
    t->from_client += c->len - pos;
    if (sender_flush(s) != 0) {
        finish(t, "upstream_closed");
        return;
    }
    if (s->inflight > TUNNEL_HIGH && !t->client_paused) {
        t->client_paused = 1;
        t->ops->client_reading(t->owner);
    }
}

void tunnel_from_upstream(struct tunnel *t, struct chunk *c, size_t pos)
{
    if (t->done || pos >= c->len)
        return;
    sender_ref(t->to_client, c, c->data + pos, c->len - pos);
    if (sender_flush(t->to_client) != 0) {
        finish(t, "client_closed");
        return;
    }
    if (t->to_client->inflight > TUNNEL_HIGH && !t->upstream_paused) {
        t->upstream_paused = 1;
        upstream_pause(t->up);
    }
}

void tunnel_client_eof(struct tunnel *t, int status)
{
    if (t->done)
        return;
    if (status != UV_EOF) {
        finish(t, "client_closed");
        return;
    }
    t->client_eof = 1;
    t->ops->client_reading(t->owner);
    /* Pass the half-close on once the bytes before it are written. */
    if (transport_shutdown(upstream_transport(t->up), on_up_shutdown, t) != 0) {
        finish(t, "upstream_closed");
        return;
    }
    t->pending_reqs++;
}

void tunnel_upstream_eof(struct tunnel *t, int status)
{
    if (t->done)
        return;
    if (status != UV_EOF) {
        finish(t, "upstream_reset");
        return;
    }
    t->upstream_eof = 1;
    if (transport_shutdown(t->to_client->tr, on_client_shutdown, t) != 0) {
        finish(t, "client_closed");
        return;
    }
    t->pending_reqs++;
}

void tunnel_client_written(struct tunnel *t, int status)
{
    if (t->done)
        return;
    if (status != 0) {
        finish(t, "client_closed");
        return;
    }
    if (t->upstream_paused && t->to_client->inflight < TUNNEL_LOW) {
        t->upstream_paused = 0;
        upstream_resume(t->up);
    }
}

void tunnel_upstream_written(struct tunnel *t, int status)
{
    if (t->done)
        return;
    if (status != 0) {
        finish(t, "upstream_closed");
        return;
    }
    if (t->client_paused && upstream_sender(t->up)->inflight < TUNNEL_LOW) {
        t->client_paused = 0;
        t->ops->client_reading(t->owner);
    }
}

void tunnel_resume_upstream(struct tunnel *t)
{
    if (!t->done && !t->upstream_paused && !t->upstream_eof)
        upstream_resume(t->up);
}

int tunnel_wants_client(const struct tunnel *t)
{
    return !t->done && !t->client_eof && !t->client_paused;
}

uint64_t tunnel_client_bytes(const struct tunnel *t)
{
    return t->from_client;
}
