/*
 * conn — one client connection and the exchanges on it: reading and
 * validating requests, choosing the upstream, applying rules and faults,
 * relaying responses, pipelining (one exchange at a time, answers in order),
 * keep-alive, CONNECT and Upgrade tunnels, timeouts, and recording each
 * finished exchange (conn.c, exchange.c, relay.c). Runs on its worker's loop
 * only; what it needs from the worker comes in a struct conn_env.
 */
#ifndef STATUSPROXY_CONN_H
#define STATUSPROXY_CONN_H

#include <stdint.h>
#include <uv.h>

struct audit_entry;
struct conn;
struct dest_policy;
struct rules;
struct run_options;
struct tls_engine_config;
struct upstream_pool;

/* What a connection may ask of the worker that owns it (OWNER below). */
struct conn_hooks {
    /* A connection opened; returns how many are open in the whole process
     * (--max-connections is one limit across workers), this one included. */
    int (*opened)(void *owner);
    /* A connection's memory is gone. */
    void (*closed)(void *owner);
    /* Record one finished exchange (E's strings are copied). ALSO_RULE: a
     * request rule that acted besides the recorded response rule, or NULL. */
    void (*record)(void *owner, const struct audit_entry *e, const char *also_rule);
    /* Is the client address allowed by --allow? */
    int (*client_allowed)(void *owner, const struct sockaddr *sa);
};

/* Everything conn.c, exchange.c and relay.c need from a worker, handed to
 * each connection at accept time: they never call into server.c nor read
 * struct worker. One per worker, owned by it, used on its thread only. */
struct conn_env {
    uv_loop_t *loop;
    const struct run_options *opts;
    struct rules *rules;         /* the set in force, one reference (the worker swaps it); NULL: none */
    struct upstream_pool *pool;
    const char *via_value;       /* "1.1 HOST:PORT (statusproxy)" */
    const char *via_token;       /* "HOST:PORT", this proxy's received-by */
    const struct dest_policy *dest; /* where forward mode may connect (dest_check) */
    int stopping;                /* the worker is stopping: answers say close */
    struct conn *conns;          /* live client connections (conn_next walks them) */
    uint64_t next_conn_id;
    const struct conn_hooks *hooks;
    void *owner;
};

/* Accept a pending connection on SERVER into a new conn on ENV's loop.
 * With TLS (a --tls-listen listener's server config) the client speaks TLS
 * from the first byte. Returns 0 or a libuv error. */
int conn_accept(struct conn_env *env, uv_stream_t *server, struct tls_engine_config *tls);

/* The worker is stopping: an idle connection closes now, a busy one after
 * its current exchange. */
void conn_shutdown(struct conn *c);

/* Close now, whatever the state (the end of the stop grace period). */
void conn_abort(struct conn *c);

/* The next connection in the worker's list, for walking it. */
struct conn *conn_next(struct conn *c);

#endif
