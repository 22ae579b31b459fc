/*
 * upstream — backend connections and the keep-alive pool.
 *
 * Life of a connection: RESOLVING (only for names) -> CONNECTING -> BUSY
 * (owned by an exchange) <-> IDLE (in the pool, still reading so that a
 * backend's close is noticed) -> CLOSING -> freed after both handles' close
 * callbacks. A connection in the pool has no owner.
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
    uv_tcp_t tcp;
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
    int reading;
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
static void on_timer(struct deadline *d);
static void on_timer_closed(uv_handle_t *h);
static void on_handle_closed(uv_handle_t *h);
static void upstream_close(struct upstream *u);

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
    struct upstream *u = d->data;
    on_handle_closed((uv_handle_t *)&u->tcp);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct upstream *u = h->data;
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
     * close callback then counts for it (on_retry_closed). */
    if (!uv_is_closing((uv_handle_t *)&u->tcp))
        uv_close((uv_handle_t *)&u->tcp, on_handle_closed);
    deadline_close(&u->timer, on_timer_closed);
}

static void on_written(struct sender *s, int status)
{
    struct upstream *u = CONTAINER_OF(s, struct upstream, sender);
    if (u->state == UP_BUSY && u->owner)
        u->ops->on_written(u, status, u->owner);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    UNUSED(h);
    UNUSED(suggested);
    struct chunk *c = chunk_new();
    *buf = uv_buf_init(c->data, CHUNK_SIZE);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream *u = stream->data;
    struct chunk *c = buf->base ? CONTAINER_OF(buf->base, struct chunk, data) : NULL;
    if (nread == 0) {
        chunk_unref(c);
        return;
    }
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
    if (nread < 0) {
        chunk_unref(c);
        u->ops->on_read(u, nread, NULL, u->owner);
        return;
    }
    c->len = (uint32_t)nread;
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

static void on_retry_closed(uv_handle_t *h)
{
    struct upstream *u = h->data;
    if (u->state == UP_CLOSING) {
        on_handle_closed(h);
        return;
    }
    uv_tcp_init(u->pool->loop, &u->tcp);
    u->tcp.data = u;
    start_connect(u);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct upstream *u = req->handle->data;
    if (u->state == UP_CLOSING)
        return;
    if (status == UV_ECANCELED)
        return;
    if (status != 0 && u->next_addr) {
        /* Try the resolver's next address on a fresh socket. */
        uv_close((uv_handle_t *)&u->tcp, on_retry_closed);
        return;
    }
    if (status != 0) {
        fail_connect(u, status);
        return;
    }
    deadline_clear(&u->timer);
    uv_tcp_nodelay(&u->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&u->tcp, (struct sockaddr *)&ss, &len) == 0) {
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
    u->reading = 1;
    uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
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
    int rc = uv_tcp_connect(&u->connect_req, &u->tcp, sa, on_connected);
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
            on_handle_closed((uv_handle_t *)&u->tcp);
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
    uv_tcp_init(p->loop, &u->tcp);
    deadline_init(p->loop, &u->timer, on_timer, u);
    u->tcp.data = u;
    sender_init(&u->sender, (uv_stream_t *)&u->tcp, on_written);
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
        !u->sender.cur) {
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
    u->state = UP_IDLE;
    if (!u->reading) {
        uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
        u->reading = 1;
    }
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
    if (u->reading && u->state == UP_BUSY) {
        uv_read_stop((uv_stream_t *)&u->tcp);
        u->reading = 0;
    }
}

void upstream_resume(struct upstream *u)
{
    if (!u->reading && u->state == UP_BUSY) {
        uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
        u->reading = 1;
    }
}

const char *upstream_peer(const struct upstream *u)
{
    return u->peer;
}

uv_tcp_t *upstream_tcp(struct upstream *u)
{
    return &u->tcp;
}
