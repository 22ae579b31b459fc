/*
 * test_sender — the write batcher against a real stream (a socket pair
 * driven by libuv): errors of a batch submitted while pieces are queued,
 * and the byte count.
 */
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sender.h"
#include "unit.h"

static uv_loop_t loop;
static struct tcp_transport tt;
static int peer_fd;

static void noop_read(struct transport *t, ssize_t nread, struct chunk *c, void *owner)
{
    (void)t, (void)nread, (void)owner;
    chunk_unref(c);
}
static void noop_closed(struct transport *t, void *owner)
{
    (void)t, (void)owner;
}
static const struct transport_ops noop_ops = {.on_read = noop_read, .on_closed = noop_closed};

/* A stream whose peer is open (PEER_OPEN) or already closed. */
static void open_stream(int peer_open)
{
    int fds[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
    uv_loop_init(&loop);
    tcp_transport_init(&tt, &loop, &noop_ops, NULL);
    uv_tcp_open(tcp_transport_handle(&tt), fds[0]);
    peer_fd = fds[1];
    if (!peer_open) {
        close(peer_fd);
        peer_fd = -1;
    }
}

static void close_stream(void)
{
    transport_close(&tt.base, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (peer_fd >= 0)
        close(peer_fd);
}

/* More than one batch of pieces (64 each) to a dead peer: the batch that
 * fills up is submitted while queueing, fails, and the next flush must say
 * so, even when nothing else is queued; nothing failed is counted. */
static void test_mid_batch_failure_is_reported(void)
{
    open_stream(0);
    struct sender s;
    sender_init(&s, &tt.base, NULL);
    for (int i = 0; i < 65; i++)
        sender_static(&s, "x", 1);
    sender_discard(&s);
    CHECK(sender_flush(&s) != 0);
    CHECK_INT(s.total, 0);
    close_stream();
}

/* A full batch written at once: every byte arrives and is counted. */
static void test_full_batch_written(void)
{
    open_stream(1);
    struct sender s;
    sender_init(&s, &tt.base, NULL);
    for (int i = 0; i < 64; i++)
        sender_copy(&s, i % 2 ? "ab" : "c", i % 2 ? 2 : 1);
    CHECK_INT(sender_flush(&s), 0);
    CHECK_INT(s.total, 96);
    char buf[256];
    ssize_t n = read(peer_fd, buf, sizeof buf);
    CHECK_INT(n, 96);
    close_stream();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(test_mid_batch_failure_is_reported);
    RUN(test_full_batch_written);
    sender_trim();
    return unit_summary("sender");
}
