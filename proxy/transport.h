/*
 * transport — the byte stream under a connection. Client connections,
 * upstream connections and tunnels read and write only through this
 * interface, so what sits below (plain TCP today, TLS over TCP later) can
 * change without the code above knowing.
 *
 * Contract
 *   Owner: whoever gave the callbacks (struct transport_ops). Events:
 *     on_ready   the transport can carry the owner's bytes (a TLS handshake
 *                is done). Optional: plain TCP is ready at once and never
 *                calls it. An implementation with a handshake delivers no
 *                read before it.
 *     on_read    NREAD > 0 bytes in chunk C, C->len set; the owner receives
 *                one reference and drops it. NREAD < 0: UV_EOF (clean end),
 *                or an error (C is NULL); transport_error_name() then may
 *                name it.
 *     on_closed  after transport_close, exactly once, as the last callback:
 *                only now may the owner free the memory the transport lives
 *                in (libuv lifetimes).
 *   Writes: the owner submits batches (normally through struct sender):
 *     transport_try_write may take a prefix at once (no callback follows for
 *     it); transport_write queues the rest and calls the request's callback
 *     when done (UV_ECANCELED when the transport was closed first). The
 *     buffers stay valid until then. Backpressure is the sender's inflight.
 *   Shutdown: transport_shutdown sends the end of stream after every
 *     queued byte, then calls its callback (also after a close: ECANCELED).
 *     One shutdown per transport.
 *   Close: transport_close(t, 0) now, (t, 1) with a reset where possible.
 *     Idempotent; on_closed follows once.
 *
 * For a TLS implementation (transport_tls.c, issue 10): it embeds struct
 * transport, wraps an inner TCP transport whose owner it is, and
 *   - sees every byte: the inner on_read feeds the engine; plaintext goes to
 *     its own owner's on_read; writes encrypt and go out on the inner one;
 *   - may write on the inner transport while reading (handshake, alerts),
 *     without the owner asking;
 *   - implements shutdown as close_notify, then the inner shutdown;
 *   - calls on_ready after the handshake, and answers transport_error_name
 *     with "tls_handshake", "tls_verify" or "tls_client" after a failure;
 *   - closes the inner transport from its close, and calls its own
 *     on_closed from the inner one's;
 *   - may answer try_write with UV_EAGAIN (everything then goes through
 *     write), or encrypt and pass the inner try_write's result on.
 * An owner swaps transports (a TLS listener, CONNECT interception, an https
 * upstream) by pointing its transport pointer and its sender's tr at the
 * wrapper; the inner TCP transport stays embedded where it was.
 * Shutdown completion goes to a per-call callback, not to the owner's ops,
 * because two parties use it on one client transport (the connection's
 * lingering close, and a tunnel's half-close).
 */
#ifndef STATUSPROXY_TRANSPORT_H
#define STATUSPROXY_TRANSPORT_H

#include <stddef.h>
#include <uv.h>

#include "chunk.h"

struct transport;
struct transport_write;

typedef void (*transport_write_cb)(struct transport_write *req, int status);
typedef void (*transport_shutdown_cb)(struct transport *t, int status, void *arg);

struct transport_ops {
    void (*on_ready)(struct transport *t, void *owner); /* optional */
    void (*on_read)(struct transport *t, ssize_t nread, struct chunk *c, void *owner);
    void (*on_closed)(struct transport *t, void *owner);
};

/* A write request; the submitter owns its memory until CB ran. */
struct transport_write {
    uv_write_t uv;               /* the TCP transport's request */
    struct transport *t;
    transport_write_cb cb;
    struct transport_write *next; /* for an implementation's own queue */
};

/* What an implementation provides. */
struct transport_impl {
    int (*read_start)(struct transport *t);
    void (*read_stop)(struct transport *t);
    /* Bytes taken now (>= 0), UV_EAGAIN, or an error. */
    int (*try_write)(struct transport *t, const uv_buf_t *bufs, unsigned nbufs);
    int (*write)(struct transport *t, struct transport_write *req, const uv_buf_t *bufs,
                 unsigned nbufs, transport_write_cb cb);
    int (*shutdown)(struct transport *t, transport_shutdown_cb cb, void *arg);
    void (*close)(struct transport *t, int reset);
    int (*peer)(const struct transport *t, struct sockaddr_storage *ss);
    const char *(*error_name)(const struct transport *t);
};

/* The part every implementation embeds first. */
struct transport {
    const struct transport_impl *impl;
    const struct transport_ops *ops;
    void *owner;
    int reading;                 /* between read_start and read_stop */
    int closing;                 /* transport_close ran */
};

/* Start / stop delivering on_read. Starting while reading is a no-op. */
int transport_read_start(struct transport *t);
void transport_read_stop(struct transport *t);

static inline int transport_try_write(struct transport *t, const uv_buf_t *bufs, unsigned n)
{
    return t->impl->try_write(t, bufs, n);
}
static inline int transport_write(struct transport *t, struct transport_write *req,
                                  const uv_buf_t *bufs, unsigned n, transport_write_cb cb)
{
    return t->impl->write(t, req, bufs, n, cb);
}
static inline int transport_shutdown(struct transport *t, transport_shutdown_cb cb, void *arg)
{
    return t->impl->shutdown(t, cb, arg);
}
/* Close (RESET: with RST); on_closed follows once. */
void transport_close(struct transport *t, int reset);
/* The peer's address; 0 or a libuv error. */
static inline int transport_peer(const struct transport *t, struct sockaddr_storage *ss)
{
    return t->impl->peer(t, ss);
}
/* The recorded error kind of the last failure ("tls_verify"...), or NULL
 * when there is none beyond the libuv status the owner saw. */
static inline const char *transport_error_name(const struct transport *t)
{
    return t->impl->error_name ? t->impl->error_name(t) : NULL;
}
/* Change who receives the events (a pooled connection changes hands). */
static inline void transport_set_owner(struct transport *t, const struct transport_ops *ops,
                                       void *owner)
{
    t->ops = ops;
    t->owner = owner;
}

/* ---- plain TCP (transport_tcp.c) ---- */

/* Embeddable in the owner's struct, like the uv_tcp_t it holds. */
struct tcp_transport {
    struct transport base;
    uv_tcp_t tcp;
    uv_shutdown_t shutdown_req;
    transport_shutdown_cb shutdown_cb;
    void *shutdown_arg;
};

/* uv_tcp_init plus the transport; the owner then accepts or connects on
 * tcp_transport_handle() and reads and writes through &tt->base. */
int tcp_transport_init(struct tcp_transport *tt, uv_loop_t *loop,
                       const struct transport_ops *ops, void *owner);
/* The socket, for uv_accept, uv_tcp_connect and socket options only. */
static inline uv_tcp_t *tcp_transport_handle(struct tcp_transport *tt)
{
    return &tt->tcp;
}

#endif
