/*
 * server — startup, worker threads, signals, rule reloads and shutdown.
 *
 * Threads: the main thread runs a loop for signals, the rules-file watcher
 * and the admin API; each worker thread runs its own loop with its own
 * listening socket (SO_REUSEPORT spreads connections), its own upstream pool
 * and counters. Workers never lock on the request path: records are batched
 * per worker and handed to the audit writer every tick or when a batch fills.
 * A new rule set is parsed on the main thread and handed to each worker
 * through a mutex-guarded slot and a uv_async wake-up; exchanges keep a
 * reference to the set they started with.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <ifaddrs.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "chunk.h"
#include "cidr.h"
#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "sender.h"
#include "upstream.h"
#include "util.h"

#define RECORD_BATCH 256
#define TICK_MS 100
#define STOP_GRACE_MS 10000
#define RELOAD_DEBOUNCE_MS 100
#define AUDIT_WATCH_MS 250
#define FD_RESERVE 16               /* fds kept free for upstreams, logs, the db */
#define ACCEPT_RETRY_MS 250         /* while out of fds, look again this often */
#define ACCEPT_PLAIN 1              /* worker.accept_pending: on --listen */
#define ACCEPT_TLS 2                /* ... on --tls-listen */

struct server {
    struct run_options *opts;
    uv_loop_t *loop;
    struct worker *workers;
    int nworkers;
    struct audit *audit;
    struct metrics *metrics;
    struct admin *admin;
    pthread_mutex_t rules_lock;  /* guards current and each worker's pending slot */
    struct rules *current;       /* the set in force; one reference */
    struct rules **pending;      /* per worker: a set to adopt, or NULL */
    struct cidr *allow;
    size_t n_allow;
    struct dest_policy dest;     /* read by the workers; fixed before they start */
    struct sockaddr_storage own[3];
    struct sockaddr_storage *local;
    uv_signal_t sigterm, sigint, sighup;
    uv_fs_event_t watch;
    uv_timer_t reload_timer;
    uv_timer_t audit_watch;      /* logs the audit writer's failures */
    uint64_t audit_errors[AUDIT_ERR_COUNT]; /* counts seen by the last watch */
    int audit_logged[AUDIT_ERR_COUNT];      /* kinds logged since the last success */
    int watching;
    int stopping;                /* 1: finishing exchanges; 2: a second signal, stop now */
    uv_async_t finished;         /* a worker's loop is ending; closed only after
                                  * every worker was joined, since a worker
                                  * sends it after counting itself done */
    int main_closing;            /* the main loop's handles are closing */
    atomic_int workers_done;
    atomic_int nconns;           /* client connections open across workers */
    char via_value[320];
    char via_token[300];
};

/* ---------- on the worker threads ---------- */

static void flush_records(struct worker *w)
{
    if (audit_batch_count(w->batch) == 0)
        return; /* the audit log is open for as long as workers run */
    size_t lost;
    w->batch = audit_submit_batch(w->srv->audit, w->batch, &lost);
    if (lost)
        metrics_add_dropped(w->stats, lost);
}

/* conn_hooks: the worker's side of its connections' env (conn.h). */
static void worker_record(void *owner, const struct audit_entry *e, const char *also_rule)
{
    struct worker *w = owner;
    metrics_record(w->stats, e, also_rule);
    if (audit_batch_add(w->batch, e) == RECORD_BATCH)
        flush_records(w);
}

static int worker_client_allowed(void *owner, const struct sockaddr *sa)
{
    const struct worker *w = owner;
    const struct server *srv = w->srv;
    for (size_t i = 0; i < srv->n_allow; i++)
        if (cidr_contains(&srv->allow[i], sa))
            return 1;
    return 0;
}

/* What forward mode may not reach: --deny-dest, our listen and admin
 * addresses, and (for a wildcard bind) this host's interface addresses. */
static void build_dest_policy(struct server *srv)
{
    const struct run_options *o = srv->opts;
    struct dest_policy *d = &srv->dest;
    d->deny = o->deny_dest;
    d->n_deny = o->n_deny_dest;
    srv->own[0] = o->listen.sa;
    d->n_own = 1;
    if (o->has_tls_listen)
        srv->own[d->n_own++] = o->tls_listen.sa;
    if (o->admin_enabled)
        srv->own[d->n_own++] = o->admin.sa;
    d->own = srv->own;
    struct ifaddrs *ifs = NULL;
    size_t n = 0;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
            n += i->ifa_addr && (i->ifa_addr->sa_family == AF_INET ||
                                 i->ifa_addr->sa_family == AF_INET6);
        srv->local = xcalloc(n ? n : 1, sizeof *srv->local);
        n = 0;
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr)
                continue;
            if (i->ifa_addr->sa_family == AF_INET)
                memcpy(&srv->local[n++], i->ifa_addr, sizeof(struct sockaddr_in));
            else if (i->ifa_addr->sa_family == AF_INET6)
                memcpy(&srv->local[n++], i->ifa_addr, sizeof(struct sockaddr_in6));
        }
        freeifaddrs(ifs);
    } else {
        LOG(LOG_WARN, "cannot list this host's addresses; loopback still counts as ours");
    }
    d->local = srv->local;
    d->n_local = n;
}

static void on_worker_closed(uv_handle_t *h)
{
    UNUSED(h);
}

/* Stop when the last connection is gone: close the loop's own handles. */
static void worker_try_finish(struct worker *w)
{
    if (!w->env.stopping || w->nconns > 0)
        return;
    flush_records(w);
    metrics_publish(w->stats, w->srv->metrics, 0);
    if (uv_is_closing((uv_handle_t *)&w->wake))
        return;
    upstream_pool_close(w->env.pool);
    w->env.pool = NULL;
    pthread_mutex_lock(&w->srv->rules_lock);
    w->wake_closed = 1; /* no more uv_async_send from the main thread */
    pthread_mutex_unlock(&w->srv->rules_lock);
    uv_close((uv_handle_t *)&w->wake, on_worker_closed);
    uv_close((uv_handle_t *)&w->tick, on_worker_closed);
    uv_close((uv_handle_t *)&w->stop_timer, on_worker_closed);
    uv_close((uv_handle_t *)&w->accept_timer, on_worker_closed);
    atomic_fetch_add(&w->srv->workers_done, 1);
    uv_async_send(&w->srv->finished);
}

static int worker_conn_opened(void *owner)
{
    struct worker *w = owner;
    w->nconns++;
    return atomic_fetch_add(&w->srv->nconns, 1) + 1;
}

static void worker_conn_closed(void *owner)
{
    struct worker *w = owner;
    atomic_fetch_sub(&w->srv->nconns, 1);
    w->nconns--;
    metrics_set_connections(w->stats, w->nconns);
    worker_try_finish(w);
}

static const struct conn_hooks conn_hooks = {
    .opened = worker_conn_opened,
    .closed = worker_conn_closed,
    .record = worker_record,
    .client_allowed = worker_client_allowed,
};

/* Are file descriptors about to run out? The lowest free descriptor is
 * about the number in use (the kernel hands out the lowest first). */
static int fds_short(struct worker *w, int reserve)
{
    struct rlimit rl;
    uv_os_fd_t lfd;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        uv_fileno((uv_handle_t *)&w->listener, &lfd) != 0)
        return 0;
    int fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    close(fd);
    return (rlim_t)fd + (rlim_t)reserve >= rl.rlim_cur;
}

static void on_accept_retry(uv_timer_t *t);

/* Out of file descriptors: stop accepting rather than spin on accept or
 * drop clients. A connection libuv already accepted is left pending, which
 * makes libuv stop watching the listener until uv_accept; the timer looks
 * again and resumes once descriptors are free. Clients meanwhile wait in
 * the kernel's backlog. */
static void pause_accepting(struct worker *w)
{
    if (!w->accept_paused)
        LOG(LOG_WARN, "worker %d: out of file descriptors; accepting paused", w->id);
    w->accept_paused = 1;
    uv_timer_start(&w->accept_timer, on_accept_retry, ACCEPT_RETRY_MS, 0);
}

/* Close the worker's listening sockets (stop accepting). */
static void close_listeners(struct worker *w, uv_close_cb cb)
{
    if (w->listener.loop && !uv_is_closing((uv_handle_t *)&w->listener))
        uv_close((uv_handle_t *)&w->listener, cb);
    if (w->tls_listener.loop && !uv_is_closing((uv_handle_t *)&w->tls_listener))
        uv_close((uv_handle_t *)&w->tls_listener, cb);
}

/* Accept one connection on the listener WHICH (ACCEPT_PLAIN or ACCEPT_TLS);
 * a TLS listener's clients get a TLS server transport from the start. */
static void accept_one(struct worker *w, int which)
{
    int tls = which == ACCEPT_TLS;
    uv_stream_t *l = (uv_stream_t *)(tls ? &w->tls_listener : &w->listener);
    int rc = conn_accept(&w->env, l, tls ? w->srv->opts->listen_tls : NULL);
    if (rc != 0)
        LOG(LOG_DEBUG, "accept: %s", uv_strerror(rc));
    metrics_set_connections(w->stats, w->nconns);
}

static void on_accept_retry(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->env.stopping)
        return;
    if (fds_short(w, 2 * FD_RESERVE)) { /* resume with room to spare: no flapping */
        pause_accepting(w);
        return;
    }
    w->accept_paused = 0;
    LOG(LOG_INFO, "worker %d: file descriptors free again; accepting", w->id);
    int pending = w->accept_pending;
    w->accept_pending = 0;
    /* libuv then watches the listener again */
    if (pending & ACCEPT_PLAIN)
        accept_one(w, ACCEPT_PLAIN);
    if (pending & ACCEPT_TLS)
        accept_one(w, ACCEPT_TLS);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->data;
    int which = server == (uv_stream_t *)&w->tls_listener ? ACCEPT_TLS : ACCEPT_PLAIN;
    if (status == UV_EMFILE || status == UV_ENFILE) {
        pause_accepting(w);
        return;
    }
    if (status != 0) {
        LOG(LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    if (w->accept_paused || fds_short(w, FD_RESERVE)) {
        w->accept_pending |= which;
        pause_accepting(w);
        return;
    }
    accept_one(w, which);
}

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    flush_records(w);
    metrics_publish(w->stats, w->srv->metrics, upstream_pool_live(w->env.pool));
}

static void on_stop_grace_over(uv_timer_t *t)
{
    struct worker *w = t->data;
    for (struct conn *c = w->env.conns, *next; c; c = next) {
        next = conn_next(c);
        conn_abort(c);
    }
}

static void on_wake(uv_async_t *a)
{
    struct worker *w = a->data;
    struct server *srv = w->srv;
    pthread_mutex_lock(&srv->rules_lock);
    struct rules *fresh = srv->pending[w->id];
    srv->pending[w->id] = NULL;
    int stop = srv->stopping;
    pthread_mutex_unlock(&srv->rules_lock);
    if (fresh) {
        rules_unref(w->env.rules);
        w->env.rules = fresh;
    }
    if (stop == 2 && w->env.stopping) {
        on_stop_grace_over(&w->stop_timer);
        return;
    }
    if (stop && !w->env.stopping) {
        w->env.stopping = 1;
        close_listeners(w, on_worker_closed);
        for (struct conn *c = w->env.conns, *next; c; c = next) {
            next = conn_next(c);
            conn_shutdown(c);
        }
        uv_timer_start(&w->stop_timer, on_stop_grace_over, STOP_GRACE_MS, 0);
        worker_try_finish(w);
    }
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    flush_records(w);
    rules_unref(w->env.rules);
    w->env.rules = NULL;
    chunk_trim();
    sender_trim();
}

/* ---------- listening sockets ---------- */

static socklen_t sa_len(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Is the port free? A plain bind tells: SO_REUSEPORT would let a second
 * statusproxy on the same port start silently. */
static int probe_bind(const struct listen_addr *a)
{
    if (a->port == 0)
        return 0;
    int fd = socket(a->sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (const struct sockaddr *)&a->sa, sa_len(&a->sa)) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* A listening socket for one worker, bound with SO_REUSEPORT. Updates the
 * port in A when it was 0 (the first worker picks it). */
static int open_listener(uv_loop_t *loop, uv_tcp_t *tcp, struct listen_addr *a)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (a->sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&a->sa, sa_len(&a->sa)) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (a->port == 0) {
        struct sockaddr_storage got;
        socklen_t len = sizeof got;
        getsockname(fd, (struct sockaddr *)&got, &len);
        int port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                   : ((struct sockaddr_in *)&got)->sin_port);
        char *colon = strrchr(a->text, ':');
        if (colon)
            snprintf(colon + 1, sizeof a->text - (size_t)(colon + 1 - a->text), "%d", port);
        a->port = port;
        memcpy(&a->sa, &got, sizeof got);
    }
    uv_tcp_init(loop, tcp); /* tcp->loop set: the caller closes it on failure */
    int rc = uv_tcp_open(tcp, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return 0;
}

/* ---------- on the main thread ---------- */

static void on_main_closed(uv_handle_t *h)
{
    UNUSED(h);
}

static void print_diags(const char *path, const struct rules_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        char *line = rules_diag_format(path, &d->items[i]);
        LOG(d->items[i].is_error ? LOG_ERROR : LOG_WARN, "%s", line);
        free(line);
    }
}

/* Wake every worker whose loop still runs; rules_lock held. */
static void wake_workers_locked(struct server *srv)
{
    for (int i = 0; i < srv->nworkers; i++)
        if (!srv->workers[i].wake_closed)
            uv_async_send(&srv->workers[i].wake);
}

/* Hand SET (one reference, may be NULL) to every worker and keep it current. */
static void install_rules(struct server *srv, struct rules *set)
{
    pthread_mutex_lock(&srv->rules_lock);
    rules_unref(srv->current);
    srv->current = set;
    for (int i = 0; i < srv->nworkers; i++) {
        rules_unref(srv->pending[i]);
        srv->pending[i] = set ? rules_ref(set) : NULL;
    }
    wake_workers_locked(srv);
    pthread_mutex_unlock(&srv->rules_lock);
}

/* For the admin API (struct admin_ops): parse TEXT and swap it in whole; on
 * errors keep the old set and return -1 with DIAGS filled. */
static int rules_for_admin_replace(void *ctx, const char *text, size_t len,
                                   struct rules_diags *diags)
{
    struct server *srv = ctx;
    const struct run_options *o = srv->opts;
    struct rules *set = rules_parse(text, len, o->rules_path ? o->rules_path : "rules", o->seed,
                                    diags);
    if (!set)
        return -1;
    install_rules(srv, set);
    return 0;
}

/* For the admin API: the rule set in force, with a reference for the caller. */
static struct rules *rules_for_admin_current(void *ctx)
{
    struct server *srv = ctx;
    pthread_mutex_lock(&srv->rules_lock);
    struct rules *set = srv->current ? rules_ref(srv->current) : NULL;
    pthread_mutex_unlock(&srv->rules_lock);
    return set;
}

/* Reload the rules file: swap in the new set whole, or keep the old one. */
static void reload_rules(struct server *srv, const char *why)
{
    const char *path = srv->opts->rules_path;
    struct rules_diags diags = {0};
    struct rules *set = rules_load_file(path, srv->opts->seed, &diags);
    print_diags(path, &diags);
    if (!set) {
        LOG(LOG_ERROR, "rules: %s: reload after %s refused (%zu error%s); the previous rules stay",
            path, why, diags.errors, diags.errors == 1 ? "" : "s");
    } else {
        LOG(LOG_INFO, "rules: %s: reloaded after %s, %zu rule%s", path, why, rules_count(set),
            rules_count(set) == 1 ? "" : "s");
        install_rules(srv, set);
    }
    rules_diags_free(&diags);
}

static void on_reload_timer(uv_timer_t *t)
{
    reload_rules(t->data, "a change of the file");
}

static void watch_rules_file(struct server *srv);

static void on_rules_changed(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct server *srv = h->data;
    UNUSED(filename);
    UNUSED(events);
    if (status != 0 || srv->stopping)
        return;
    /* Editors write in several steps (or replace the file): wait for quiet,
     * then watch the path afresh, since a rename leaves the old inode. */
    uv_timer_start(&srv->reload_timer, on_reload_timer, RELOAD_DEBOUNCE_MS, 0);
    uv_fs_event_stop(&srv->watch);
    watch_rules_file(srv);
}

static void watch_rules_file(struct server *srv)
{
    if (uv_fs_event_start(&srv->watch, on_rules_changed, srv->opts->rules_path, 0) != 0)
        LOG(LOG_WARN, "rules: cannot watch %s for changes; SIGHUP still reloads it",
            srv->opts->rules_path);
}

static void close_main_handles(struct server *srv)
{
    uv_close((uv_handle_t *)&srv->sigterm, on_main_closed);
    uv_close((uv_handle_t *)&srv->sigint, on_main_closed);
    uv_close((uv_handle_t *)&srv->sighup, on_main_closed);
    uv_close((uv_handle_t *)&srv->audit_watch, on_main_closed);
}

/* The audit writer retries a failing write for as long as it fails; log
 * each kind of failure once when it starts, and once when writes succeed
 * again, rather than once per retry. The counts go to /metrics. */
static void on_audit_watch(uv_timer_t *t)
{
    struct server *srv = t->data;
    uint64_t counts[AUDIT_ERR_COUNT];
    char msg[256];
    int failing = audit_last_error(srv->audit, msg, sizeof msg);
    audit_error_counts(srv->audit, counts);
    int logged = 0;
    for (int k = 0; k < AUDIT_ERR_COUNT; k++) {
        if (counts[k] > srv->audit_errors[k] && !srv->audit_logged[k]) {
            LOG(LOG_WARN, "audit: cannot write to %s (%s): %s; retrying, records wait in memory",
                srv->opts->db_path, audit_error_kind_name((enum audit_error_kind)k),
                failing ? msg : "failed once");
            srv->audit_logged[k] = 1;
        }
        srv->audit_errors[k] = counts[k];
        logged |= srv->audit_logged[k];
    }
    if (!failing && logged) {
        LOG(LOG_INFO, "audit: writing to %s again", srv->opts->db_path);
        memset(srv->audit_logged, 0, sizeof srv->audit_logged);
    }
}

/* Every worker's loop is ending: let the main loop end too. */
static void on_worker_finished(uv_async_t *a)
{
    struct server *srv = a->data;
    if (atomic_load(&srv->workers_done) == srv->nworkers && !srv->main_closing) {
        srv->main_closing = 1;
        close_main_handles(srv);
    }
}

/* The first SIGTERM/SIGINT stops accepting and lets exchanges in flight
 * finish (at most STOP_GRACE_MS); a second one cuts them now. Records are
 * written either way. */
static void begin_stop(struct server *srv, const char *why)
{
    if (srv->stopping == 2)
        return;
    pthread_mutex_lock(&srv->rules_lock);
    srv->stopping = srv->stopping ? 2 : 1;
    wake_workers_locked(srv);
    pthread_mutex_unlock(&srv->rules_lock);
    if (srv->stopping == 2) {
        LOG(LOG_INFO, "%s again: stopping now", why);
    } else {
        LOG(LOG_INFO, "%s: stopping (finishing exchanges in flight)", why);
        uv_close((uv_handle_t *)&srv->reload_timer, on_main_closed);
        if (srv->watching)
            uv_close((uv_handle_t *)&srv->watch, on_main_closed);
        admin_stop(srv->admin);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct server *srv = s->data;
    if (signum == SIGHUP) {
        if (srv->opts->rules_path && !srv->stopping)
            reload_rules(srv, "SIGHUP");
        return;
    }
    begin_stop(srv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void via_identity(struct server *srv)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "statusproxy");
    host[sizeof host - 1] = '\0';
    snprintf(srv->via_token, sizeof srv->via_token, "%s:%d", host, srv->opts->listen.port);
    snprintf(srv->via_value, sizeof srv->via_value, "1.1 %s (statusproxy)", srv->via_token);
}

static int parse_allow(struct server *srv)
{
    const struct run_options *o = srv->opts;
    srv->allow = xcalloc(o->n_allow, sizeof *srv->allow);
    for (size_t i = 0; i < o->n_allow; i++) {
        if (cidr_parse(o->allow[i], strlen(o->allow[i]), &srv->allow[i]) != 0) {
            fprintf(stderr, "statusproxy: --allow: expected a CIDR like 10.0.0.0/8, got '%s'\n",
                    o->allow[i]);
            return -1;
        }
    }
    srv->n_allow = o->n_allow;
    return 0;
}

/* Records the audit writer lost so far. */
static uint64_t server_dropped(struct server *srv)
{
    return srv->audit ? audit_dropped(srv->audit) : 0;
}

static void cleanup(struct server *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (w->srv)
            uv_loop_close(&w->loop);
        audit_batch_free(w->batch);
        metrics_local_free(w->stats);
    }
    free(srv->workers);
    for (int i = 0; i < srv->nworkers; i++)
        rules_unref(srv->pending[i]);
    free(srv->pending);
    rules_unref(srv->current);
    admin_free(srv->admin);
    audit_close(srv->audit);
    metrics_free(srv->metrics);
    free(srv->allow);
    free(srv->local);
    pthread_mutex_destroy(&srv->rules_lock);
}

/* Open and listen on one worker's socket for A ("" or " (TLS)" in
 * messages). Listening happens before any thread runs, so that a failure
 * stops start-up (with a message). */
static int listen_one(struct worker *w, uv_tcp_t *tcp, struct listen_addr *a, const char *what)
{
    int rc = open_listener(&w->loop, tcp, a);
    if (rc != 0) {
        fprintf(stderr, "statusproxy: cannot listen on %s%s: %s\n", a->text, what,
                uv_strerror(rc));
        return -1;
    }
    tcp->data = w;
    rc = uv_listen((uv_stream_t *)tcp, 1024, on_connection);
    if (rc != 0) {
        fprintf(stderr, "statusproxy: cannot listen on %s%s (worker %d): %s\n", a->text, what,
                w->id, uv_strerror(rc));
        return -1;
    }
    return 0;
}

/* Each worker's loop and listening sockets. */
static int open_workers(struct server *srv)
{
    struct run_options *opts = srv->opts;
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->srv = srv;
        w->id = i;
        w->nworkers = srv->nworkers;
        w->env.opts = opts;
        w->env.loop = &w->loop;
        w->env.hooks = &conn_hooks;
        w->env.owner = w;
        uv_loop_init(&w->loop);
        w->stats = metrics_local_new();
        if (listen_one(w, &w->listener, &opts->listen, "") != 0 ||
            (opts->has_tls_listen &&
             listen_one(w, &w->tls_listener, &opts->tls_listen, " (TLS)") != 0)) {
            srv->nworkers = i + 1;
            return -1;
        }
    }
    return 0;
}

/* The rest of each worker's state, once the listeners are open. */
static void init_workers(struct server *srv)
{
    const struct run_options *opts = srv->opts;
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->env.via_value = srv->via_value;
        w->env.via_token = srv->via_token;
        w->env.dest = &srv->dest;
        w->env.rules = srv->current ? rules_ref(srv->current) : NULL;
        w->env.pool = upstream_pool_new(&w->loop, opts->connect_timeout_ms, opts->idle_timeout_ms);
        w->batch = audit_batch_new();
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->tick);
        w->tick.data = w;
        uv_timer_start(&w->tick, on_tick, TICK_MS, TICK_MS);
        uv_timer_init(&w->loop, &w->stop_timer);
        w->stop_timer.data = w;
        uv_timer_init(&w->loop, &w->accept_timer);
        w->accept_timer.data = w;
    }
}

/* Start the worker threads. A thread that cannot be created stops start-up:
 * the workers not started are wound down here on the main thread (their
 * loops never ran), the started ones by the caller's begin_stop. Returns how
 * many threads run. */
static int start_workers(struct server *srv)
{
    int i = 0;
    for (; i < srv->nworkers; i++) {
        int rc = uv_thread_create(&srv->workers[i].thread, worker_main, &srv->workers[i]);
        if (rc != 0) {
            LOG(LOG_ERROR, "cannot start worker thread %d: %s", i, uv_strerror(rc));
            break;
        }
    }
    for (int j = i; j < srv->nworkers; j++) {
        struct worker *w = &srv->workers[j];
        w->env.stopping = 1;
        close_listeners(w, on_worker_closed);
        worker_try_finish(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        rules_unref(w->env.rules);
        w->env.rules = NULL;
    }
    return i;
}

/* Load --rules, printing its diagnostics. Returns -1 when it has errors. */
static int load_rules(struct server *srv)
{
    struct run_options *opts = srv->opts;
    struct rules_diags diags = {0};
    srv->current = rules_load_file(opts->rules_path, opts->seed, &diags);
    for (size_t i = 0; i < diags.n; i++) {
        char *line = rules_diag_format(opts->rules_path, &diags.items[i]);
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    rules_diags_free(&diags);
    return srv->current ? 0 : -1;
}

/* Check that --listen (and --admin) can be bound, and open the audit
 * database, before any worker exists. Returns -1 with a message printed. */
static int open_stores(struct server *srv)
{
    struct run_options *opts = srv->opts;
    const struct listen_addr *addrs[3] = {&opts->listen};
    size_t n = 1;
    if (opts->has_tls_listen)
        addrs[n++] = &opts->tls_listen;
    if (opts->admin_enabled)
        addrs[n++] = &opts->admin;
    for (size_t i = 0; i < n; i++) {
        int rc = probe_bind(addrs[i]);
        if (rc != 0) {
            fprintf(stderr, "statusproxy: cannot listen on %s: %s\n", addrs[i]->text,
                    uv_strerror(rc));
            return -1;
        }
    }

    char err[512];
    struct audit_config acfg = {opts->db_path, opts->log_exchanges, opts->retain_ms, 0,
                                opts->routes, (size_t)opts->max_routes};
    srv->audit = audit_open(&acfg, err, sizeof err);
    if (!srv->audit) {
        fprintf(stderr, "statusproxy: --db %s: %s\n", opts->db_path, err);
        return -1;
    }
    return 0;
}

/* The main loop's handles: signals, the reload and audit timers, the
 * workers' finished wake-up and the rules file watch. */
static void init_main_handles(struct server *srv)
{
    uv_signal_init(srv->loop, &srv->sigterm);
    uv_signal_init(srv->loop, &srv->sigint);
    uv_signal_init(srv->loop, &srv->sighup);
    srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sighup, on_signal, SIGHUP);
    uv_timer_init(srv->loop, &srv->reload_timer);
    srv->reload_timer.data = srv;
    uv_timer_init(srv->loop, &srv->audit_watch);
    srv->audit_watch.data = srv;
    uv_timer_start(&srv->audit_watch, on_audit_watch, AUDIT_WATCH_MS, AUDIT_WATCH_MS);
    uv_async_init(srv->loop, &srv->finished, on_worker_finished);
    srv->finished.data = srv;
    uv_unref((uv_handle_t *)&srv->finished); /* the loop ends without waiting for it */
    if (srv->opts->rules_path) {
        uv_fs_event_init(srv->loop, &srv->watch);
        srv->watch.data = srv;
        srv->watching = 1;
        watch_rules_file(srv);
    }
}

/* Workers never started: close what was opened on their loops and the
 * admin listener. */
static void unwind_unstarted(struct server *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        close_listeners(w, NULL);
        if (w->srv)
            uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    admin_stop(srv->admin);
    uv_run(srv->loop, UV_RUN_DEFAULT);
}

/* Start the workers, serve until stopped, then join them. Returns the exit
 * status: 1 when a worker thread could not start. */
static int serve(struct server *srv)
{
    struct run_options *opts = srv->opts;
    int started = start_workers(srv);
    if (started < srv->nworkers)
        begin_stop(srv, "a worker thread could not start");
    else
        LOG(LOG_INFO, "listening on %s%s%s (%s), %d worker%s%s%s", opts->listen.text,
        opts->has_tls_listen ? " and TLS on " : "",
        opts->has_tls_listen ? opts->tls_listen.text : "",
        opts->has_upstream ? opts->upstream_authority : "forward proxy", srv->nworkers,
        srv->nworkers == 1 ? "" : "s", opts->admin_enabled ? ", admin on " : "",
        opts->admin_enabled ? opts->admin.text : "");

    uv_run(srv->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < started; i++)
        uv_thread_join(&srv->workers[i].thread);
    /* Every worker has sent its last wake-up: now `finished` may go. */
    uv_close((uv_handle_t *)&srv->finished, on_main_closed);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    LOG(LOG_INFO, "stopped; %llu records lost", (unsigned long long)server_dropped(srv));
    return started == srv->nworkers ? 0 : 1;
}

int server_run(struct run_options *opts)
{
    struct server srv_storage, *srv = &srv_storage;
    memset(srv, 0, sizeof *srv);
    srv->opts = opts;
    srv->loop = uv_default_loop();
    srv->nworkers = opts->workers;
    pthread_mutex_init(&srv->rules_lock, NULL);
    srv->pending = xcalloc((size_t)srv->nworkers, sizeof *srv->pending);
    srv->workers = xcalloc((size_t)srv->nworkers, sizeof *srv->workers);
    srv->metrics = metrics_new();
    int status = 1, ran = 0;
    /* A client that closes while we write must be an EPIPE for libuv, not
     * a signal that kills the process. */
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM, SIGINT and SIGHUP wait (blocked) until their handlers are in
     * place: once the port accepts, a supervisor may stop us at once, and
     * that must be the graceful stop, not the default action. Threads
     * started meanwhile (the audit writer) keep them blocked. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (parse_allow(srv) != 0) {
        status = 2;
        goto out;
    }

    if (!opts->has_seed) {
        opts->seed = (uint64_t)time_now_ms() ^ ((uint64_t)getpid() << 32);
        opts->has_seed = 1;
    }
    if (opts->rules_path && load_rules(srv) != 0) {
        status = 2;
        goto out;
    }
    if (open_stores(srv) != 0)
        goto out;

    /* The admin API listens first: once the proxy's port accepts, clients
     * (and scripts that wait for it) may use the admin API at once. */
    if (opts->admin_enabled) {
        char err[512];
        const struct admin_ops ops = {.opts = opts, .metrics = srv->metrics, .audit = srv->audit,
                                      .ctx = srv, .current_rules = rules_for_admin_current,
                                      .replace_rules = rules_for_admin_replace};
        srv->admin = admin_start(&ops, srv->loop, &opts->admin, err, sizeof err);
        if (!srv->admin) {
            fprintf(stderr, "statusproxy: cannot listen on %s (admin): %s\n", opts->admin.text,
                    err);
            goto out;
        }
    }
    if (open_workers(srv) != 0)
        goto out;
    via_identity(srv);
    build_dest_policy(srv);
    init_workers(srv);
    init_main_handles(srv);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    status = serve(srv);
    ran = 1;
out:
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    if (!ran)
        unwind_unstarted(srv);
    cleanup(srv);
    uv_loop_close(srv->loop);
    return status;
}
