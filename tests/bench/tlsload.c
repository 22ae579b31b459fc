/*
 * tlsload — an HTTPS load generator for the benchmark (tests/bench/bench.py).
 *
 * wrk cannot send CONNECT, so it cannot measure a proxy that intercepts
 * HTTPS. tlsload can: with --proxy it opens each connection with
 * "CONNECT HOST:PORT", expects a 200 and then speaks TLS inside the tunnel,
 * verifying the certificate the proxy minted against --cafile.
 *
 * One thread per connection with blocking sockets: simple, and on loopback
 * fast enough that the proxy, not tlsload, is the bottleneck (compare
 * `direct` with wrk over https against the same origin). Each thread sends
 * keep-alive GETs and reads every answer completely (Content-Length,
 * chunked, or until close). With --new-connection every request gets its
 * own TCP connection, CONNECT and full TLS handshake (no session
 * resumption), so requests/s is handshakes/s; its latency then covers
 * connect, CONNECT, handshake and the exchange.
 *
 * Usage: tlsload [options] https://HOST:PORT/PATH
 *   --proxy HOST:PORT   go through an HTTP proxy with CONNECT
 *   --cafile FILE       trust these CAs and check the name (else no verification)
 *   --connections N     concurrent connections, one thread each [10]
 *   --duration S        measured seconds [5]
 *   --warmup S          seconds before measuring starts [0]
 *   --new-connection    one request per connection (handshakes/s)
 *   --timeout S         socket read/write timeout [10]
 * SNI is HOST unless HOST is an IP address (RFC 6066 section 3 forbids IP
 * literals there); the certificate is checked for HOST as a DNS name or an
 * IP SAN. ALPN offers http/1.1 only.
 *
 * Output: one JSON line on stdout: requests (completed in the measured
 * window), rps, p50_ms, p99_ms, errors, error (the first error's message or
 * null), non2xx, connections (TCP connections opened, warm-up included),
 * threads.
 * Exit status 0, or 2 for bad arguments, 1 when nothing could be set up.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define READ_BUF (64 * 1024)
#define HEAD_MAX (16 * 1024)

enum outcome { OK = 0, FAIL = -1 };

struct options {
    char host[256];
    char port[16];
    char path[2048];
    char proxy_host[256];
    char proxy_port[16];
    const char *cafile;
    int connections;
    double duration;
    double warmup;
    double timeout;
    int new_connection;
    int host_is_ip;
};

/* What one thread measured; merged by main after join. */
struct worker {
    pthread_t thread;
    uint32_t *lat_us; /* latencies of measured requests, microseconds */
    size_t nlat, caplat;
    long errors, non2xx, conns;
};

/* One connection: socket, TLS, and a read buffer the parser consumes. */
struct conn {
    int fd;
    SSL *ssl;
    char buf[READ_BUF];
    size_t start, end;
    int closed; /* the peer ended the stream: no more bytes */
};

static struct options opt;
static SSL_CTX *ctx;
static struct addrinfo *dest; /* the proxy with --proxy, else the origin */
static double t_begin, t_measure, t_end;
static char request[4096];
static size_t request_len;
static char connect_req[1024];
static size_t connect_len;

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[512];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Count an error; the first one's message is kept for the report. Errors
 * during warm-up are counted too: a broken setup must not look clean. */
static void fail(struct worker *w, const char *fmt, ...) {
    w->errors++;
    pthread_mutex_lock(&err_lock);
    if (!first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_error, sizeof first_error, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&err_lock);
}

static const char *ssl_error_text(void) {
    static __thread char text[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return errno ? strerror(errno) : "connection closed";
    ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return text;
}

/* The leaf certificate this thread last verified, DER. Proxies mint one
 * certificate per name and keep it, so the same bytes come back on every
 * new connection; checking them against this copy instead of building and
 * verifying the chain again saves about an eighth of the client's CPU per
 * handshake (as browsers keep verification results). The handshake's own
 * signature (CertificateVerify) is still checked by OpenSSL every time. */
static __thread unsigned char *verified_der;
static __thread int verified_len;

static int verify_cached(X509_STORE_CTX *store, void *arg) {
    (void)arg;
    unsigned char *der = NULL;
    int len = i2d_X509(X509_STORE_CTX_get0_cert(store), &der);
    if (len > 0 && len == verified_len && memcmp(der, verified_der, (size_t)len) == 0) {
        OPENSSL_free(der);
        return 1;
    }
    int ok = X509_verify_cert(store);
    if (ok == 1 && len > 0) {
        OPENSSL_free(verified_der);
        verified_der = der;
        verified_len = len;
    } else {
        OPENSSL_free(der);
    }
    return ok;
}

static void conn_drop(struct conn *c) {
    if (c->ssl) {
        /* A close_notify, not waiting for the peer's: as a browser does. */
        if (!c->closed && SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    ERR_clear_error(); /* so the next failure's message is its own */
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->start = c->end = 0;
    c->closed = 0;
}

/* Read the proxy's answer to CONNECT on the plain socket: peek, then take
 * exactly the head, so that no TLS byte is swallowed with it. */
static int read_connect_answer(struct worker *w, int fd) {
    char head[HEAD_MAX];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, head, sizeof head - 1, MSG_PEEK);
        if (n <= 0) {
            fail(w, "CONNECT: %s", n == 0 ? "proxy closed" : strerror(errno));
            return FAIL;
        }
        head[n] = 0;
        char *end = strstr(head, "\r\n\r\n");
        if (end) {
            have = (size_t)(end - head) + 4;
            break;
        }
        if ((size_t)n >= sizeof head - 1) {
            fail(w, "CONNECT: answer head too long");
            return FAIL;
        }
        usleep(200); /* a partial head: let the rest arrive */
    }
    if (recv(fd, head, have, 0) != (ssize_t)have) {
        fail(w, "CONNECT: short read");
        return FAIL;
    }
    head[have] = 0;
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
        char *eol = strstr(head, "\r\n");
        if (eol)
            *eol = 0;
        fail(w, "CONNECT answered: %.200s", head);
        return FAIL;
    }
    return OK;
}

static int conn_open(struct worker *w, struct conn *c) {
    c->fd = socket(dest->ai_family, SOCK_STREAM, 0);
    if (c->fd < 0) {
        fail(w, "socket: %s", strerror(errno));
        return FAIL;
    }
    struct timeval tv = {(time_t)opt.timeout,
                         (suseconds_t)((opt.timeout - (double)(time_t)opt.timeout) * 1e6)};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, dest->ai_addr, dest->ai_addrlen) < 0) {
        fail(w, "connect: %s", strerror(errno));
        return FAIL;
    }
    w->conns++;
    if (opt.proxy_host[0]) {
        if (send(c->fd, connect_req, connect_len, MSG_NOSIGNAL) != (ssize_t)connect_len) {
            fail(w, "CONNECT: send: %s", strerror(errno));
            return FAIL;
        }
        if (read_connect_answer(w, c->fd) != OK)
            return FAIL;
    }
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (!opt.host_is_ip)
        SSL_set_tlsext_host_name(c->ssl, opt.host);
    if (opt.cafile) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        if (opt.host_is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(param, opt.host);
        else
            X509_VERIFY_PARAM_set1_host(param, opt.host, 0);
    }
    errno = 0;
    if (SSL_connect(c->ssl) != 1) {
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            fail(w, "TLS handshake: certificate: %s", X509_verify_cert_error_string(v));
        else
            fail(w, "TLS handshake: %s", ssl_error_text());
        return FAIL;
    }
    return OK;
}

/* More bytes into c->buf; compacts first. Returns bytes read, 0 at the end
 * of the stream, FAIL on error (counted). */
static int conn_fill(struct worker *w, struct conn *c) {
    if (c->closed)
        return 0;
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == sizeof c->buf) {
        fail(w, "answer head or chunk line too long");
        return FAIL;
    }
    errno = 0;
    int n = SSL_read(c->ssl, c->buf + c->end, (int)(sizeof c->buf - c->end));
    if (n > 0) {
        c->end += (size_t)n;
        return n;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN) {
        c->closed = 1;
        return 0;
    }
    if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
        fail(w, "read: no answer within %gs (--timeout)", opt.timeout);
    else
        fail(w, "read: %s", e == SSL_ERROR_SYSCALL && errno ? strerror(errno) : ssl_error_text());
    return FAIL;
}

/* Find "\r\n" from c->start, reading more as needed; returns the offset of
 * the line's end, or FAIL. */
static long read_line(struct worker *w, struct conn *c) {
    size_t rel = 0; /* bytes after c->start already scanned (conn_fill moves them) */
    for (;;) {
        for (size_t i = c->start + rel; i + 1 < c->end; i++)
            if (c->buf[i] == '\r' && c->buf[i + 1] == '\n')
                return (long)i;
        rel = c->end - c->start > 0 ? c->end - c->start - 1 : 0;
        int n = conn_fill(w, c);
        if (n <= 0) {
            if (n == 0)
                fail(w, "connection closed inside an answer head");
            return FAIL;
        }
    }
}

/* Consume n body bytes without keeping them. */
static int skip_bytes(struct worker *w, struct conn *c, uint64_t n) {
    while (n > 0) {
        if (c->start == c->end) {
            c->start = c->end = 0;
            int r = conn_fill(w, c);
            if (r <= 0) {
                if (r == 0)
                    fail(w, "connection closed inside a body");
                return FAIL;
            }
        }
        size_t take = c->end - c->start;
        if (take > n)
            take = (size_t)n;
        c->start += take;
        n -= take;
    }
    return OK;
}

static int read_chunked(struct worker *w, struct conn *c) {
    for (;;) {
        long eol = read_line(w, c);
        if (eol < 0)
            return FAIL;
        char *endp;
        uint64_t size = strtoull(c->buf + c->start, &endp, 16);
        if (endp == c->buf + c->start) {
            fail(w, "bad chunk size line");
            return FAIL;
        }
        c->start = (size_t)eol + 2;
        if (size == 0)
            break;
        if (skip_bytes(w, c, size + 2) != OK) /* data and its CRLF */
            return FAIL;
    }
    for (;;) { /* trailer fields, up to the empty line */
        long eol = read_line(w, c);
        if (eol < 0)
            return FAIL;
        int empty = (size_t)eol == c->start;
        c->start = (size_t)eol + 2;
        if (empty)
            return OK;
    }
}

/* Read one whole answer. *keep says whether the connection may carry
 * another request. Returns the status code or FAIL. */
static int read_answer(struct worker *w, struct conn *c, int *keep) {
    long eol = read_line(w, c);
    if (eol < 0)
        return FAIL;
    int status = 0;
    if (sscanf(c->buf + c->start, "HTTP/1.%*d %d", &status) != 1) {
        fail(w, "bad status line");
        return FAIL;
    }
    int http10 = strncmp(c->buf + c->start, "HTTP/1.0", 8) == 0;
    c->start = (size_t)eol + 2;
    int64_t length = -1;
    int chunked = 0, close_after = http10;
    for (;;) {
        eol = read_line(w, c);
        if (eol < 0)
            return FAIL;
        char *line = c->buf + c->start;
        size_t len = (size_t)eol - c->start;
        c->start = (size_t)eol + 2;
        if (len == 0)
            break;
        line[len] = 0; /* overwrites the '\r', already consumed */
        if (!strncasecmp(line, "content-length:", 15))
            length = strtoll(line + 15, NULL, 10);
        else if (!strncasecmp(line, "transfer-encoding:", 18) && strcasestr(line, "chunked"))
            chunked = 1;
        else if (!strncasecmp(line, "connection:", 11))
            close_after = strcasestr(line, "close") ? 1
                          : strcasestr(line, "keep-alive") ? 0 : close_after;
    }
    /* RFC 9112 section 6.3: no body for 1xx, 204, 304. */
    int bodiless = status == 204 || status == 304 || (status >= 100 && status < 200);
    int r = OK;
    if (bodiless)
        ;
    else if (chunked)
        r = read_chunked(w, c);
    else if (length >= 0)
        r = skip_bytes(w, c, (uint64_t)length);
    else { /* until the server closes */
        close_after = 1;
        c->start = c->end = 0;
        int n;
        while ((n = conn_fill(w, c)) > 0)
            c->start = c->end = 0;
        r = n == 0 ? OK : FAIL;
    }
    *keep = !close_after && !c->closed;
    return r == OK ? status : FAIL;
}

static void record(struct worker *w, double started, double finished, int status) {
    if (finished < t_measure || finished > t_end)
        return;
    if (status < 200 || status > 299)
        w->non2xx++;
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 4096;
        w->lat_us = realloc(w->lat_us, w->caplat * sizeof *w->lat_us);
        if (!w->lat_us)
            abort();
    }
    double us = (finished - started) * 1e6;
    w->lat_us[w->nlat++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->fd = -1;
    while (now() < t_end) {
        double started = now();
        if (c->fd < 0 && conn_open(w, c) != OK) {
            conn_drop(c);
            usleep(10000); /* do not spin on a refusing peer */
            continue;
        }
        if (SSL_write(c->ssl, request, (int)request_len) != (int)request_len) {
            fail(w, "write: %s", ssl_error_text());
            conn_drop(c);
            continue;
        }
        int keep = 0;
        int status = read_answer(w, c, &keep);
        if (status < 0) {
            conn_drop(c);
            continue;
        }
        if (opt.new_connection || !keep)
            conn_drop(c);
        record(w, started, now(), status);
    }
    conn_drop(c);
    free(c);
    OPENSSL_free(verified_der);
    verified_der = NULL;
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(const char *msg, const char *arg) {
    fprintf(stderr, "tlsload: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "usage: tlsload [--proxy HOST:PORT] [--cafile FILE] [--connections N] "
                    "[--duration S] [--warmup S] [--new-connection] [--timeout S] "
                    "https://HOST:PORT/PATH\n");
    exit(2);
}

/* HOST:PORT, HOST may be [v6]. */
static int split_host_port(const char *s, char *host, size_t hcap, char *port, size_t pcap,
                           const char *def_port) {
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return FAIL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (!colon && close[1])
            return FAIL;
    } else {
        colon = strrchr(s, ':');
        hlen = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hlen == 0 || hlen >= hcap)
        return FAIL;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    const char *p = colon ? colon + 1 : def_port;
    if (!p || !*p || strlen(p) >= pcap || strspn(p, "0123456789") != strlen(p))
        return FAIL;
    strcpy(port, p);
    return OK;
}

static double parse_seconds(const char *flag, const char *v, double min) {
    char *end;
    double d = strtod(v ? v : "", &end);
    if (!v || end == v || *end || d < min)
        usage("bad value for", flag);
    return d;
}

static void parse_args(int argc, char **argv) {
    const char *url = NULL;
    opt.connections = 10;
    opt.duration = 5;
    opt.timeout = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--proxy")) {
            if (!v || split_host_port(v, opt.proxy_host, sizeof opt.proxy_host, opt.proxy_port,
                                      sizeof opt.proxy_port, NULL) != OK)
                usage("bad value for", "--proxy (HOST:PORT)");
            i++;
        } else if (!strcmp(a, "--cafile")) {
            if (!v)
                usage("missing value for", a);
            opt.cafile = v;
            i++;
        } else if (!strcmp(a, "--connections")) {
            char *end;
            long n = strtol(v ? v : "", &end, 10);
            if (!v || *end || n < 1 || n > 10000)
                usage("bad value for", "--connections (1..10000)");
            opt.connections = (int)n;
            i++;
        } else if (!strcmp(a, "--duration")) {
            opt.duration = parse_seconds(a, v, 0.01);
            i++;
        } else if (!strcmp(a, "--warmup")) {
            opt.warmup = parse_seconds(a, v, 0);
            i++;
        } else if (!strcmp(a, "--timeout")) {
            opt.timeout = parse_seconds(a, v, 0.01);
            i++;
        } else if (!strcmp(a, "--new-connection")) {
            opt.new_connection = 1;
        } else if (a[0] == '-') {
            usage("unknown option", a);
        } else if (!url) {
            url = a;
        } else {
            usage("more than one URL", a);
        }
    }
    if (!url)
        usage("missing the URL", NULL);
    if (strncmp(url, "https://", 8))
        usage("the URL must start with https://", url);
    char authority[300];
    const char *rest = url + 8, *slash = strchr(rest, '/');
    size_t alen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (alen >= sizeof authority)
        usage("bad URL", url);
    memcpy(authority, rest, alen);
    authority[alen] = 0;
    if (split_host_port(authority, opt.host, sizeof opt.host, opt.port, sizeof opt.port,
                        "443") != OK)
        usage("bad URL host or port", url);
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");
    unsigned char ip[16];
    opt.host_is_ip = inet_pton(AF_INET, opt.host, ip) == 1 || inet_pton(AF_INET6, opt.host, ip) == 1;
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static int setup(void) {
    const char *h = opt.proxy_host[0] ? opt.proxy_host : opt.host;
    const char *p = opt.proxy_host[0] ? opt.proxy_port : opt.port;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(h, p, &hints, &dest);
    if (rc) {
        fprintf(stderr, "tlsload: %s:%s: %s\n", h, p, gai_strerror(rc));
        return FAIL;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No client session cache: every new connection is a full handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    /* Many servers close without close_notify; as HTTP clients do, read
     * that as the end of the stream (a body cut short by it is still an
     * error: its Content-Length or chunk is incomplete). */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    if (opt.cafile) {
        if (SSL_CTX_load_verify_locations(ctx, opt.cafile, NULL) != 1) {
            fprintf(stderr, "tlsload: --cafile %s: %s\n", opt.cafile, ssl_error_text());
            return FAIL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_cert_verify_callback(ctx, verify_cached, NULL);
    }
    int v6 = strchr(opt.host, ':') != NULL;
    int def = !strcmp(opt.port, "443");
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n"
                                   "User-Agent: tlsload\r\nAccept: */*\r\n\r\n",
                                   opt.path, v6 ? "[" : "", opt.host, v6 ? "]" : "",
                                   def ? "" : ":", def ? "" : opt.port);
    if (request_len >= sizeof request) {
        fprintf(stderr, "tlsload: the URL is too long\n");
        return FAIL;
    }
    connect_len = (size_t)snprintf(connect_req, sizeof connect_req,
                                   "CONNECT %s%s%s:%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n\r\n",
                                   v6 ? "[" : "", opt.host, v6 ? "]" : "", opt.port,
                                   v6 ? "[" : "", opt.host, v6 ? "]" : "", opt.port);
    return OK;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (setup() != OK)
        return 1;
    struct worker *ws = calloc((size_t)opt.connections, sizeof *ws);
    if (!ws)
        abort();
    t_begin = now();
    t_measure = t_begin + opt.warmup;
    t_end = t_measure + opt.duration;
    int started = 0;
    for (; started < opt.connections; started++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int rc = pthread_create(&ws[started].thread, &attr, worker_main, &ws[started]);
        pthread_attr_destroy(&attr);
        if (rc) {
            fprintf(stderr, "tlsload: thread %d: %s\n", started, strerror(rc));
            break;
        }
    }
    size_t total = 0;
    long errors = 0, non2xx = 0, conns = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        total += ws[i].nlat;
        errors += ws[i].errors;
        non2xx += ws[i].non2xx;
        conns += ws[i].conns;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof *all);
    if (!all)
        abort();
    size_t k = 0;
    for (int i = 0; i < started; i++) {
        if (ws[i].nlat) /* lat_us is NULL when nothing completed */
            memcpy(all + k, ws[i].lat_us, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
        free(ws[i].lat_us);
    }
    qsort(all, total, sizeof *all, cmp_u32);
    printf("{\"requests\": %zu, \"rps\": %.1f, ", total, (double)total / opt.duration);
    if (total)
        printf("\"p50_ms\": %.3f, \"p99_ms\": %.3f, ", all[(total - 1) / 2] / 1000.0,
               all[(size_t)((double)(total - 1) * 0.99)] / 1000.0);
    else
        printf("\"p50_ms\": null, \"p99_ms\": null, ");
    printf("\"errors\": %ld, \"error\": ", errors);
    if (first_error[0])
        json_string(first_error);
    else
        printf("null");
    printf(", \"non2xx\": %ld, \"connections\": %ld, \"threads\": %d}\n", non2xx, conns,
           started);
    free(all);
    free(ws);
    freeaddrinfo(dest);
    SSL_CTX_free(ctx);
    return started ? 0 : 1;
}
