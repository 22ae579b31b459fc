/*
 * transport_tcp — the plain TCP transport over libuv, and the calls every
 * transport shares. Reads land in reference-counted chunks (one alloc
 * callback for every connection); writes are uv_try_write / uv_write.
 */
#include "transport.h"

#include <string.h>

#include "util.h"

int transport_read_start(struct transport *t)
{
    if (t->closing)
        return UV_EBADF;
    if (t->reading)
        return 0;
    int rc = t->impl->read_start(t);
    if (rc == 0)
        t->reading = 1;
    return rc;
}

void transport_read_stop(struct transport *t)
{
    if (!t->reading)
        return;
    t->reading = 0;
    t->impl->read_stop(t);
}

void transport_close(struct transport *t, int reset)
{
    if (t->closing)
        return;
    t->closing = 1;
    t->reading = 0;
    t->impl->close(t, reset);
}

/* ---------- TCP ---------- */

static void tcp_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    UNUSED(h);
    UNUSED(suggested);
    struct chunk *c = chunk_new();
    *buf = uv_buf_init(c->data, CHUNK_SIZE);
}

static void tcp_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tcp_transport *tt = stream->data;
    struct chunk *c = buf->base ? CONTAINER_OF(buf->base, struct chunk, data) : NULL;
    if (nread == 0) {
        chunk_unref(c);
        return;
    }
    if (nread < 0) {
        chunk_unref(c);
        tt->base.ops->on_read(&tt->base, nread, NULL, tt->base.owner);
        return;
    }
    c->len = (uint32_t)nread;
    tt->base.ops->on_read(&tt->base, nread, c, tt->base.owner);
}

static int tcp_read_start(struct transport *t)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    return uv_read_start((uv_stream_t *)&tt->tcp, tcp_on_alloc, tcp_on_read);
}

static void tcp_read_stop(struct transport *t)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    uv_read_stop((uv_stream_t *)&tt->tcp);
}

static int tcp_try_write(struct transport *t, const uv_buf_t *bufs, unsigned nbufs)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    return uv_try_write((uv_stream_t *)&tt->tcp, bufs, nbufs);
}

static void tcp_on_written(uv_write_t *uv, int status)
{
    struct transport_write *req = CONTAINER_OF(uv, struct transport_write, uv);
    req->cb(req, status);
}

static int tcp_write(struct transport *t, struct transport_write *req, const uv_buf_t *bufs,
                     unsigned nbufs, transport_write_cb cb)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    req->t = t;
    req->cb = cb;
    return uv_write(&req->uv, (uv_stream_t *)&tt->tcp, bufs, nbufs, tcp_on_written);
}

static void tcp_on_shutdown(uv_shutdown_t *req, int status)
{
    struct tcp_transport *tt = req->data;
    transport_shutdown_cb cb = tt->shutdown_cb;
    tt->shutdown_cb = NULL;
    cb(&tt->base, status, tt->shutdown_arg);
}

static int tcp_shutdown(struct transport *t, transport_shutdown_cb cb, void *arg)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    if (tt->shutdown_cb)
        return UV_EALREADY;
    tt->shutdown_req.data = tt;
    int rc = uv_shutdown(&tt->shutdown_req, (uv_stream_t *)&tt->tcp, tcp_on_shutdown);
    if (rc == 0) {
        tt->shutdown_cb = cb;
        tt->shutdown_arg = arg;
    }
    return rc;
}

static void tcp_on_closed(uv_handle_t *h)
{
    struct tcp_transport *tt = h->data;
    tt->base.ops->on_closed(&tt->base, tt->base.owner);
}

static void tcp_close(struct transport *t, int reset)
{
    struct tcp_transport *tt = (struct tcp_transport *)t;
    if (reset && uv_tcp_close_reset(&tt->tcp, tcp_on_closed) == 0)
        return;
    uv_close((uv_handle_t *)&tt->tcp, tcp_on_closed);
}

static int tcp_peer(const struct transport *t, struct sockaddr_storage *ss)
{
    const struct tcp_transport *tt = (const struct tcp_transport *)t;
    int len = sizeof *ss;
    return uv_tcp_getpeername(&tt->tcp, (struct sockaddr *)ss, &len);
}

static const struct transport_impl tcp_impl = {
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .try_write = tcp_try_write,
    .write = tcp_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .peer = tcp_peer,
    .error_name = NULL,
};

int tcp_transport_init(struct tcp_transport *tt, uv_loop_t *loop,
                       const struct transport_ops *ops, void *owner)
{
    memset(tt, 0, sizeof *tt);
    tt->base.impl = &tcp_impl;
    tt->base.ops = ops;
    tt->base.owner = owner;
    int rc = uv_tcp_init(loop, &tt->tcp);
    tt->tcp.data = tt;
    return rc;
}
