/* Unit tests for tls_engine: a client and a server engine pump bytes into
 * each other in memory, with a throwaway CA made by tls_ca in a temporary
 * directory: verification (success, wrong CA, wrong name, insecure), SNI and
 * minted SANs, ALPN, session resumption, close_notify versus abrupt EOF,
 * renegotiation refused, 16 MiB each way in odd pieces, and a client that
 * refuses the server's certificate. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls_ca.h"
#include "tls_engine.h"
#include "unit.h"
#include "util.h"

/* --- fixture: two CAs in a temporary directory --- */

static char *root;
static char *ca_file, *ca2_file;
static struct tls_ca *ca, *ca2;

static struct tls_ca *make_ca(const char *name, char **pem)
{
    char err[512] = "";
    char *dir = xasprintf("%s/%s", root, name);
    if (tls_ca_create(dir, err, sizeof err) != 0) {
        fprintf(stderr, "tls_ca_create: %s\n", err);
        exit(1);
    }
    struct tls_ca *c = tls_ca_load(dir, 0, err, sizeof err);
    if (!c) {
        fprintf(stderr, "tls_ca_load: %s\n", err);
        exit(1);
    }
    *pem = xasprintf("%s/%s", dir, TLS_CA_CERT_FILE);
    free(dir);
    return c;
}

static void fixture_up(void)
{
    root = xstrdup("/tmp/test_tls_engine.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        exit(1);
    }
    ca = make_ca("ca", &ca_file);
    ca2 = make_ca("ca2", &ca2_file);
}

static void fixture_down(void)
{
    tls_ca_free(ca);
    tls_ca_free(ca2);
    char *cmd = xasprintf("rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    free(cmd);
    free(root);
    free(ca_file);
    free(ca2_file);
}

/* --- pumping --- */

/* One endpoint and what it received. Plaintext is checked against the
 * pattern byte at its offset (for big transfers) and the first bytes kept. */
struct side {
    struct tls_engine *t;
    char head[256];
    size_t got;
    bool eof, error, mismatch;
};

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)((i * 31u) ^ (i >> 9));
}

static void drain(struct side *s)
{
    char buf[3001]; /* odd on purpose: records do not line up with reads */
    for (;;) {
        long n = tls_engine_read(s->t, buf, sizeof buf);
        if (n == TLS_ENGINE_EOF)
            s->eof = true;
        if (n == TLS_ENGINE_ERROR)
            s->error = true;
        if (n <= 0)
            return;
        for (long i = 0; i < n; i++) {
            if (s->got + (size_t)i < sizeof s->head - 1)
                s->head[s->got + (size_t)i] = buf[i];
            if ((unsigned char)buf[i] != pattern_at(s->got + (size_t)i))
                s->mismatch = true;
        }
        s->got += (size_t)n;
    }
}

/* Move ciphertext one way; returns the bytes moved. */
static size_t move(struct side *from, struct side *to)
{
    char buf[7777];
    size_t total = 0, n;
    while ((n = tls_engine_take(from->t, buf, sizeof buf)) > 0) {
        tls_engine_feed(to->t, buf, n);
        total += n;
    }
    return total;
}

/* Pump both ways until nothing moves, reading what arrives. */
static void pump(struct side *a, struct side *b)
{
    for (int round = 0; round < 100; round++) {
        size_t moved = move(a, b) + move(b, a);
        drain(a);
        drain(b);
        if (moved == 0 && tls_engine_pending(a->t) == 0 && tls_engine_pending(b->t) == 0)
            return;
    }
}

struct pair {
    struct tls_engine_config *ccfg, *scfg;
    struct side c, s;
};

static void pair_start(struct pair *p, struct tls_engine_config *ccfg,
                       struct tls_engine_config *scfg, const char *host, const char *fallback)
{
    memset(p, 0, sizeof *p);
    p->ccfg = ccfg;
    p->scfg = scfg;
    p->c.t = tls_engine_new(ccfg, host, 443);
    p->s.t = tls_engine_new(scfg, fallback, 0);
    pump(&p->c, &p->s);
}

static void pair_end(struct pair *p)
{
    tls_engine_free(p->c.t);
    tls_engine_free(p->s.t);
}

static struct tls_engine_config *client_cfg(const char *file, bool insecure)
{
    char err[512] = "";
    struct tls_engine_config *cfg = tls_engine_client_config(file, insecure, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "client config: %s\n", err);
        exit(1);
    }
    return cfg;
}

static struct tls_engine_config *server_cfg(struct tls_ca *c)
{
    char err[512] = "";
    struct tls_engine_config *cfg = tls_engine_server_config_ca(c, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "server config: %s\n", err);
        exit(1);
    }
    return cfg;
}

/* The SAN of the certificate the client received: "DNS:x" or "IP:x". */
static void peer_san(struct tls_engine *t, char *out, size_t len)
{
    out[0] = '\0';
    X509 *x = SSL_get1_peer_certificate(tls_engine_ssl(t));
    if (!x)
        return;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (names && sk_GENERAL_NAME_num(names) == 1) {
        int type;
        ASN1_STRING *v = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, 0), &type);
        if (type == GEN_DNS) {
            snprintf(out, len, "DNS:%.*s", ASN1_STRING_length(v),
                     (const char *)ASN1_STRING_get0_data(v));
        } else if (type == GEN_IPADD) {
            char buf[INET6_ADDRSTRLEN] = "?";
            inet_ntop(ASN1_STRING_length(v) == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(v),
                      buf, sizeof buf);
            snprintf(out, len, "IP:%s", buf);
        }
    }
    GENERAL_NAMES_free(names);
    X509_free(x);
}

static void alpn_of(struct tls_engine *t, char *out, size_t len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(tls_engine_ssl(t), &p, &n);
    snprintf(out, len, "%.*s", (int)n, p ? (const char *)p : "");
}

/* --- tests --- */

static void test_handshake_verified_sni_alpn(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", "fallback.test");
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_OPEN);
    CHECK_INT(SSL_get_verify_result(tls_engine_ssl(p.c.t)), X509_V_OK);
    CHECK_STR(tls_engine_sni(p.s.t), "api.example.test");
    char buf[128];
    peer_san(p.c.t, buf, sizeof buf);
    CHECK_STR(buf, "DNS:api.example.test");
    alpn_of(p.c.t, buf, sizeof buf);
    CHECK_STR(buf, "http/1.1");
    alpn_of(p.s.t, buf, sizeof buf);
    CHECK_STR(buf, "http/1.1");
    CHECK(SSL_version(tls_engine_ssl(p.c.t)) >= TLS1_2_VERSION);
    /* The minted leaf comes with the CA certificate after it. */
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(tls_engine_ssl(p.c.t));
    CHECK_INT(sk_X509_num(sent), 2);
    if (sk_X509_num(sent) == 2)
        CHECK_INT(X509_cmp(sk_X509_value(sent, 1), tls_ca_cert(ca)), 0);
    /* Data both ways. */
    char msg[] = "\x00\x1f\x3e\x5d"; /* pattern_at(0..3) */
    for (size_t i = 0; i < 4; i++)
        msg[i] = (char)pattern_at(i);
    CHECK_INT(tls_engine_write(p.c.t, msg, 4), 4);
    pump(&p.c, &p.s);
    CHECK_INT(p.s.got, 4);
    CHECK(!p.s.mismatch);
    CHECK_INT(tls_engine_write(p.s.t, msg, 4), 4);
    pump(&p.c, &p.s);
    CHECK_INT(p.c.got, 4);
    CHECK(!p.c.mismatch);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* The client trusts another CA: tls_verify on the client; the client's
 * unknown_ca alert makes the server's error tls_client. */
static void test_wrong_ca_verify_and_client_reject(void)
{
    struct tls_engine_config *cc = client_cfg(ca2_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.c.t)), "tls_verify");
    CHECK(strlen(tls_engine_reason(p.c.t)) > 0);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.s.t)), "tls_client");
    CHECK(strstr(tls_engine_reason(p.s.t), "unknown CA") != NULL);
    CHECK_INT(tls_engine_read(p.c.t, (char[8]){0}, 8), TLS_ENGINE_ERROR);
    CHECK_INT(tls_engine_write(p.c.t, "x", 1), 0);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* The system store does not know our CA either. */
static void test_system_store_rejects_private_ca(void)
{
    struct tls_engine_config *cc = client_cfg(NULL, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.c.t)), "tls_verify");
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* Write a leaf for NAME and the process leaf key to files, return a server
 * config serving them. */
static struct tls_engine_config *files_cfg(const char *name)
{
    char err[512] = "";
    X509 *leaf = tls_ca_leaf(ca, name, err, sizeof err);
    CHECK(leaf != NULL);
    char *cert = xasprintf("%s/leaf-%s.pem", root, name);
    char *key = xasprintf("%s/leaf-%s-key.pem", root, name);
    FILE *f = fopen(cert, "w");
    PEM_write_X509(f, leaf);
    fclose(f);
    f = fopen(key, "w");
    PEM_write_PrivateKey(f, tls_ca_leaf_key(ca), NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(leaf);
    struct tls_engine_config *cfg = tls_engine_server_config_files(cert, key, err, sizeof err);
    if (!cfg)
        fprintf(stderr, "  %s\n", err);
    CHECK(cfg != NULL);
    free(cert);
    free(key);
    return cfg;
}

static void test_hostname_mismatch(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = files_cfg("other.test");
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.c.t)), "tls_verify");
    CHECK(strstr(tls_engine_reason(p.c.t), "mismatch") != NULL);
    pair_end(&p);
    /* The same certificate files serve the right name fine. */
    pair_start(&p, cc, sc, "other.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_OPEN);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

static void test_insecure_accepts_anything(void)
{
    struct tls_engine_config *cc = client_cfg(NULL, true), *sc = files_cfg("other.test");
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_OPEN);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* An IP literal: no SNI is sent, the server mints for its fallback name
 * with an IP SAN, and the client checks the address. */
static void test_ip_literal_fallback_san(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "127.0.0.1", "127.0.0.1");
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK(tls_engine_sni(p.s.t) == NULL);
    char buf[128];
    peer_san(p.c.t, buf, sizeof buf);
    CHECK_STR(buf, "IP:127.0.0.1");
    pair_end(&p);
    pair_start(&p, cc, sc, "[::1]", "::1");
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    peer_san(p.c.t, buf, sizeof buf);
    CHECK_STR(buf, "IP:::1");
    pair_end(&p);
    /* A certificate for another address fails verification. */
    pair_start(&p, cc, sc, "127.0.0.1", "127.0.0.2");
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.c.t)), "tls_verify");
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* A client offering only h2 gets no ALPN answer and goes on. */
static void test_alpn_h2_only_client_continues(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    static const unsigned char h2[] = "\x02h2";
    SSL_CTX_set_alpn_protos(tls_engine_config_ctx(cc), h2, sizeof h2 - 1);
    struct pair p;
    pair_start(&p, cc, sc, "h2.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_OPEN);
    char buf[32];
    alpn_of(p.s.t, buf, sizeof buf);
    CHECK_STR(buf, "");
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

static void test_session_resumption(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK(!tls_engine_resumed(p.c.t));
    tls_engine_close(p.c.t);
    pump(&p.c, &p.s);
    pair_end(&p);
    CHECK_INT(tls_engine_config_sessions(cc), 1);

    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK(tls_engine_resumed(p.c.t));
    CHECK(tls_engine_resumed(p.s.t));
    pair_end(&p);

    /* Another host:port has no session yet. */
    pair_start(&p, cc, sc, "other.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    CHECK(!tls_engine_resumed(p.c.t));
    pump(&p.c, &p.s);
    pair_end(&p);
    CHECK_INT(tls_engine_config_sessions(cc), 2);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

static void test_close_notify_both_ways(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_close(p.c.t), TLS_ENGINE_CLOSING);
    CHECK_INT(tls_engine_write(p.c.t, "x", 1), 0);
    pump(&p.c, &p.s);
    CHECK(p.s.eof);
    CHECK(tls_engine_peer_closed(p.s.t));
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_CLOSING);
    /* The server may still answer before closing its side. */
    char m = (char)pattern_at(0);
    CHECK_INT(tls_engine_write(p.s.t, &m, 1), 1);
    CHECK_INT(tls_engine_close(p.s.t), TLS_ENGINE_CLOSED);
    pump(&p.c, &p.s);
    CHECK_INT(p.c.got, 1);
    CHECK(p.c.eof);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_CLOSED);
    CHECK_INT(tls_engine_feed_eof(p.c.t), TLS_ENGINE_CLOSED);
    CHECK_INT(tls_engine_error(p.c.t), TLS_ENGINE_ERR_NONE);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

static void test_abrupt_eof(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.c.t), TLS_ENGINE_OPEN);
    /* The server's socket ends with no close_notify: a truncation. */
    CHECK_INT(tls_engine_feed_eof(p.s.t), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(p.s.t)), "tls_eof");
    CHECK(!tls_engine_peer_closed(p.s.t));
    pair_end(&p);
    /* EOF in the middle of the handshake. */
    struct tls_engine *c = tls_engine_new(cc, "api.example.test", 443);
    CHECK(tls_engine_pending(c) > 0); /* the ClientHello */
    CHECK_INT(tls_engine_feed_eof(c), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(c)), "tls_handshake");
    /* A server whose client hangs up after the ServerHello and certificate
     * (a client that checks the certificate itself and just closes): the
     * client refused it. Before any answer, it is a plain handshake error. */
    struct tls_engine *s = tls_engine_new(sc, "api.example.test", 0);
    char hello[4096];
    tls_engine_free(c);
    c = tls_engine_new(cc, "api.example.test", 443);
    size_t n = tls_engine_take(c, hello, sizeof hello);
    CHECK(n > 0);
    CHECK_INT(tls_engine_feed(s, hello, n), TLS_ENGINE_HANDSHAKING);
    CHECK(tls_engine_pending(s) > 0);
    CHECK_INT(tls_engine_feed_eof(s), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(s)), "tls_client");
    tls_engine_free(s);
    s = tls_engine_new(sc, "api.example.test", 0);
    CHECK_INT(tls_engine_feed_eof(s), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(s)), "tls_handshake");
    tls_engine_free(s);
    tls_engine_free(c);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* A plain-HTTP server answering the ClientHello. */
static void test_not_tls_is_handshake_error(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false);
    struct tls_engine *c = tls_engine_new(cc, "api.example.test", 443);
    static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    CHECK_INT(tls_engine_feed(c, resp, sizeof resp - 1), TLS_ENGINE_FAILED);
    CHECK_STR(tls_engine_error_name(tls_engine_error(c)), "tls_handshake");
    CHECK(strlen(tls_engine_reason(c)) > 0);
    tls_engine_free(c);
    tls_engine_config_free(cc);
}

/* TLS 1.2 (the only version with renegotiation): a client's renegotiation
 * request is refused and the connection keeps carrying data. */
static void test_renegotiation_refused(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    SSL_CTX_set_max_proto_version(tls_engine_config_ctx(cc), TLS1_2_VERSION);
    /* Let this client ask (ours never would). */
    SSL_CTX_clear_options(tls_engine_config_ctx(cc), SSL_OP_NO_RENEGOTIATION);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    CHECK_INT(tls_engine_state(p.s.t), TLS_ENGINE_OPEN);
    CHECK_INT(SSL_version(tls_engine_ssl(p.c.t)), TLS1_2_VERSION);
    SSL *cs = tls_engine_ssl(p.c.t);
    CHECK_INT(SSL_renegotiate(cs), 1);
    SSL_do_handshake(cs);
    pump(&p.c, &p.s);
    CHECK_INT(SSL_num_renegotiations(tls_engine_ssl(p.s.t)), 0);
    CHECK(tls_engine_state(p.s.t) != TLS_ENGINE_HANDSHAKING);
    /* No second handshake completed on the client either. */
    CHECK_INT(SSL_renegotiate_pending(cs) == 1 || tls_engine_state(p.c.t) == TLS_ENGINE_FAILED, 1);
    pair_end(&p);

    /* The server asks our client (HelloRequest): our client declines. */
    tls_engine_config_free(cc);
    cc = client_cfg(ca_file, false);
    SSL_CTX_set_max_proto_version(tls_engine_config_ctx(cc), TLS1_2_VERSION);
    SSL_CTX_clear_options(tls_engine_config_ctx(sc), SSL_OP_NO_RENEGOTIATION);
    pair_start(&p, cc, sc, "api.example.test", NULL);
    SSL *ss = tls_engine_ssl(p.s.t);
    CHECK_INT(SSL_renegotiate(ss), 1);
    SSL_do_handshake(ss);
    pump(&p.c, &p.s);
    CHECK_INT(SSL_total_renegotiations(tls_engine_ssl(p.c.t)), 0);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

/* Write LEN pattern bytes from FROM in odd pieces, pumping in between. */
static void stream(struct side *from, struct side *to, size_t len)
{
    static unsigned char piece[70001];
    size_t off = 0, sizes[] = {1, 17, 4099, 16385, 70001, 333, 9000};
    for (unsigned k = 0; off < len; k++) {
        size_t n = sizes[k % ARRAY_LEN(sizes)];
        if (n > len - off)
            n = len - off;
        for (size_t i = 0; i < n; i++)
            piece[i] = pattern_at(off + i);
        size_t done = 0;
        while (done < n) {
            size_t w = tls_engine_write(from->t, piece + done, n - done);
            CHECK(tls_engine_pending(from->t) <= TLS_ENGINE_OUT_MAX + 2 * 16384 + 1024);
            done += w;
            off += w;
            if (w == 0 || tls_engine_pending(from->t) >= TLS_ENGINE_OUT_MAX / 2)
                pump(from, to);
            if (tls_engine_state(from->t) != TLS_ENGINE_OPEN)
                return;
        }
    }
    pump(from, to);
}

static void test_16mib_each_way(void)
{
    struct tls_engine_config *cc = client_cfg(ca_file, false), *sc = server_cfg(ca);
    struct pair p;
    pair_start(&p, cc, sc, "api.example.test", NULL);
    size_t len = 16u << 20;
    stream(&p.c, &p.s, len);
    CHECK_INT(p.s.got, len);
    CHECK(!p.s.mismatch);
    stream(&p.s, &p.c, len);
    CHECK_INT(p.c.got, len);
    CHECK(!p.c.mismatch);
    pair_end(&p);
    tls_engine_config_free(cc);
    tls_engine_config_free(sc);
}

static void test_bad_config_files(void)
{
    char err[512] = "";
    CHECK(tls_engine_client_config("/nonexistent/ca.pem", false, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/ca.pem") != NULL);
    char *junk = xasprintf("%s/junk.pem", root);
    FILE *f = fopen(junk, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    err[0] = '\0';
    CHECK(tls_engine_client_config(junk, false, err, sizeof err) == NULL);
    CHECK(strstr(err, junk) != NULL);
    err[0] = '\0';
    CHECK(tls_engine_server_config_files(ca_file, junk, err, sizeof err) == NULL);
    CHECK(strstr(err, junk) != NULL);
    free(junk);
}

int main(void)
{
    fixture_up();
    RUN(test_handshake_verified_sni_alpn);
    RUN(test_wrong_ca_verify_and_client_reject);
    RUN(test_system_store_rejects_private_ca);
    RUN(test_hostname_mismatch);
    RUN(test_insecure_accepts_anything);
    RUN(test_ip_literal_fallback_san);
    RUN(test_alpn_h2_only_client_continues);
    RUN(test_session_resumption);
    RUN(test_close_notify_both_ways);
    RUN(test_abrupt_eof);
    RUN(test_not_tls_is_handshake_error);
    RUN(test_renegotiation_refused);
    RUN(test_16mib_each_way);
    RUN(test_bad_config_files);
    fixture_down();
    return unit_summary("tls_engine");
}
