/*
 * transport_tls — the TLS transport (see transport_tls.h).
 *
 * Writes: plaintext batches are encrypted at once into read chunks that go
 * to the inner sender by reference. An owner's queued write completes when
 * the inner sender has finished with the ciphertext that carried it (its
 * offset in the inner stream is kept in req->seq), so the owner's inflight
 * count still measures what the socket has not taken and backpressure works
 * as over TCP. try_write takes a batch only while the inner side is idle.
 *
 * Reads: plaintext is read out of the engine one chunk at a time while the
 * owner reads; when the owner pauses, the rest waits inside the engine and a
 * zero-delay timer (KICK) delivers it after the owner resumes. The same
 * timer completes writes whose ciphertext went out at once, because write
 * callbacks must never run inside the call that submitted them.
 */
#include "transport_tls.h"

#include <stdlib.h>
#include <string.h>

#include "sender.h"
#include "util.h"

/* The largest plaintext one TLS record carries (RFC 8446 §5.1). */
#define TLS_RECORD_MAX 16384

enum tls_phase {
    TT_HANDSHAKING, /* the inner transport reads for the handshake */
    TT_READY,       /* on_ready was called */
    TT_FAILED,      /* the handshake failed; the owner was told once */
};

struct tls_transport {
    struct transport base;
    struct transport *inner;
    struct tls_engine *eng;
    struct sender out;            /* ciphertext onto the inner transport */
    uv_timer_t kick;
    enum tls_phase phase;
    int inner_status;             /* EOF or read error from the inner side, 0: none */
    uint64_t bytes_in;            /* ciphertext read from the inner side */
    int end_delivered;            /* the owner got its EOF or error */
    int pending_closes;
    struct transport_write *wq_head, *wq_tail; /* the owner's queued writes */
    transport_shutdown_cb shutdown_cb;
    void *shutdown_arg;
};

static const struct transport_ops inner_ops;

static struct tls_transport *of(struct transport *t)
{
    return (struct tls_transport *)t;
}

/* Move the ciphertext the engine produced into chunks on the inner sender. */
static void queue_cipher(struct tls_transport *tt)
{
    while (tls_engine_pending(tt->eng) > 0) {
        struct chunk *c = chunk_new();
        size_t n = tls_engine_take(tt->eng, c->data, CHUNK_SIZE);
        c->len = (uint32_t)n;
        sender_ref(&tt->out, c, c->data, n);
        chunk_unref(c); /* the sender holds its own reference */
    }
}

/* Queue and submit; a failure sticks in the sender and fails later writes. */
static int send_cipher(struct tls_transport *tt)
{
    queue_cipher(tt);
    return sender_flush(&tt->out);
}

static void on_kick(uv_timer_t *timer);

/* Run on_kick from the loop soon (never inside the caller's call). */
static void kick(struct tls_transport *tt)
{
    if (!tt->base.closing)
        (void)uv_timer_start(&tt->kick, on_kick, 0, 0);
}

/* Encrypt every buffer and submit the ciphertext; 0 or a libuv error. */
static int encrypt(struct tls_transport *tt, const uv_buf_t *bufs, unsigned nbufs)
{
    for (unsigned i = 0; i < nbufs; i++) {
        const char *p = bufs[i].base;
        size_t left = bufs[i].len;
        while (left > 0) {
            size_t w = tls_engine_write(tt->eng, p, left);
            if (w == 0 && tls_engine_pending(tt->eng) == 0)
                return UV_EPIPE; /* closed or failed: nothing can be sent */
            p += w;
            left -= w;
            queue_cipher(tt);
        }
    }
    return sender_flush(&tt->out);
}

static int writable(struct tls_transport *tt)
{
    enum tls_engine_state st = tls_engine_state(tt->eng);
    return tt->phase == TT_READY && !tt->base.closing &&
           (st == TLS_ENGINE_OPEN || st == TLS_ENGINE_CLOSING);
}

static int tls_try_write(struct transport *t, const uv_buf_t *bufs, unsigned nbufs)
{
    struct tls_transport *tt = of(t);
    if (!writable(tt))
        return UV_EPIPE;
    /* While ciphertext waits, taking more would hide it from the owner's
     * backpressure: queue instead (tls_write), completed when it is out. */
    if (tt->out.writes > 0 || tt->wq_head)
        return UV_EAGAIN;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    int rc = encrypt(tt, bufs, nbufs);
    return rc < 0 ? rc : (int)total;
}

static int tls_write(struct transport *t, struct transport_write *req, const uv_buf_t *bufs,
                     unsigned nbufs, transport_write_cb cb)
{
    struct tls_transport *tt = of(t);
    if (!writable(tt))
        return UV_EPIPE;
    int rc = encrypt(tt, bufs, nbufs);
    if (rc < 0)
        return rc;
    req->t = t;
    req->cb = cb;
    req->seq = tt->out.total;
    req->next = NULL;
    if (tt->wq_tail)
        tt->wq_tail->next = req;
    else
        tt->wq_head = req;
    tt->wq_tail = req;
    if (tt->out.writes == 0)
        kick(tt); /* all went out at once: complete it from the loop */
    return 0;
}

/* Complete the owner's writes whose ciphertext the inner side finished
 * (all of them with STATUS when it failed). A callback may close us. */
static void complete_writes(struct tls_transport *tt, int status)
{
    uint64_t done = tt->out.total - tt->out.inflight;
    while (tt->wq_head && (status != 0 || tt->wq_head->seq <= done)) {
        struct transport_write *req = tt->wq_head;
        tt->wq_head = req->next;
        if (!tt->wq_head)
            tt->wq_tail = NULL;
        req->cb(req, status);
    }
}

static void on_cipher_written(struct sender *s, int status)
{
    struct tls_transport *tt = CONTAINER_OF(s, struct tls_transport, out);
    complete_writes(tt, status);
}

/* Tell the owner the stream ended (EOF or STATUS), once. */
static void deliver_end(struct tls_transport *tt, int status)
{
    if (tt->end_delivered)
        return;
    tt->end_delivered = 1;
    tt->base.ops->on_read(&tt->base, status, NULL, tt->base.owner);
}

/* Hand the owner the plaintext the engine holds, while it reads; then the
 * end of the stream if the inner side has ended. */
static void deliver_plain(struct tls_transport *tt)
{
    while (tt->base.reading && !tt->base.closing && !tt->end_delivered) {
        /* One record is at most 16 KiB: fill the chunk with several, so
         * the owner gets fewer, fuller pieces. */
        struct chunk *c = chunk_new();
        size_t got = 0;
        long n;
        while ((n = tls_engine_read(tt->eng, c->data + got, CHUNK_SIZE - got)) > 0) {
            got += (size_t)n;
            if (CHUNK_SIZE - got < TLS_RECORD_MAX)
                break;
        }
        if (got > 0) {
            c->len = (uint32_t)got;
            tt->base.ops->on_read(&tt->base, (ssize_t)got, c, tt->base.owner);
            continue; /* the end, if n says so, is found on the next turn */
        }
        chunk_unref(c);
        /* Reading may have produced a reply (a TLS 1.3 key update). */
        if (tls_engine_pending(tt->eng) > 0)
            (void)send_cipher(tt);
        if (n == TLS_ENGINE_EOF) {
            deliver_end(tt, UV_EOF);
        } else if (n == TLS_ENGINE_ERROR) {
            deliver_end(tt, UV_EPROTO);
        } else if (tt->inner_status) {
            /* Clean (after close_notify) or abrupt, the owner sees EOF: the
             * HTTP framing knows whether anything was cut short. */
            if (tt->inner_status == UV_EOF)
                tls_engine_feed_eof(tt->eng);
            deliver_end(tt, tt->inner_status);
        }
        return;
    }
}

static void handshake_failed(struct tls_transport *tt)
{
    tt->phase = TT_FAILED;
    (void)send_cipher(tt); /* the alert, if any: polite, not required */
    transport_read_stop(tt->inner);
    deliver_end(tt, UV_EPROTO);
}

/* The handshake moved; tell the owner when it finished either way. */
static void handshake_step(struct tls_transport *tt)
{
    enum tls_engine_state st = tls_engine_state(tt->eng);
    if (st == TLS_ENGINE_HANDSHAKING) {
        if (send_cipher(tt) != 0 || tt->inner_status) {
            if (tt->inner_status)
                tls_engine_feed_eof(tt->eng);
            handshake_failed(tt);
        }
        return;
    }
    if (st == TLS_ENGINE_FAILED) {
        handshake_failed(tt);
        return;
    }
    (void)send_cipher(tt);
    tt->phase = TT_READY;
    /* From now on the inner side reads only while the owner does. */
    if (!tt->base.reading)
        transport_read_stop(tt->inner);
    if (tt->base.ops->on_ready)
        tt->base.ops->on_ready(&tt->base, tt->base.owner);
    if (!tt->base.closing && tt->base.reading && tls_engine_buffered(tt->eng))
        kick(tt);
}

static void on_inner_read(struct transport *t, ssize_t nread, struct chunk *c, void *owner)
{
    struct tls_transport *tt = owner;
    UNUSED(t);
    if (tt->base.closing || tt->phase == TT_FAILED) {
        chunk_unref(c);
        return;
    }
    if (nread > 0) {
        tt->bytes_in += (uint64_t)nread;
        tls_engine_feed(tt->eng, c->data, (size_t)nread);
        chunk_unref(c);
    } else {
        tt->inner_status = (int)nread;
    }
    if (tt->phase == TT_HANDSHAKING) {
        handshake_step(tt);
        return;
    }
    if (tls_engine_state(tt->eng) == TLS_ENGINE_FAILED) {
        deliver_end(tt, UV_EPROTO);
        return;
    }
    deliver_plain(tt);
}

static void on_kick(uv_timer_t *timer)
{
    struct tls_transport *tt = timer->data;
    if (tt->base.closing)
        return;
    if (tt->phase == TT_HANDSHAKING) {
        /* An inner failure to report, or preloaded handshake bytes. */
        handshake_step(tt);
        return;
    }
    if (tt->phase == TT_READY)
        deliver_plain(tt);
    if (!tt->base.closing)
        complete_writes(tt, 0);
}

static int tls_read_start(struct transport *t)
{
    struct tls_transport *tt = of(t);
    if (tt->phase != TT_READY)
        return tt->phase == TT_FAILED ? UV_EPROTO : 0;
    int rc = 0;
    if (!tt->inner_status)
        rc = transport_read_start(tt->inner);
    if (rc == 0 && (tt->inner_status || tls_engine_buffered(tt->eng)))
        kick(tt); /* what arrived while paused */
    return rc;
}

static void tls_read_stop(struct transport *t)
{
    struct tls_transport *tt = of(t);
    if (tt->phase == TT_READY)
        transport_read_stop(tt->inner);
}

static void on_inner_shutdown(struct transport *inner, int status, void *arg)
{
    struct tls_transport *tt = arg;
    UNUSED(inner);
    transport_shutdown_cb cb = tt->shutdown_cb;
    tt->shutdown_cb = NULL;
    if (cb)
        cb(&tt->base, status, tt->shutdown_arg);
}

/* close_notify, then the inner end of stream after every queued byte. */
static int tls_shutdown(struct transport *t, transport_shutdown_cb cb, void *arg)
{
    struct tls_transport *tt = of(t);
    if (tt->shutdown_cb)
        return UV_EALREADY;
    if (tt->phase == TT_READY) {
        tls_engine_close(tt->eng);
        int rc = send_cipher(tt);
        if (rc != 0)
            return rc;
    }
    int rc = transport_shutdown(tt->inner, on_inner_shutdown, tt);
    if (rc == 0) {
        tt->shutdown_cb = cb;
        tt->shutdown_arg = arg;
    }
    return rc;
}

static void closed_one(struct tls_transport *tt)
{
    if (--tt->pending_closes > 0)
        return;
    /* Writes the inner close did not cancel (none should remain). */
    complete_writes(tt, UV_ECANCELED);
    tt->base.ops->on_closed(&tt->base, tt->base.owner);
    tls_engine_free(tt->eng);
    free(tt);
}

static void on_inner_closed(struct transport *t, void *owner)
{
    UNUSED(t);
    closed_one(owner);
}

static void on_kick_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void tls_close(struct transport *t, int reset)
{
    struct tls_transport *tt = of(t);
    enum tls_engine_state st = tls_engine_state(tt->eng);
    if (!reset && tt->phase == TT_READY && tt->out.writes == 0 && !tt->out.error &&
        (st == TLS_ENGINE_OPEN || st == TLS_ENGINE_CLOSING)) {
        /* A close_notify (unless one was sent) when the socket takes it
         * now; never wait for it. */
        tls_engine_close(tt->eng);
        char buf[256];
        size_t n = tls_engine_take(tt->eng, buf, sizeof buf);
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        if (n > 0)
            (void)transport_try_write(tt->inner, &b, 1);
    }
    sender_discard(&tt->out);
    tt->pending_closes = 2;
    transport_close(tt->inner, reset);
    uv_close((uv_handle_t *)&tt->kick, on_kick_closed);
}

static int tls_peer(const struct transport *t, struct sockaddr_storage *ss)
{
    const struct tls_transport *tt = (const struct tls_transport *)t;
    return transport_peer(tt->inner, ss);
}

static const char *tls_error_name(const struct transport *t)
{
    const struct tls_transport *tt = (const struct tls_transport *)t;
    enum tls_engine_error e = tls_engine_error(tt->eng);
    if (e == TLS_ENGINE_ERR_NONE || e == TLS_ENGINE_ERR_EOF)
        return NULL;
    return tls_engine_error_name(e);
}

static const struct transport_impl tls_impl = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .try_write = tls_try_write,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .peer = tls_peer,
    .error_name = tls_error_name,
};

static const struct transport_ops inner_ops = {
    .on_read = on_inner_read,
    .on_closed = on_inner_closed,
};

struct transport *tls_transport_new(struct transport *inner, uv_loop_t *loop,
                                    struct tls_engine_config *cfg, const char *host,
                                    unsigned port, const struct transport_ops *ops, void *owner)
{
    struct tls_transport *tt = xcalloc(1, sizeof *tt);
    tt->base.impl = &tls_impl;
    tt->base.ops = ops;
    tt->base.owner = owner;
    tt->inner = inner;
    tt->phase = TT_HANDSHAKING;
    tt->eng = tls_engine_new(cfg, host, port);
    sender_init(&tt->out, inner, on_cipher_written);
    uv_timer_init(loop, &tt->kick);
    tt->kick.data = tt;
    transport_set_owner(inner, &inner_ops, tt);
    int rc = send_cipher(tt); /* a client's ClientHello */
    if (rc == 0)
        rc = transport_read_start(inner);
    if (rc != 0) {
        tt->inner_status = rc; /* reported from the loop as a failed handshake */
        kick(tt);
    }
    return &tt->base;
}

void tls_transport_preload(struct transport *t, const void *p, size_t n)
{
    struct tls_transport *tt = of(t);
    if (tt->phase != TT_HANDSHAKING || n == 0)
        return;
    tls_engine_feed(tt->eng, p, n);
    kick(tt); /* the handshake moves on from the loop, never inside the caller */
}

struct tls_engine *tls_transport_engine(struct transport *t)
{
    return of(t)->eng;
}

uint64_t tls_transport_bytes_in(struct transport *t)
{
    return of(t)->bytes_in;
}
