/*
 * tunnel — a byte relay between the client and an upstream connection, for
 * CONNECT and for a 101 Switching Protocols answer. Bytes are forwarded by
 * reference (no copy), each direction with its own backpressure; an EOF on
 * one side is passed on as a half-close (shutdown) of the other, and the
 * tunnel ends when both directions are closed and flushed, or on an error.
 * The owning connection keeps the client socket and reads from it; the
 * tunnel tells it when to stop and start reading.
 */
#ifndef STATUSPROXY_TUNNEL_H
#define STATUSPROXY_TUNNEL_H

#include <stdint.h>

#include "chunk.h"
#include "sender.h"
#include "upstream.h"

struct tunnel;

struct tunnel_ops {
    /* Reading from the client should start or stop: ask tunnel_wants_client. */
    void (*client_reading)(void *owner);
    /* The tunnel is over. ERROR is NULL after a clean close of both sides. */
    void (*finished)(void *owner, const char *error);
};

/* Start relaying between the client's sender TO_CLIENT and UP (whose reads
 * and write completions the owner passes on). Never NULL. */
struct tunnel *tunnel_new(struct sender *to_client, struct upstream *up,
                          const struct tunnel_ops *ops, void *owner);
void tunnel_free(struct tunnel *t); /* the upstream is released (closed) too */

/* Client bytes C->data[pos..len) go to the upstream. */
void tunnel_from_client(struct tunnel *t, struct chunk *c, size_t pos);
/* Upstream bytes C->data[pos..len) go to the client. */
void tunnel_from_upstream(struct tunnel *t, struct chunk *c, size_t pos);
/* EOF (UV_EOF) or an error on either side. */
void tunnel_client_eof(struct tunnel *t, int status);
void tunnel_upstream_eof(struct tunnel *t, int status);
/* A write completed on either side. */
void tunnel_client_written(struct tunnel *t, int status);
void tunnel_upstream_written(struct tunnel *t, int status);

/* Read from the upstream unless the tunnel holds it back (after the owner
 * paused it while it still parsed HTTP). */
void tunnel_resume_upstream(struct tunnel *t);
/* Should the owner read from the client now? */
int tunnel_wants_client(const struct tunnel *t);
/* Bytes relayed from the client to the upstream. */
uint64_t tunnel_client_bytes(const struct tunnel *t);

#endif
