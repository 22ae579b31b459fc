/*
 * upstream — backend connections and the keep-alive pool.
 *
 * Life of a connection: RESOLVING (only for names) -> CONNECTING -> BUSY
 * (owned by an exchange) <-> IDLE (in the pool, still reading so that a
 * backend's close is noticed) -> CLOSING -> freed after both the transport's
 * and the timer's close callbacks. A connection in the pool has no owner.
 * This module owns the socket only while connecting; once connected, every
 * byte goes through the transport (transport.h).
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "log.h"
#include "util.h"

#define POOL_BUCKETS 256
#define POOL_MAX_IDLE_PER_KEY 256

enum upstream_state { UP_RESOLVING, UP_CONNECTING, UP_BUSY, UP_IDLE, UP_CLOSING };

struct upstream {
    struct tcp_transport tcp;    /* the socket; connecting happens on its handle */
    struct transport *tr;        /* what bytes go through: &tcp.base (TLS: a wrapper) */
    struct deadline timer;       /* connect timeout, deferred failure, idle timeout in the pool */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai_req;
    struct sender sender;
    struct upstream_pool *pool;
    enum upstream_state state;
    const struct upstream_ops *ops;
    void *owner;
    char *key;                   /* "host:port", owned */
    char host[256];
    int port;
    struct addrinfo *addrs;      /* resolver result, tried in turn */
    struct addrinfo *next_addr;
    struct sockaddr_storage numeric; /* when the host is an IP literal */
    struct sockaddr_storage peer_sa; /* connected to, for check_addr on reuse */
    int gai_pending;
    int fail_status;             /* a connect failure waiting to be reported */
    int pending_closes;
    char peer[64];
    struct upstream *prev, *next; /* bucket list while idle */
};

struct upstream_pool {
    uv_loop_t *loop;
    uint64_t connect_timeout_ms, idle_timeout_ms;
    struct upstream *buckets[POOL_BUCKETS];
    unsigned bucket_idle[POOL_BUCKETS]; /* idle connections per bucket */
    unsigned live;
    int closing;
};

static void start_connect(struct upstream *u);
static void connected_ready(struct upstream *u);
static void on_timer(struct deadline *d);
static void on_timer_closed(uv_handle_t *h);
static void closed_one(struct upstream *u);
static void upstream_close(struct upstream *u);
static const struct transport_ops tr_ops;

struct upstream_pool *upstream_pool_new(uv_loop_t *loop, uint64_t connect_timeout_ms,
                                        uint64_t idle_timeout_ms)
{
    struct upstream_pool *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->connect_timeout_ms = connect_timeout_ms;
    p->idle_timeout_ms = idle_timeout_ms;
    return p;
}

static unsigned bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *k = (const unsigned char *)key; *k; k++)
        h = (h ^ *k) * 16777619u;
    return h % POOL_BUCKETS;
}

static void pool_unlink(struct upstream *u)
{
    struct upstream_pool *p = u->pool;
    unsigned b = bucket_of(u->key);
    p->bucket_idle[b]--;
    if (u->prev)
        u->prev->next = u->next;
    else
        p->buckets[b] = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
}

static void maybe_free_pool(struct upstream_pool *p)
{
    if (p->closing && p->live == 0)
        free(p);
}

void upstream_pool_close(struct upstream_pool *p)
{
    if (!p)
        return;
    p->closing = 1;
    for (unsigned i = 0; i < POOL_BUCKETS; i++) {
        while (p->buckets[i])
            upstream_close(p->buckets[i]); /* unlinks it from the bucket */
    }
    maybe_free_pool(p);
}

unsigned upstream_pool_live(const struct upstream_pool *p)
{
    return p->live;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct deadline *d = h->data;
    closed_one(d->data);
}

static void closed_one(struct upstream *u)
{
    if (--u->pending_closes > 0 || u->gai_pending)
        return;
    struct upstream_pool *p = u->pool;
    if (u->addrs)
        uv_freeaddrinfo(u->addrs);
    free(u->key);
    free(u);
    p->live--;
    maybe_free_pool(p);
}

static void upstream_close(struct upstream *u)
{
    if (u->state == UP_CLOSING)
        return;
    if (u->state == UP_IDLE)
        pool_unlink(u);
    u->state = UP_CLOSING;
    u->owner = NULL;
    sender_discard(&u->sender);
    if (u->gai_pending)
        uv_cancel((uv_req_t *)&u->gai_req);
    u->pending_closes = 2;
    /* The socket may already be closing between two address attempts; its
     * close callback then counts for it (on_tr_closed). */
    transport_close(u->tr, 0);
    deadline_close(&u->timer, on_timer_closed);
}

static void on_written(struct sender *s, int status)
{
    struct upstream *u = CONTAINER_OF(s, struct upstream, sender);
    if (u->state == UP_BUSY && u->owner)
        u->ops->on_written(u, status, u->owner);
}

static void on_read(struct transport *t, ssize_t nread, struct chunk *c, void *owner)
{
    struct upstream *u = owner;
    UNUSED(t);
    if (u->state == UP_IDLE) {
        /* An idle backend spoke or closed: the connection cannot be reused. */
        chunk_unref(c);
        upstream_close(u);
        return;
    }
    if (u->state != UP_BUSY || !u->owner) {
        chunk_unref(c);
        return;
    }
    u->ops->on_read(u, nread, c, u->owner);
}

/* Connect failures reach the owner from the timer, never from inside
 * upstream_acquire, so the owner always sees on_connect after acquire returned. */
static void fail_connect(struct upstream *u, int status)
{
    u->fail_status = status;
    deadline_set(&u->timer, 0);
}

static void report_failure(struct upstream *u)
{
    u->state = UP_BUSY; /* owned and failed: the owner releases it */
    if (u->owner)
        u->ops->on_connect(u, u->fail_status, u->owner);
}

/* The transport closed: for good, or between two address attempts. */
static void on_tr_closed(struct transport *t, void *owner)
{
    struct upstream *u = owner;
    UNUSED(t);
    if (u->state == UP_CLOSING) {
        closed_one(u);
        return;
    }
    tcp_transport_init(&u->tcp, u->pool->loop, &tr_ops, u);
    start_connect(u);
}

static const struct transport_ops tr_ops = {
    .on_read = on_read,
    .on_closed = on_tr_closed,
};

static void on_connected(uv_connect_t *req, int status)
{
    struct upstream *u = CONTAINER_OF(req, struct upstream, connect_req);
    if (u->state == UP_CLOSING)
        return;
    if (status == UV_ECANCELED)
        return;
    if (status != 0 && u->next_addr) {
        /* Try the resolver's next address on a fresh socket. */
        transport_close(u->tr, 0); /* on_tr_closed connects again */
        return;
    }
    if (status != 0) {
        fail_connect(u, status);
        return;
    }
    uv_tcp_nodelay(tcp_transport_handle(&u->tcp), 1);
    /* TLS hook (issue 10): an https upstream wraps the TCP transport here
     * (u->tr and u->sender.tr = the TLS transport, owner u; the TCP one
     * becomes its inner transport), starts the handshake, and calls
     * connected_ready() from its on_ready; a handshake failure goes to
     * fail_connect() with the transport's error name recorded. */
    connected_ready(u);
}

/* The transport can carry the exchange's bytes: the connection is up. */
static void connected_ready(struct upstream *u)
{
    if (u->state == UP_CLOSING)
        return;
    int rc = transport_read_start(u->tr);
    if (rc != 0) {
        fail_connect(u, rc); /* reported like a failed connect */
        return;
    }
    deadline_clear(&u->timer);
    struct sockaddr_storage ss;
    if (transport_peer(u->tr, &ss) == 0) {
        char ip[48];
        u->peer_sa = ss;
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            snprintf(u->peer, sizeof u->peer, "[%s]:%d", ip, u->port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            snprintf(u->peer, sizeof u->peer, "%s:%d", ip, u->port);
        }
    }
    u->state = UP_BUSY;
    if (u->owner)
        u->ops->on_connect(u, 0, u->owner);
}

/* One timer per connection: connect timeout, deferred failure, pool idle timeout. */
static void on_timer(struct deadline *d)
{
    struct upstream *u = d->data;
    if (u->state == UP_RESOLVING || u->state == UP_CONNECTING) {
        if (!u->fail_status)
            u->fail_status = UPSTREAM_ETIMEDOUT;
        report_failure(u);
    } else if (u->state == UP_IDLE) {
        upstream_close(u); /* idle too long in the pool */
    }
}

static void start_connect(struct upstream *u)
{
    const struct sockaddr *sa;
    u->state = UP_CONNECTING;
    for (;;) {
        if (u->addrs) {
            sa = u->next_addr->ai_addr;
            u->next_addr = u->next_addr->ai_next;
        } else {
            sa = (const struct sockaddr *)&u->numeric;
        }
        int refused = u->ops->check_addr && u->owner ? u->ops->check_addr(sa, u->owner) : 0;
        if (refused == 0)
            break;
        if (!u->addrs || !u->next_addr) {
            fail_connect(u, refused);
            return;
        }
    }
    int rc = uv_tcp_connect(&u->connect_req, tcp_transport_handle(&u->tcp), sa, on_connected);
    if (rc != 0)
        fail_connect(u, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct upstream *u = req->data;
    u->gai_pending = 0;
    if (u->state == UP_CLOSING) {
        if (res)
            uv_freeaddrinfo(res);
        if (u->pending_closes == 0) {
            /* Both handles closed while we were resolving: finish the free. */
            u->pending_closes = 1;
            closed_one(u);
        }
        return;
    }
    if (status != 0 || !res) {
        if (res)
            uv_freeaddrinfo(res);
        fail_connect(u, status ? status : UPSTREAM_EDNS);
        return;
    }
    u->addrs = res;
    u->next_addr = res;
    start_connect(u);
}

struct upstream *upstream_acquire(struct upstream_pool *p, const char *host, int port, int fresh,
                                  const struct upstream_ops *ops, void *owner, int *reused)
{
    char key[300];
    size_t klen = str_copy(key, sizeof key - 8, host);
    key[klen++] = ':';
    str_dec(key + klen, (uint64_t)port);
    if (!fresh) {
        for (struct upstream *u = p->buckets[bucket_of(key)]; u; u = u->next) {
            if (strcmp(u->key, key) != 0)
                continue;
            if (ops->check_addr && ops->check_addr((const struct sockaddr *)&u->peer_sa, owner))
                continue; /* a new connection gets the verdict for each address */
            pool_unlink(u);
            deadline_clear(&u->timer);
            u->state = UP_BUSY;
            u->ops = ops;
            u->owner = owner;
            *reused = 1;
            return u;
        }
    }
    *reused = 0;
    struct upstream *u = xcalloc(1, sizeof *u);
    u->pool = p;
    u->ops = ops;
    u->owner = owner;
    u->key = xstrdup(key);
    str_copy(u->host, sizeof u->host, host);
    u->port = port;
    tcp_transport_init(&u->tcp, p->loop, &tr_ops, u);
    u->tr = &u->tcp.base;
    deadline_init(p->loop, &u->timer, on_timer, u);
    sender_init(&u->sender, u->tr, on_written);
    p->live++;
    deadline_set(&u->timer, p->connect_timeout_ms);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&u->numeric) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&u->numeric) == 0) {
        start_connect(u);
        return u;
    }
    u->state = UP_RESOLVING;
    u->gai_req.data = u;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    int rc = uv_getaddrinfo(p->loop, &u->gai_req, on_resolved, host, service, &hints);
    if (rc != 0) {
        u->state = UP_CONNECTING;
        fail_connect(u, rc);
        return u;
    }
    u->gai_pending = 1;
    return u;
}

void upstream_release(struct upstream *u, int reusable)
{
    if (!u || u->state == UP_CLOSING)
        return;
    struct upstream_pool *p = u->pool;
    u->owner = NULL;
    unsigned same = 0, b = bucket_of(u->key);
    if (reusable && u->state == UP_BUSY && !p->closing && u->sender.writes == 0 &&
        !u->sender.cur && !u->sender.error) {
        /* Count this key's idle connections only when the bucket is full
         * enough for the limit to matter. */
        if (p->bucket_idle[b] >= POOL_MAX_IDLE_PER_KEY)
            for (struct upstream *o = p->buckets[b]; o; o = o->next)
                same += strcmp(o->key, u->key) == 0;
    } else {
        reusable = 0;
    }
    if (!reusable || same >= POOL_MAX_IDLE_PER_KEY) {
        upstream_close(u);
        return;
    }
    /* Idle connections read, to see the backend close them. */
    if (transport_read_start(u->tr) != 0) {
        upstream_close(u);
        return;
    }
    u->state = UP_IDLE;
    p->bucket_idle[b]++;
    u->prev = NULL;
    u->next = p->buckets[b];
    if (u->next)
        u->next->prev = u;
    p->buckets[b] = u;
    deadline_set(&u->timer, p->idle_timeout_ms);
}

struct sender *upstream_sender(struct upstream *u)
{
    return &u->sender;
}

void upstream_pause(struct upstream *u)
{
    if (u->state == UP_BUSY)
        transport_read_stop(u->tr);
}

void upstream_resume(struct upstream *u)
{
    /* After EOF the stream is no longer readable (UV_ENOTCONN): the EOF
     * was delivered already, so there is nothing to wait for. */
    if (u->state == UP_BUSY)
        (void)transport_read_start(u->tr);
}

const char *upstream_peer(const struct upstream *u)
{
    return u->peer;
}

struct transport *upstream_transport(struct upstream *u)
{
    return u->tr;
}
