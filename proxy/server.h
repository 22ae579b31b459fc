/*
 * server — the running proxy: one libuv loop per worker thread, each with its
 * own listening socket (SO_REUSEPORT) and upstream pool; the main thread's
 * loop handles signals, rule reloads, the admin API and shutdown. Finished
 * exchanges go from workers to the audit writer in batches.
 */
#ifndef STATUSPROXY_SERVER_H
#define STATUSPROXY_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "audit.h"
#include "conn.h"
#include "dest.h"
#include "options.h"
#include "rules.h"

struct conn;
struct server;

/* Per-thread state. Connections see only its env (conn.h). */
struct worker {
    struct server *srv;
    int id;
    int nworkers;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_tcp_t listener;
    uv_tcp_t tls_listener;       /* --tls-listen; its loop is NULL without it */
    uv_async_t wake;             /* main -> worker: new rules, stop */
    int wake_closed;             /* under the server's lock: wake may not be sent */
    uv_timer_t tick;             /* flushes record batches, publishes counters */
    uv_timer_t stop_timer;       /* bounds the graceful stop */
    uv_timer_t accept_timer;     /* retries accepting while out of fds */
    int accept_paused;           /* out of file descriptors: not accepting */
    int accept_pending;          /* libuv holds an accepted connection for us:
                                  * ACCEPT_PLAIN and/or ACCEPT_TLS */
    struct conn_env env;         /* what its connections need: options, rules, pool, list */
    unsigned nconns;
    struct audit_batch *batch;   /* records not yet handed to the writer */
    struct metrics_local *stats; /* counters published to the main thread */
};

/* Run the proxy until SIGTERM/SIGINT. Returns the process exit status
 * (0 after a clean stop, 1 when it could not start; the reason is logged). */
int server_run(struct run_options *opts);

#endif
