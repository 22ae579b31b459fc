/*
 * upstream — connections to backends and the per-worker keep-alive pool.
 * Resolves names asynchronously (uv_getaddrinfo; numeric addresses skip it),
 * tries each address in turn, enforces the connect timeout, and keeps idle
 * connections per "host:port" for reuse, closing them when the backend does
 * or when they stay idle too long. It does not parse HTTP: bytes go to the
 * owner through the callbacks below.
 */
#ifndef STATUSPROXY_UPSTREAM_H
#define STATUSPROXY_UPSTREAM_H

#include <stdint.h>
#include <uv.h>

#include "chunk.h"
#include "sender.h"
#include "transport.h"

/* Connect failures besides libuv's own codes. */
#define UPSTREAM_ETIMEDOUT UV_ETIMEDOUT
#define UPSTREAM_EDNS UV_EAI_NONAME

struct upstream;

struct upstream_ops {
    /* The connection is up (STATUS 0) or failed for good (a libuv error,
     * UPSTREAM_ETIMEDOUT, or a UV_EAI_* resolver error). After a failure the
     * owner must call upstream_release(u, 0). */
    void (*on_connect)(struct upstream *u, int status, void *owner);
    /* NREAD bytes arrived in C (the owner gets one reference to drop), or
     * NREAD < 0: UV_EOF or a read error (C is NULL). */
    void (*on_read)(struct upstream *u, ssize_t nread, struct chunk *c, void *owner);
    /* A write the owner submitted completed. */
    void (*on_written)(struct upstream *u, int status, void *owner);
    /* Optional: may the connection go to SA? Asked for each resolved
     * address before connecting to it, and for a pooled connection's peer
     * before reusing it. A non-zero (negative) result skips the address;
     * when none is left, on_connect gets that result as its status. */
    int (*check_addr)(const struct sockaddr *sa, void *owner);
};

struct upstream_pool;

struct upstream_pool *upstream_pool_new(uv_loop_t *loop, uint64_t connect_timeout_ms,
                                        uint64_t idle_timeout_ms);
/* Close every idle connection; connections in use close when released.
 * The pool is freed once none remain. */
void upstream_pool_close(struct upstream_pool *p);
/* Connections that exist (idle or in use). */
unsigned upstream_pool_live(const struct upstream_pool *p);

/* An idle pooled connection to HOST:PORT if there is one and FRESH is 0
 * (*reused = 1; it is ready now and on_connect will not be called), else a
 * new connection on its way (*reused = 0; on_connect follows). Never NULL.
 * HOST is a name or an IP address (IPv6 without brackets). */
struct upstream *upstream_acquire(struct upstream_pool *p, const char *host, int port, int fresh,
                                  const struct upstream_ops *ops, void *owner, int *reused);

/* Give a connection back: to the pool when REUSABLE (a complete exchange
 * with keep-alive), else closed. The owner must not touch it afterwards. */
void upstream_release(struct upstream *u, int reusable);

/* The writing side, for the owner to queue request bytes on. */
struct sender *upstream_sender(struct upstream *u);
/* Stop / resume delivering reads (backpressure). */
void upstream_pause(struct upstream *u);
void upstream_resume(struct upstream *u);
/* Peer address of a connected upstream, "ip:port", for logs. */
const char *upstream_peer(const struct upstream *u);
/* The transport the connection's bytes go through, for a tunnel's
 * half-close. Reads still arrive through upstream_ops.on_read. */
struct transport *upstream_transport(struct upstream *u);

#endif
