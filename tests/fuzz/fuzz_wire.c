/*
 * libFuzzer target for the wire path as the running proxy has it: the
 * request glue and checks of conn.c, routing, the rule decision, the
 * response glue of relay.c (status line, framing, 1xx, 101, the rewritten
 * head) and tunnels. That glue needs sockets, so the harness starts the real
 * server (server_run, one worker, forward-proxy mode, a rule set that
 * delays, aborts, truncates, rewrites, throttles and resets) on a loopback
 * port in a thread, and a fake origin in another thread that answers every
 * connection with bytes taken from the input.
 *
 * Input:  byte 0    flags: bit 0 half-closes the client after sending,
 *                   bit 1 makes the origin close without reading the request
 *         byte 1..2 where the request is split into three writes
 *         byte 3    where the origin's answer is split into two writes
 *         then the request bytes, "\n~~~\n", the origin's answer bytes
 *         (without the separator the origin answers a plain 200).
 * "@UP@" in the request becomes the origin's "127.0.0.1:PORT", so seeds can
 * aim absolute-form requests and CONNECT at it. A crash or sanitizer report
 * in the proxy's threads stops the fuzzer like one in the harness.
 *
 *   make fuzz   (or: make build/fuzz/fuzz_wire && build/fuzz/fuzz_wire -max_len=4096)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "options.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char rules_text[] =
    "rule d path /d* => delay 5ms\n"
    "rule a path /a* => abort 503 body \"x\"\n"
    "rule t path /t* => truncate 3\n"
    "rule s status 2xx path /s* => set-status 418 set-header X-A \"b\" del-header Server\n"
    "rule r path /r* => reset\n"
    "rule w path /w* => throttle 64KB/s\n"
    "rule x path /x* => delay 2ms reset\n"
    "rule h path /h* => set-status 204 reason \"none\"\n"
    "rule rs status 5xx => set-status 200 reason \"fine\"\n";

static const char default_answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static int proxy_port, origin_port, origin_fd;
static struct run_options opts;

/* What the origin answers; replaced by each input. */
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static char *answer;
static size_t answer_len, answer_cut;
static int answer_no_read;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &sl) != 0)
        abort();
    *port = ntohs(sin.sin_port);
    return fd;
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        abort();
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---------- the fake origin ---------- */

#define MAX_UP 64
struct up_conn {
    int fd;
    int answered;
    int64_t since;
};

static void origin_answer(struct up_conn *u)
{
    pthread_mutex_lock(&answer_lock);
    size_t len = answer_len, cut = answer_cut;
    char *copy = malloc(len + 1);
    memcpy(copy, answer, len);
    pthread_mutex_unlock(&answer_lock);
    if (cut > 0 && send(u->fd, copy, cut, MSG_NOSIGNAL) > 0)
        usleep(300); /* let the proxy read the first part alone */
    if (len > cut)
        (void)send(u->fd, copy + cut, len - cut, MSG_NOSIGNAL);
    free(copy);
    shutdown(u->fd, SHUT_WR);
    u->answered = 1;
}

static void *origin_main(void *arg)
{
    (void)arg;
    struct up_conn ups[MAX_UP];
    int n = 0;
    char buf[4096];
    for (;;) {
        struct pollfd pf[MAX_UP + 1];
        pf[0] = (struct pollfd){.fd = origin_fd, .events = POLLIN};
        for (int i = 0; i < n; i++)
            pf[i + 1] = (struct pollfd){.fd = ups[i].fd, .events = POLLIN};
        poll(pf, (nfds_t)n + 1, 50);
        int64_t now = now_ms();
        for (int i = n - 1; i >= 0; i--) {
            int gone = 0;
            if (pf[i + 1].revents) {
                ssize_t r = recv(ups[i].fd, buf, sizeof buf, 0);
                if (r <= 0)
                    gone = 1;
                else if (!ups[i].answered)
                    origin_answer(&ups[i]);
            }
            if (gone || now - ups[i].since > 3000) {
                close(ups[i].fd);
                ups[i] = ups[--n];
            }
        }
        if ((pf[0].revents & POLLIN) && n < MAX_UP) {
            int fd = accept(origin_fd, NULL, NULL);
            if (fd >= 0) {
                ups[n] = (struct up_conn){fd, 0, now};
                pthread_mutex_lock(&answer_lock);
                int no_read = answer_no_read;
                pthread_mutex_unlock(&answer_lock);
                if (no_read)
                    origin_answer(&ups[n]);
                n++;
            }
        }
    }
    return NULL;
}

/* ---------- the proxy ---------- */

static void *proxy_main(void *arg)
{
    (void)arg;
    int rc = server_run(&opts);
    fprintf(stderr, "fuzz_wire: the proxy stopped (%d)\n", rc);
    abort(); /* it must run until the fuzzer ends */
}

static char dir[] = "/tmp/fuzz_wire.XXXXXX";
static char rules_path[64], db_path[64];

/* The proxy's files go with the process (the proxy is not stopped: its
 * thread dies with it). */
static void remove_files(void)
{
    char p[96];
    const char *names[] = {"rules", "audit.db", "audit.db-wal", "audit.db-shm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void start(void)
{
    if (!mkdtemp(dir))
        abort();
    atexit(remove_files);
    static char listen_arg[64], ports_arg[32];
    snprintf(rules_path, sizeof rules_path, "%s/rules", dir);
    snprintf(db_path, sizeof db_path, "%s/audit.db", dir);
    FILE *f = fopen(rules_path, "w");
    if (!f || fputs(rules_text, f) < 0 || fclose(f) != 0)
        abort();
    origin_fd = listen_loopback(&origin_port);
    int probe = listen_loopback(&proxy_port);
    close(probe); /* the proxy binds it next (a tiny race on a loaded machine) */
    snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", proxy_port);
    snprintf(ports_arg, sizeof ports_arg, "%d", origin_port);
    char *argv[] = {"--listen", listen_arg, "--db", db_path, "--rules", rules_path,
                    "--workers", "1", "--fault-headers", "--connect-ports", ports_arg,
                    "--header-timeout", "300ms", "--response-timeout", "300ms",
                    "--connect-timeout", "300ms", "--idle-timeout", "1s", "--seed", "1",
                    "--log-level", "error"};
    char err[256];
    options_defaults(&opts);
    if (options_parse(&opts, (int)(sizeof argv / sizeof argv[0]), argv, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_wire: %s\n", err);
        abort();
    }
    log_set_level(LOG_ERROR);
    pthread_t t;
    if (pthread_create(&t, NULL, origin_main, NULL) != 0 ||
        pthread_create(&t, NULL, proxy_main, NULL) != 0)
        abort();
    for (int i = 0; i < 200; i++) {
        int fd = connect_loopback(proxy_port);
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(10000);
    }
    fprintf(stderr, "fuzz_wire: the proxy did not start listening\n");
    abort();
}

/* ---------- one input ---------- */

/* The request with every "@UP@" replaced by the origin's address. */
static char *expand(const uint8_t *p, size_t len, size_t *out_len)
{
    char up[32];
    int ul = snprintf(up, sizeof up, "127.0.0.1:%d", origin_port);
    char *out = malloc(len * (size_t)ul / 4 + len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (i + 4 <= len && memcmp(p + i, "@UP@", 4) == 0) {
            memcpy(out + o, up, (size_t)ul);
            o += (size_t)ul;
            i += 4;
        } else {
            out[o++] = (char)p[i++];
        }
    }
    *out_len = o;
    return out;
}

/* Read what the proxy answers until it closes, or goes quiet (it keeps an
 * open connection after a complete answer). */
static void drain(int fd, int quiet_ms)
{
    char buf[8192];
    int64_t end = now_ms() + 3000;
    while (now_ms() < end) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, quiet_ms) <= 0)
            return;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int started;
    if (!started) {
        start();
        started = 1;
    }
    if (size < 4)
        return 0;
    int flags = data[0];
    const uint8_t *body = data + 4;
    size_t len = size - 4;
    const uint8_t *sep = memmem(body, len, "\n~~~\n", 5);
    size_t req_len = sep ? (size_t)(sep - body) : len;

    pthread_mutex_lock(&answer_lock);
    free(answer);
    if (sep) {
        answer_len = len - req_len - 5;
        answer = malloc(answer_len + 1);
        memcpy(answer, sep + 5, answer_len);
    } else {
        answer_len = sizeof default_answer - 1;
        answer = strdup(default_answer);
    }
    answer_cut = answer_len ? data[3] % (answer_len + 1) : 0;
    answer_no_read = (flags & 2) != 0;
    pthread_mutex_unlock(&answer_lock);

    size_t rl;
    char *req = expand(body, req_len, &rl);
    size_t cut1 = data[1] % (rl + 1), cut2 = data[2] % (rl + 1);
    if (cut2 < cut1) {
        size_t t = cut1;
        cut1 = cut2;
        cut2 = t;
    }
    int fd = connect_loopback(proxy_port);
    if (fd < 0)
        abort(); /* the proxy is gone */
    size_t cuts[3] = {cut1, cut2, rl}, from = 0;
    for (int i = 0; i < 3; i++) {
        if (cuts[i] > from) {
            if (send(fd, req + from, cuts[i] - from, MSG_NOSIGNAL) < 0)
                break;
            usleep(200); /* a separate read for each piece, most of the time */
        }
        from = cuts[i];
    }
    if (flags & 1)
        shutdown(fd, SHUT_WR);
    drain(fd, (flags & 1) ? 1000 : 40);
    close(fd);
    free(req);
    return 0;
}
