/*
 * test_transport — the plain TCP transport over a real loopback connection
 * on a real libuv loop. The far end is a plain socket the test reads and
 * writes itself, so what the peer sees (bytes, EOF, reset) is checked with
 * read(2), not with the code under test.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sender.h"
#include "transport.h"
#include "unit.h"

enum ev { EV_READ = 1, EV_EOF, EV_READ_ERR, EV_WRITTEN, EV_WRITE_ERR, EV_SHUT, EV_SHUT_ERR,
          EV_CLOSED };

static uv_loop_t loop;
static struct tcp_transport tt;
static struct sender snd;
static int peer = -1;

static enum ev events[64];
static int nevents;
static char got[4096];
static size_t got_len;
static uint32_t refs_at_read;
static int last_status;

static void note(enum ev e)
{
    if (nevents < 64)
        events[nevents++] = e;
}

static int count(enum ev e)
{
    int n = 0;
    for (int i = 0; i < nevents; i++)
        n += events[i] == e;
    return n;
}

static void on_read(struct transport *t, ssize_t nread, struct chunk *c, void *owner)
{
    CHECK(t == &tt.base);
    CHECK(owner == &tt);
    if (nread < 0) {
        CHECK(c == NULL);
        last_status = (int)nread;
        note(nread == UV_EOF ? EV_EOF : EV_READ_ERR);
        return;
    }
    CHECK_INT(c->len, nread);
    refs_at_read = c->refs;
    if (got_len + (size_t)nread <= sizeof got) {
        memcpy(got + got_len, c->data, (size_t)nread);
        got_len += (size_t)nread;
    }
    note(EV_READ);
    chunk_unref(c);
}

static void on_closed(struct transport *t, void *owner)
{
    CHECK(t == &tt.base);
    CHECK(owner == &tt);
    note(EV_CLOSED);
}

static void on_written(struct sender *s, int status)
{
    CHECK(s == &snd);
    note(status == 0 ? EV_WRITTEN : EV_WRITE_ERR);
}

static void on_shutdown(struct transport *t, int status, void *arg)
{
    CHECK(t == &tt.base);
    CHECK(arg == &snd);
    note(status == 0 ? EV_SHUT : EV_SHUT_ERR);
}

static const struct transport_ops ops = {.on_read = on_read, .on_closed = on_closed};

/* A loopback connection: our end in the transport, the other in PEER
 * (non-blocking). Small buffers make a 2 MiB batch outgrow them. */
static void setup(void)
{
    nevents = 0;
    got_len = 0;
    uv_loop_init(&loop);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int small = 32 * 1024;
    CHECK_INT(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_INT(listen(lfd, 1), 0);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    peer = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    CHECK_INT(connect(peer, (struct sockaddr *)&sa, sizeof sa), 0);
    int fd = accept(lfd, NULL, NULL);
    close(lfd);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    fcntl(peer, F_SETFL, O_NONBLOCK);
    CHECK_INT(tcp_transport_init(&tt, &loop, &ops, &tt), 0);
    CHECK_INT(uv_tcp_open(tcp_transport_handle(&tt), fd), 0);
    sender_init(&snd, &tt.base, on_written);
}

static void teardown(void)
{
    transport_close(&tt.base, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    if (peer >= 0)
        close(peer);
    peer = -1;
}

/* Run the loop until COND holds or about two seconds passed. */
#define SPIN_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int spin_i = 0; spin_i < 2000 && !(cond); spin_i++) {                                 \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
            if (!(cond))                                                                           \
                usleep(1000);                                                                      \
        }                                                                                          \
    } while (0)

/* One read(2) on the peer: bytes, 0 at EOF, or -errno. */
static ssize_t peer_read(char *buf, size_t n)
{
    for (int i = 0; i < 2000; i++) {
        ssize_t r = read(peer, buf, n);
        if (r >= 0)
            return r;
        if (errno != EAGAIN)
            return -errno;
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    return -EAGAIN;
}

static void test_read_hands_over_a_chunk(void)
{
    setup();
    CHECK_INT(transport_read_start(&tt.base), 0);
    CHECK_INT(write(peer, "hello", 5), 5);
    SPIN_UNTIL(got_len >= 5);
    CHECK_INT(got_len, 5);
    CHECK(memcmp(got, "hello", 5) == 0);
    CHECK_INT(refs_at_read, 1); /* the owner's reference, nobody else's */
    shutdown(peer, SHUT_WR);
    SPIN_UNTIL(count(EV_EOF) == 1);
    CHECK_INT(count(EV_EOF), 1);
    CHECK_INT(count(EV_READ_ERR), 0);
    teardown();
}

static void test_stop_and_start_reading(void)
{
    setup();
    CHECK_INT(transport_read_start(&tt.base), 0);
    transport_read_stop(&tt.base);
    CHECK_INT(write(peer, "abc", 3), 3);
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    CHECK_INT(count(EV_READ), 0);
    CHECK_INT(transport_read_start(&tt.base), 0);
    SPIN_UNTIL(got_len >= 3);
    CHECK_INT(got_len, 3);
    CHECK(memcmp(got, "abc", 3) == 0);
    teardown();
}

#define PIECES 32

/* 32 x (a 4-byte index + a 64 KiB chunk reference) in one batch: far more
 * than the socket buffers, so part goes out at once and the rest through
 * the queued write. The peer must get every byte in order. */
static void test_batch_larger_than_socket_buffer(void)
{
    setup();
    struct chunk *c = chunk_new();
    c->len = CHUNK_SIZE;
    for (size_t i = 0; i < CHUNK_SIZE; i++)
        c->data[i] = (char)(i * 7 + 3);
    for (uint32_t i = 0; i < PIECES; i++) {
        sender_copy(&snd, &i, sizeof i);
        sender_ref(&snd, c, c->data, CHUNK_SIZE);
    }
    size_t want = PIECES * (sizeof(uint32_t) + CHUNK_SIZE);
    CHECK_INT(sender_queued(&snd), want);
    CHECK_INT(sender_flush(&snd), 0);
    CHECK_INT(snd.total, want);
    /* Backpressure: what the socket did not take is in flight. */
    CHECK(snd.inflight > 0);
    CHECK(snd.inflight < want);
    CHECK_INT(snd.writes, 1);
    CHECK_INT(c->refs, 1 + PIECES); /* the batch holds the chunk */
    CHECK_INT(count(EV_WRITTEN), 0);

    char *buf = malloc(want);
    size_t have = 0;
    while (have < want) {
        ssize_t r = peer_read(buf + have, want - have);
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    CHECK_INT(have, want);
    SPIN_UNTIL(count(EV_WRITTEN) == 1);
    CHECK_INT(count(EV_WRITTEN), 1);
    CHECK_INT(snd.inflight, 0);
    CHECK_INT(snd.writes, 0);
    CHECK_INT(c->refs, 1);
    int in_order = have == want;
    for (uint32_t i = 0; in_order && i < PIECES; i++) {
        const char *p = buf + i * (sizeof(uint32_t) + CHUNK_SIZE);
        uint32_t idx;
        memcpy(&idx, p, sizeof idx);
        in_order = idx == i && memcmp(p + sizeof idx, c->data, CHUNK_SIZE) == 0;
    }
    CHECK(in_order);
    free(buf);
    chunk_unref(c);
    teardown();
}

/* Shutdown goes after the queued bytes; the peer reads them, then EOF, and
 * can still talk back (a half-close). */
static void test_shutdown_is_eof_after_data(void)
{
    setup();
    CHECK_INT(transport_read_start(&tt.base), 0);
    sender_static(&snd, "last words", 10);
    CHECK_INT(sender_flush(&snd), 0);
    CHECK_INT(transport_shutdown(&tt.base, on_shutdown, &snd), 0);
    CHECK(transport_shutdown(&tt.base, on_shutdown, &snd) != 0); /* one per transport */
    SPIN_UNTIL(count(EV_SHUT) == 1);
    CHECK_INT(count(EV_SHUT), 1);
    char buf[64];
    ssize_t n = peer_read(buf, sizeof buf);
    CHECK_INT(n, 10);
    CHECK(n == 10 && memcmp(buf, "last words", 10) == 0);
    CHECK_INT(peer_read(buf, sizeof buf), 0);
    CHECK_INT(write(peer, "reply", 5), 5);
    SPIN_UNTIL(got_len >= 5);
    CHECK_INT(got_len, 5);
    teardown();
}

/* A close with a write and a shutdown pending: both callbacks run
 * (cancelled), on_closed runs once and last, the peer sees EOF. */
static void test_close_cancels_then_on_closed_last(void)
{
    setup();
    struct chunk *c = chunk_new();
    c->len = CHUNK_SIZE;
    memset(c->data, 'x', CHUNK_SIZE);
    for (int i = 0; i < 40; i++)
        sender_ref(&snd, c, c->data, CHUNK_SIZE);
    CHECK_INT(sender_flush(&snd), 0);
    CHECK(snd.inflight > 0);
    CHECK_INT(transport_shutdown(&tt.base, on_shutdown, &snd), 0);
    transport_close(&tt.base, 0);
    transport_close(&tt.base, 0); /* idempotent */
    CHECK(transport_read_start(&tt.base) != 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(count(EV_CLOSED), 1);
    CHECK(nevents > 0 && events[nevents - 1] == EV_CLOSED);
    CHECK_INT(count(EV_WRITE_ERR), 1);
    CHECK_INT(count(EV_SHUT_ERR), 1);
    CHECK_INT(snd.inflight, 0);
    CHECK_INT(c->refs, 1);
    chunk_unref(c);
    /* The peer gets what was sent before the close, then EOF. */
    static char buf[CHUNK_SIZE];
    ssize_t r;
    while ((r = peer_read(buf, sizeof buf)) > 0)
        ;
    CHECK_INT(r, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
    close(peer);
    peer = -1;
}

static void test_close_with_reset(void)
{
    setup();
    transport_close(&tt.base, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(count(EV_CLOSED), 1);
    char buf[16];
    CHECK_INT(peer_read(buf, sizeof buf), -ECONNRESET);
    CHECK_INT(uv_loop_close(&loop), 0);
    close(peer);
    peer = -1;
}

/* The peer resets: the owner gets one read error and no chunk. */
static void test_peer_reset_is_a_read_error(void)
{
    setup();
    CHECK_INT(transport_read_start(&tt.base), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(peer);
    peer = -1;
    SPIN_UNTIL(count(EV_READ_ERR) + count(EV_EOF) > 0);
    CHECK_INT(count(EV_READ_ERR), 1);
    CHECK_INT(last_status, UV_ECONNRESET);
    CHECK(transport_error_name(&tt.base) == NULL); /* TCP has no error kinds of its own */
    teardown();
}

static void test_peer_address(void)
{
    setup();
    struct sockaddr_storage ss;
    CHECK_INT(transport_peer(&tt.base, &ss), 0);
    CHECK_INT(ss.ss_family, AF_INET);
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    getsockname(peer, (struct sockaddr *)&local, &len);
    CHECK_INT(((struct sockaddr_in *)&ss)->sin_port, local.sin_port);
    teardown();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(test_read_hands_over_a_chunk);
    RUN(test_stop_and_start_reading);
    RUN(test_batch_larger_than_socket_buffer);
    RUN(test_shutdown_is_eof_after_data);
    RUN(test_close_cancels_then_on_closed_last);
    RUN(test_close_with_reset);
    RUN(test_peer_reset_is_a_read_error);
    RUN(test_peer_address);
    sender_trim();
    chunk_trim();
    return unit_summary("transport");
}
