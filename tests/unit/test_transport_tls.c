/*
 * test_transport_tls — the TLS transport over a real loopback connection on
 * a real libuv loop: both ends are TLS transports wrapping TCP transports
 * (a client config trusting a throwaway CA, a server config minting from
 * it), so everything the engine and the seam do meets a real socket:
 * handshake and on_ready, data both ways through the batched sender, the
 * owner pausing while 4 MiB arrive (nothing lost, writes held back), a
 * close_notify shutdown seen as EOF, verification failures named on both
 * sides, and closes with writes pending or mid-handshake.
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sender.h"
#include "tls_ca.h"
#include "tls_engine.h"
#include "transport.h"
#include "transport_tls.h"
#include "unit.h"
#include "util.h"

static char *root, *ca_file, *ca2_file;
static struct tls_ca *ca, *ca2;
static uv_loop_t loop;

/* One end: its sockets, its TLS transport, and what it saw. */
struct end {
    struct tcp_transport tcp;
    struct transport *tls;
    struct sender snd;
    int ready, eof, read_err, closed, written, write_err, shut;
    int events_after_close;
    size_t got;
    int mismatch;
    char head[64];
};

static struct end cli, srv;

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)((i * 7u) ^ (i >> 11));
}

static void on_ready(struct transport *t, void *owner)
{
    struct end *e = owner;
    CHECK(t == e->tls);
    CHECK(!e->eof && !e->read_err && e->got == 0); /* nothing before on_ready */
    e->ready++;
}

static void on_read(struct transport *t, ssize_t nread, struct chunk *c, void *owner)
{
    struct end *e = owner;
    CHECK(t == e->tls);
    e->events_after_close += e->closed;
    if (nread < 0) {
        CHECK(c == NULL);
        if (nread == UV_EOF)
            e->eof++;
        else
            e->read_err++;
        return;
    }
    CHECK_INT(c->len, nread);
    for (ssize_t i = 0; i < nread; i++) {
        if (e->got + (size_t)i < sizeof e->head - 1)
            e->head[e->got + (size_t)i] = c->data[i];
        if ((unsigned char)c->data[i] != pattern_at(e->got + (size_t)i))
            e->mismatch = 1;
    }
    e->got += (size_t)nread;
    chunk_unref(c);
}

static void on_closed(struct transport *t, void *owner)
{
    struct end *e = owner;
    CHECK(t == e->tls);
    e->closed++;
}

static void on_written(struct sender *s, int status)
{
    struct end *e = CONTAINER_OF(s, struct end, snd);
    e->events_after_close += e->closed;
    if (status == 0)
        e->written++;
    else
        e->write_err++;
}

static void on_shutdown(struct transport *t, int status, void *arg)
{
    struct end *e = arg;
    CHECK(t == e->tls);
    CHECK_INT(status, 0);
    e->shut++;
}

static const struct transport_ops ops = {
    .on_ready = on_ready, .on_read = on_read, .on_closed = on_closed};

static struct tls_engine_config *ccfg, *scfg;

#define SPIN_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int spin_i = 0; spin_i < 5000 && !(cond); spin_i++) {                                 \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
            if (!(cond))                                                                           \
                usleep(1000);                                                                      \
        }                                                                                          \
    } while (0)

/* A loopback TCP connection, each end wrapped in TLS; the client trusts
 * CLIENT_CA_FILE and asks for HOST. */
static void setup(const char *client_ca_file, const char *host)
{
    memset(&cli, 0, sizeof cli);
    memset(&srv, 0, sizeof srv);
    uv_loop_init(&loop);
    char err[512] = "";
    ccfg = tls_engine_client_config(client_ca_file, false, err, sizeof err);
    scfg = tls_engine_server_config_ca(ca, err, sizeof err);
    CHECK(ccfg && scfg);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    CHECK_INT(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_INT(listen(lfd, 1), 0);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    /* Small kernel buffers, so a paused reader is felt by the writer. */
    int small = 32 * 1024;
    setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    CHECK_INT(connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
    int sfd = accept(lfd, NULL, NULL);
    close(lfd);
    setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    CHECK_INT(tcp_transport_init(&cli.tcp, &loop, &ops, &cli), 0);
    CHECK_INT(tcp_transport_init(&srv.tcp, &loop, &ops, &srv), 0);
    CHECK_INT(uv_tcp_open(tcp_transport_handle(&cli.tcp), cfd), 0);
    CHECK_INT(uv_tcp_open(tcp_transport_handle(&srv.tcp), sfd), 0);
    srv.tls = tls_transport_new(&srv.tcp.base, &loop, scfg, NULL, 0, &ops, &srv);
    cli.tls = tls_transport_new(&cli.tcp.base, &loop, ccfg, host, 443, &ops, &cli);
    sender_init(&cli.snd, cli.tls, on_written);
    sender_init(&srv.snd, srv.tls, on_written);
}

static void teardown(void)
{
    /* A closed TLS transport frees itself after on_closed. */
    if (!cli.closed)
        transport_close(cli.tls, 0);
    if (!srv.closed)
        transport_close(srv.tls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(cli.closed, 1);
    CHECK_INT(srv.closed, 1);
    CHECK_INT(cli.events_after_close + srv.events_after_close, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
    tls_engine_config_free(ccfg);
    tls_engine_config_free(scfg);
}

/* Queue N pattern bytes (from offset OFF) on E's sender and flush. */
static void send_pattern(struct end *e, size_t off, size_t n)
{
    static char buf[1 << 16];
    while (n > 0) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = (char)pattern_at(off + i);
        sender_copy(&e->snd, buf, k);
        off += k;
        n -= k;
    }
    CHECK_INT(sender_flush(&e->snd), 0);
}

static void test_handshake_and_data_both_ways(void)
{
    setup(ca_file, "peer.test");
    CHECK_INT(transport_read_start(cli.tls), 0);
    CHECK_INT(transport_read_start(srv.tls), 0);
    SPIN_UNTIL(cli.ready && srv.ready);
    CHECK_INT(cli.ready, 1);
    CHECK_INT(srv.ready, 1);
    CHECK_STR(tls_engine_sni(tls_transport_engine(srv.tls)), "peer.test");
    send_pattern(&cli, 0, 5);
    SPIN_UNTIL(srv.got == 5);
    CHECK_INT(srv.got, 5);
    CHECK(!srv.mismatch);
    send_pattern(&srv, 0, 300000);
    SPIN_UNTIL(cli.got == 300000);
    CHECK_INT(cli.got, 300000);
    CHECK(!cli.mismatch);
    struct sockaddr_storage ss;
    CHECK_INT(transport_peer(cli.tls, &ss), 0);
    CHECK(transport_error_name(cli.tls) == NULL);
    teardown();
}

/* The client pauses: the server's writes stay in flight (its owner sees
 * backpressure) and nothing is lost; after resuming, every byte arrives
 * in order and every write completes. */
static void test_paused_reader_holds_back_writer(void)
{
    setup(ca_file, "peer.test");
    CHECK_INT(transport_read_start(cli.tls), 0);
    CHECK_INT(transport_read_start(srv.tls), 0);
    SPIN_UNTIL(cli.ready && srv.ready);
    send_pattern(&srv, 0, 1 << 20);
    SPIN_UNTIL(cli.got > 0);
    transport_read_stop(cli.tls);
    size_t at_pause = cli.got;
    size_t total = 4u << 20;
    for (size_t off = 1 << 20; off < total; off += 1 << 20)
        send_pattern(&srv, off, 1 << 20);
    for (int i = 0; i < 200; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    CHECK(cli.got - at_pause < total / 2); /* paused: at most what was under way */
    CHECK(srv.snd.inflight > 0);           /* the writer is held back */
    CHECK_INT(transport_read_start(cli.tls), 0);
    SPIN_UNTIL(cli.got == total && srv.snd.inflight == 0);
    CHECK_INT(cli.got, total);
    CHECK(!cli.mismatch);
    CHECK_INT(srv.snd.inflight, 0);
    CHECK_INT(srv.write_err, 0);
    teardown();
}

/* shutdown sends close_notify then FIN: the peer reads everything, then a
 * clean EOF; it may still answer before closing. */
static void test_shutdown_is_close_notify_then_eof(void)
{
    setup(ca_file, "peer.test");
    CHECK_INT(transport_read_start(cli.tls), 0);
    CHECK_INT(transport_read_start(srv.tls), 0);
    SPIN_UNTIL(cli.ready && srv.ready);
    send_pattern(&cli, 0, 100000);
    CHECK_INT(transport_shutdown(cli.tls, on_shutdown, &cli), 0);
    SPIN_UNTIL(srv.eof && cli.shut);
    CHECK_INT(srv.got, 100000);
    CHECK_INT(srv.eof, 1);
    CHECK_INT(cli.shut, 1);
    CHECK(tls_engine_peer_closed(tls_transport_engine(srv.tls)));
    send_pattern(&srv, 0, 10);
    SPIN_UNTIL(cli.got == 10);
    CHECK_INT(cli.got, 10);
    teardown();
}

/* The client does not trust the server's CA: neither side becomes ready;
 * the client says tls_verify, the server tls_client. */
static void test_untrusted_certificate_named_on_both_sides(void)
{
    setup(ca2_file, "peer.test");
    SPIN_UNTIL(cli.read_err && srv.read_err);
    CHECK_INT(cli.ready + srv.ready, 0);
    CHECK_INT(cli.read_err, 1);
    CHECK_INT(srv.read_err, 1);
    CHECK_STR(transport_error_name(cli.tls), "tls_verify");
    CHECK_STR(transport_error_name(srv.tls), "tls_client");
    CHECK(transport_try_write(cli.tls, &(uv_buf_t){.base = "x", .len = 1}, 1) < 0);
    teardown();
}

/* The peer's TCP connection ends during the handshake. */
static void test_peer_gone_during_handshake(void)
{
    setup(ca_file, "peer.test");
    transport_close(srv.tls, 1); /* reset before answering the ClientHello */
    SPIN_UNTIL(cli.read_err && srv.closed);
    CHECK_INT(cli.read_err, 1);
    CHECK_INT(cli.ready, 0);
    CHECK_STR(transport_error_name(cli.tls), "tls_handshake");
    teardown();
}

/* Closing with writes still queued: each gets UV_ECANCELED (or completes)
 * before on_closed, and nothing comes after it. */
static void test_close_with_pending_writes(void)
{
    setup(ca_file, "peer.test");
    CHECK_INT(transport_read_start(cli.tls), 0);
    SPIN_UNTIL(cli.ready && srv.ready);
    /* The server does not read: the client's writes pile up. */
    for (int i = 0; i < 8; i++)
        send_pattern(&cli, (size_t)i << 20, 1 << 20);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    unsigned pending = cli.snd.writes;
    CHECK(pending > 0);
    transport_close(cli.tls, 0);
    SPIN_UNTIL(cli.closed);
    CHECK_INT(cli.closed, 1);
    CHECK_INT((unsigned)(cli.write_err + cli.written) >= pending, 1);
    CHECK(cli.write_err > 0);
    CHECK_INT(cli.snd.writes, 0);
    teardown();
}

static struct tls_ca *make_ca(const char *name, char **pem)
{
    char err[512] = "";
    char *dir = xasprintf("%s/%s", root, name);
    struct tls_ca *c = NULL;
    if (tls_ca_create(dir, err, sizeof err) != 0 || !(c = tls_ca_load(dir, 0, err, sizeof err))) {
        fprintf(stderr, "CA: %s\n", err);
        exit(1);
    }
    *pem = xasprintf("%s/%s", dir, TLS_CA_CERT_FILE);
    free(dir);
    return c;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    root = xstrdup("/tmp/test_transport_tls.XXXXXX");
    if (!mkdtemp(root))
        return 1;
    ca = make_ca("ca", &ca_file);
    ca2 = make_ca("ca2", &ca2_file);
    RUN(test_handshake_and_data_both_ways);
    RUN(test_paused_reader_holds_back_writer);
    RUN(test_shutdown_is_close_notify_then_eof);
    RUN(test_untrusted_certificate_named_on_both_sides);
    RUN(test_peer_gone_during_handshake);
    RUN(test_close_with_pending_writes);
    tls_ca_free(ca);
    tls_ca_free(ca2);
    char *cmd = xasprintf("rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    free(cmd);
    free(root);
    free(ca_file);
    free(ca2_file);
    chunk_trim();
    sender_trim();
    return unit_summary("transport_tls");
}
