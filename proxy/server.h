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
#include "dest.h"
#include "options.h"
#include "rules.h"

struct conn;
struct server;

/* Per-thread state. Fields are read by conn.c on the worker's own thread. */
struct worker {
    struct server *srv;
    int id;
    int nworkers;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_tcp_t listener;
    uv_async_t wake;             /* main -> worker: new rules, stop */
    int wake_closed;             /* under the server's lock: wake may not be sent */
    uv_timer_t tick;             /* flushes record batches, publishes counters */
    uv_timer_t stop_timer;       /* bounds the graceful stop */
    uv_timer_t accept_timer;     /* retries accepting while out of fds */
    int accept_paused;           /* out of file descriptors: not accepting */
    int accept_pending;          /* libuv holds an accepted connection for us */
    const struct run_options *opts;
    struct rules *rules;         /* current set, one reference; NULL when none */
    struct upstream_pool *pool;
    const char *via_value;       /* "1.1 HOST:PORT (statusproxy)" */
    const char *via_token;       /* "HOST:PORT", this proxy's received-by */
    const struct dest_policy *dest; /* where forward mode may connect (dest_check) */
    struct conn *conns;          /* live client connections */
    unsigned nconns;
    uint64_t next_conn_id;
    int stopping;
    struct audit_batch *batch;   /* records not yet handed to the writer */
    struct metrics_local *stats; /* counters published to the main thread */
};

/* Record one finished exchange (called by conn.c on the worker's thread;
 * E's strings are copied). ALSO_RULE: a request rule that acted besides the
 * recorded response rule, or NULL. */
void worker_record(struct worker *w, const struct audit_entry *e, const char *also_rule);
/* Is the client address allowed by --allow? */
int worker_client_allowed(const struct worker *w, const struct sockaddr *sa);
/* A client connection opened: counts it on the worker and across all
 * workers (--max-connections is one global limit, whatever the spread of
 * SO_REUSEPORT). Returns the number open in the whole process, this one
 * included. */
int worker_conn_opened(struct worker *w);
/* A connection closed; lets a stopping worker finish. */
void worker_conn_closed(struct worker *w);

/* Run the proxy until SIGTERM/SIGINT. Returns the process exit status
 * (0 after a clean stop, 1 when it could not start; the reason is logged). */
int server_run(struct run_options *opts);

#endif
