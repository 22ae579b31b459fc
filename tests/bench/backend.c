/*
 * backend — a fast HTTP/1.1 origin for the benchmark (tests/bench/bench.py).
 *
 * One libuv loop, one thread. It answers every request from a response built
 * once and kept in memory, so that the proxy under test, not the backend, is
 * what limits throughput:
 *
 *   GET /bytes/N   200 with an N-byte body (N up to 64 MiB)
 *   anything else  200 with the default body (--size bytes)
 *   HEAD           the same head, no body
 *
 * Keep-alive as in RFC 9112 section 9.3 (HTTP/1.1 persistent unless
 * "Connection: close"; HTTP/1.0 only with "Connection: keep-alive"),
 * pipelined requests answered in order, request bodies with Content-Length
 * read and dropped. It is not a general HTTP parser: chunked request bodies,
 * heads over 16 KiB and malformed request lines get a 400 and a close.
 *
 * Usage: backend [--listen HOST:PORT] [--size N] [--close]
 * --close answers every request with "Connection: close" and closes after
 * it, so that a proxy in front must open (and for TLS, handshake) a new
 * upstream connection per request.
 * Prints "listening on HOST:PORT" on stdout once it accepts (port 0 picks a
 * free port), then serves until SIGINT or SIGTERM.
 */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#define HEAD_LIMIT (16 * 1024)
#define BODY_LIMIT (64u * 1024 * 1024)
#define RESPONSES_MAX 256
#define WRITE_HIGH (1024 * 1024)

#define container_of(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

/* A full response (head and body) built once and shared by every write. */
struct response {
    size_t body_len;
    size_t head_len;
    size_t len;
    char *data;
};

struct client {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown_req;
    size_t len;                  /* bytes in buf */
    uint64_t skip;               /* request body bytes still to drop */
    int reading;
    int closing;
    int close_after;             /* a request asked to close: answer it, then shut down */
    char buf[HEAD_LIMIT];
};

struct write_req {
    uv_write_t req;
    struct client *c;
};

static struct response *responses[RESPONSES_MAX];
static size_t n_responses;
static size_t default_size = 12;
static int always_close;
static const struct response *bad_request;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fputs("backend: out of memory\n", stderr);
        abort();
    }
    return p;
}

static struct response *build(int code, const char *reason, size_t body_len, int close)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: %zu\r\n%s\r\n",
                     code, reason, body_len, close ? "Connection: close\r\n" : "");
    struct response *r = xmalloc(sizeof *r);
    r->body_len = body_len;
    r->head_len = (size_t)n;
    r->len = (size_t)n + body_len;
    r->data = xmalloc(r->len);
    memcpy(r->data, head, (size_t)n);
    /* Printable, line-broken bytes: easy to eyeball with curl. */
    for (size_t i = 0; i < body_len; i++)
        r->data[n + i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    if (body_len)
        r->data[r->len - 1] = '\n';
    return r;
}

/* The 200 response with a body of SIZE bytes, or NULL when too many distinct
 * sizes were asked for. Kept for the life of the process. */
static const struct response *response_for(size_t size)
{
    for (size_t i = 0; i < n_responses; i++)
        if (responses[i]->body_len == size)
            return responses[i];
    if (n_responses == RESPONSES_MAX)
        return NULL;
    responses[n_responses] = build(200, "OK", size, always_close);
    return responses[n_responses++];
}

static void on_close(uv_handle_t *h)
{
    free(container_of((uv_tcp_t *)h, struct client, tcp));
}

static void client_close(struct client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    client_close(container_of(req, struct client, shutdown_req));
}

static void on_write(uv_write_t *req, int status);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static int send_response(struct client *c, const struct response *r, int head_only)
{
    struct write_req *w = xmalloc(sizeof *w);
    w->c = c;
    uv_buf_t b = uv_buf_init(r->data, (unsigned)(head_only ? r->head_len : r->len));
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        free(w);
        client_close(c);
    }
    return rc;
}

/* "Connection" header tokens: close and keep-alive, case-insensitive. */
static void connection_tokens(const char *v, size_t n, int *close, int *keep)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        size_t len = i - start;
        if (len == 5 && strncasecmp(v + start, "close", 5) == 0)
            *close = 1;
        if (len == 10 && strncasecmp(v + start, "keep-alive", 10) == 0)
            *keep = 1;
    }
}

/* Answer the request whose head is P[0..HEAD_LEN). Returns 0, or -1 when the
 * connection must not carry another request. */
static int handle_request(struct client *c, const char *p, size_t head_len)
{
    const char *end = p + head_len;
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        send_response(c, bad_request, 0);
        return -1;
    }
    int head_only = (sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0);
    int http10 = sp2[8] == '0';
    const char *target = sp1 + 1;
    size_t target_len = (size_t)(sp2 - target);

    int close = 0, keep = 0, chunked = 0;
    uint64_t length = 0;
    for (const char *line = eol + 2; line < end - 2;) {
        const char *next = memmem(line, (size_t)(end - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(next - line));
        if (colon) {
            size_t name_len = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vlen = (size_t)(next - v);
            if (name_len == 10 && strncasecmp(line, "connection", 10) == 0)
                connection_tokens(v, vlen, &close, &keep);
            else if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0)
                length = strtoull(v, NULL, 10);
            else if (name_len == 17 && strncasecmp(line, "transfer-encoding", 17) == 0)
                chunked = 1;
        }
        line = next + 2;
    }
    if (chunked) {
        send_response(c, bad_request, 0);
        return -1;
    }

    size_t size = default_size;
    if (target_len > 7 && memcmp(target, "/bytes/", 7) == 0) {
        char num[16];
        size_t nlen = target_len - 7;
        const char *q = memchr(target + 7, '?', nlen);
        if (q)
            nlen = (size_t)(q - target - 7);
        if (nlen == 0 || nlen >= sizeof num) {
            send_response(c, bad_request, 0);
            return -1;
        }
        memcpy(num, target + 7, nlen);
        num[nlen] = '\0';
        char *stop;
        unsigned long long v = strtoull(num, &stop, 10);
        if (*stop || v > BODY_LIMIT) {
            send_response(c, bad_request, 0);
            return -1;
        }
        size = (size_t)v;
    }
    const struct response *r = response_for(size);
    if (!r) {
        send_response(c, bad_request, 0);
        return -1;
    }
    c->skip = length;
    if (send_response(c, r, head_only) != 0)
        return -1;
    if (close || always_close || (http10 && !keep))
        return -1;
    return 0;
}

static void update_reading(struct client *c)
{
    int want = !c->closing && !c->close_after && c->tcp.write_queue_size < WRITE_HIGH;
    if (want && !c->reading)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else if (!want && c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = want;
}

/* Answer every complete request in c->buf, in order, while the write queue
 * is short; keep what is left for the next read. */
static void process(struct client *c)
{
    size_t pos = 0;
    while (!c->close_after && c->tcp.write_queue_size < WRITE_HIGH) {
        if (c->skip) {
            size_t n = c->len - pos < c->skip ? c->len - pos : (size_t)c->skip;
            pos += n;
            c->skip -= n;
            if (c->skip)
                break;
        }
        const char *start = c->buf + pos;
        const char *end = memmem(start, c->len - pos, "\r\n\r\n", 4);
        if (!end) {
            if (pos == 0 && c->len == sizeof c->buf) {
                send_response(c, bad_request, 0);
                c->close_after = 1;
            }
            break;
        }
        size_t head_len = (size_t)(end + 4 - start);
        pos += head_len;
        if (handle_request(c, start, head_len) != 0)
            c->close_after = 1;
    }
    if (c->closing)
        return;
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
    if (c->close_after) {
        if (c->reading)
            uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
            client_close(c);
        return;
    }
    update_reading(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = container_of(req, struct write_req, req);
    struct client *c = w->c;
    free(w);
    if (status != 0) {
        client_close(c);
        return;
    }
    if (!c->closing && !c->close_after && !c->reading && c->tcp.write_queue_size < WRITE_HIGH)
        process(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct client *c = container_of((uv_tcp_t *)h, struct client, tcp);
    buf->base = c->buf + c->len;
    buf->len = sizeof c->buf - c->len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct client *c = container_of((uv_tcp_t *)s, struct client, tcp);
    if (nread < 0) {
        client_close(c);
        return;
    }
    c->len += (size_t)nread;
    process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status != 0)
        return;
    struct client *c = xmalloc(sizeof *c);
    memset(c, 0, offsetof(struct client, buf));
    uv_tcp_init(server->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    update_reading(c);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    uv_stop(h->loop);
}

static int usage(void)
{
    fputs("usage: backend [--listen HOST:PORT] [--size N] [--close]\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
            char *stop;
            unsigned long long v = strtoull(argv[++i], &stop, 10);
            if (*stop || v > BODY_LIMIT)
                return usage();
            default_size = (size_t)v;
        } else if (strcmp(argv[i], "--close") == 0) {
            always_close = 1;
        } else {
            return usage();
        }
    }
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= 64)
        return usage();
    char host[64];
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    struct sockaddr_in addr;
    if (uv_ip4_addr(host, atoi(colon + 1), &addr) != 0)
        return usage();

    /* A client that goes away mid-answer must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    bad_request = build(400, "Bad Request", 0, 1);
    response_for(default_size);

    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (rc != 0) {
        fprintf(stderr, "backend: %s: %s\n", listen, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_in bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &blen);
    printf("listening on %s:%d\n", host, ntohs(bound.sin_port));
    fflush(stdout);

    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
