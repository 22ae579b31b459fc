/*
 * tls_engine — a TLS endpoint over two memory BIOs (see tls_engine.h). The
 * SSL object reads ciphertext from RBIO (filled by tls_engine_feed) and
 * writes ciphertext to WBIO (drained by tls_engine_take); neither BIO ever
 * blocks, so every OpenSSL call returns at once with "want more" at worst.
 */
#include "tls_engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls_ca.h"
#include "util.h"

enum cfg_kind { CFG_CLIENT, CFG_SERVER_FILES, CFG_SERVER_CA };

/* One remembered session for a "host:port"; USED orders slots for
 * eviction (least recently stored or used goes first). */
struct session_slot {
    char *key;
    SSL_SESSION *sess;
    unsigned long used;
};

struct tls_engine_config {
    SSL_CTX *ctx;
    enum cfg_kind kind;
    bool verify;          /* client: peer certificates are checked */
    struct tls_ca *ca;    /* CFG_SERVER_CA: borrowed */
    pthread_mutex_t lock; /* guards the session slots across threads */
    struct session_slot slots[TLS_ENGINE_SESSION_SLOTS];
    unsigned long tick;
};

struct tls_engine {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by SSL */
    struct tls_engine_config *cfg;
    enum tls_engine_state state;
    enum tls_engine_error err;
    char *key;       /* client: "host:port" of the session cache */
    char *fallback;  /* server: certificate name without SNI */
    int alert_in;    /* last fatal alert received during the handshake, or -1 */
    bool sent_close, peer_closed;
    char reason[160];
};

/* ALPN: http/1.1 only, in wire format (length-prefixed). */
static const unsigned char alpn_http11[] = "\x08http/1.1";

/* --- session cache (client configs) --- */

static void session_store(struct tls_engine_config *cfg, const char *key, SSL_SESSION *sess)
{
    pthread_mutex_lock(&cfg->lock);
    struct session_slot *slot = NULL, *oldest = &cfg->slots[0];
    for (size_t i = 0; i < TLS_ENGINE_SESSION_SLOTS; i++) {
        struct session_slot *s = &cfg->slots[i];
        if (s->key && strcmp(s->key, key) == 0) {
            slot = s;
            break;
        }
        if (!s->key || (oldest->key && s->used < oldest->used))
            oldest = s;
    }
    if (!slot) {
        slot = oldest;
        free(slot->key);
        slot->key = xstrdup(key);
    }
    SSL_SESSION *old = slot->sess;
    slot->sess = sess;
    slot->used = ++cfg->tick;
    pthread_mutex_unlock(&cfg->lock);
    SSL_SESSION_free(old);
}

/* Offer the session remembered for KEY, if any, to SSL. */
static void session_offer(struct tls_engine_config *cfg, const char *key, SSL *ssl)
{
    pthread_mutex_lock(&cfg->lock);
    for (size_t i = 0; i < TLS_ENGINE_SESSION_SLOTS; i++) {
        struct session_slot *s = &cfg->slots[i];
        if (s->key && strcmp(s->key, key) == 0) {
            if (s->sess && SSL_SESSION_is_resumable(s->sess)) {
                SSL_set_session(ssl, s->sess); /* takes its own reference */
                s->used = ++cfg->tick;
            }
            break;
        }
    }
    pthread_mutex_unlock(&cfg->lock);
}

SSL_CTX *tls_engine_config_ctx(struct tls_engine_config *cfg)
{
    return cfg->ctx;
}

size_t tls_engine_config_sessions(struct tls_engine_config *cfg)
{
    size_t n = 0;
    pthread_mutex_lock(&cfg->lock);
    for (size_t i = 0; i < TLS_ENGINE_SESSION_SLOTS; i++)
        n += cfg->slots[i].sess != NULL;
    pthread_mutex_unlock(&cfg->lock);
    return n;
}

/* OpenSSL hands every new session (TLS 1.2 at the end of the handshake,
 * TLS 1.3 with each ticket) here; returning 1 keeps its reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_engine *t = SSL_get_app_data(ssl);
    if (!t || !t->key)
        return 0;
    session_store(t->cfg, t->key, sess);
    return 1;
}

/* --- callbacks shared by both sides --- */

/* Remember the fatal alert a peer sent during the handshake: on a server it
 * tells a client that refused our certificate from other failures. */
static void on_info(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT)
        return;
    struct tls_engine *t = SSL_get_app_data(ssl);
    int level = (ret >> 8) & 0xff, desc = ret & 0xff;
    if (t && t->state == TLS_ENGINE_HANDSHAKING && desc != SSL_AD_CLOSE_NOTIFY &&
        (level == SSL3_AL_FATAL || SSL_version(ssl) >= TLS1_3_VERSION))
        t->alert_in = desc;
}

/* Select http/1.1 when offered; otherwise go on without ALPN, so a client
 * offering only h2 still gets HTTP/1.1 (RFC 7301 §3.2 allows no answer). */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg)
{
    UNUSED(ssl);
    UNUSED(arg);
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof alpn_http11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Mint (or fetch from the cache) the certificate for the SNI name, or for
 * the caller's fallback name when there is none or it is not a host name.
 * OpenSSL calls this for every ClientHello, with or without SNI. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_engine_config *cfg = arg;
    struct tls_engine *t = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char err[160] = "";
    X509 *leaf = name ? tls_ca_leaf(cfg->ca, name, err, sizeof err) : NULL;
    if (!leaf && t && t->fallback)
        leaf = tls_ca_leaf(cfg->ca, t->fallback, err, sizeof err);
    if (!leaf) {
        if (t)
            snprintf(t->reason, sizeof t->reason, "no certificate name: %.120s",
                     err[0] ? err : "no SNI and no fallback name");
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    /* The CA certificate goes after the leaf: a client that trusts the CA
     * by its key's hash (Chromium's --ignore-certificate-errors-spki-list)
     * can only match what the server sends. */
    int ok = SSL_use_certificate(ssl, leaf) == 1 &&
             SSL_use_PrivateKey(ssl, tls_ca_leaf_key(cfg->ca)) == 1 &&
             SSL_add1_chain_cert(ssl, tls_ca_cert(cfg->ca)) == 1;
    X509_free(leaf);
    if (!ok) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* --- configs --- */

static void ssl_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : fallback);
}

static struct tls_engine_config *config_new(enum cfg_kind kind, const SSL_METHOD *method)
{
    struct tls_engine_config *cfg = xcalloc(1, sizeof *cfg);
    cfg->kind = kind;
    pthread_mutex_init(&cfg->lock, NULL);
    cfg->ctx = SSL_CTX_new(method);
    if (!cfg->ctx) {
        free(cfg);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(cfg->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(cfg->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_info_callback(cfg->ctx, on_info);
    return cfg;
}

/* Fail early with a clear reason when FILE cannot be opened at all. */
static bool readable(const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

struct tls_engine_config *tls_engine_client_config(const char *ca_file, bool insecure, char *err,
                                                   size_t errlen)
{
    ERR_clear_error();
    if (ca_file && !readable(ca_file, err, errlen))
        return NULL;
    struct tls_engine_config *cfg = config_new(CFG_CLIENT, TLS_client_method());
    if (!cfg) {
        ssl_reason(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX *ctx = cfg->ctx;
    cfg->verify = !insecure;
    if (ca_file) {
        if (SSL_CTX_load_verify_file(ctx, ca_file) != 1) {
            char why[120];
            ssl_reason(why, sizeof why, "no certificate");
            snprintf(err, errlen, "%s: not a PEM certificate file (%s)", ca_file, why);
            tls_engine_config_free(cfg);
            ERR_clear_error();
            return NULL;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    SSL_CTX_set_verify(ctx, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof alpn_http11 - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    ERR_clear_error();
    return cfg;
}

static struct tls_engine_config *server_config(enum cfg_kind kind)
{
    struct tls_engine_config *cfg = config_new(kind, TLS_server_method());
    if (!cfg)
        return NULL;
    static const unsigned char sid_ctx[] = "statusproxy";
    SSL_CTX_set_session_id_context(cfg->ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(cfg->ctx, on_alpn_select, NULL);
    return cfg;
}

struct tls_engine_config *tls_engine_server_config_files(const char *cert_file,
                                                         const char *key_file, char *err,
                                                         size_t errlen)
{
    ERR_clear_error();
    if (!readable(cert_file, err, errlen) || !readable(key_file, err, errlen))
        return NULL;
    struct tls_engine_config *cfg = server_config(CFG_SERVER_FILES);
    if (!cfg) {
        ssl_reason(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    const char *bad = NULL;
    if (SSL_CTX_use_certificate_chain_file(cfg->ctx, cert_file) != 1)
        bad = cert_file;
    else if (SSL_CTX_use_PrivateKey_file(cfg->ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
             SSL_CTX_check_private_key(cfg->ctx) != 1)
        bad = key_file;
    if (bad) {
        char why[120];
        ssl_reason(why, sizeof why, "unusable");
        snprintf(err, errlen, "%s: %s", bad, why);
        tls_engine_config_free(cfg);
        ERR_clear_error();
        return NULL;
    }
    return cfg;
}

struct tls_engine_config *tls_engine_server_config_cert(X509 *cert, EVP_PKEY *key, X509 *chain,
                                                        char *err, size_t errlen)
{
    ERR_clear_error();
    struct tls_engine_config *cfg = server_config(CFG_SERVER_FILES);
    if (!cfg) {
        ssl_reason(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    if (SSL_CTX_use_certificate(cfg->ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey(cfg->ctx, key) != 1 ||
        SSL_CTX_check_private_key(cfg->ctx) != 1 ||
        (chain && SSL_CTX_add1_chain_cert(cfg->ctx, chain) != 1)) {
        ssl_reason(err, errlen, "the certificate and key cannot be used");
        tls_engine_config_free(cfg);
        ERR_clear_error();
        return NULL;
    }
    return cfg;
}

struct tls_engine_config *tls_engine_server_config_ca(struct tls_ca *ca, char *err, size_t errlen)
{
    ERR_clear_error();
    struct tls_engine_config *cfg = server_config(CFG_SERVER_CA);
    if (!cfg) {
        ssl_reason(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    cfg->ca = ca;
    SSL_CTX_set_tlsext_servername_callback(cfg->ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(cfg->ctx, cfg);
    return cfg;
}

void tls_engine_config_free(struct tls_engine_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < TLS_ENGINE_SESSION_SLOTS; i++) {
        free(cfg->slots[i].key);
        SSL_SESSION_free(cfg->slots[i].sess);
    }
    SSL_CTX_free(cfg->ctx);
    pthread_mutex_destroy(&cfg->lock);
    free(cfg);
}

/* --- connections --- */

static bool is_ip_literal(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* Client side: SNI (not for IP literals, RFC 6066 §3), the name the
 * certificate must carry, and a remembered session. */
static void client_setup(struct tls_engine *t, const char *host, unsigned port)
{
    char bare[256];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof bare) {
        memcpy(bare, host + 1, n - 2);
        bare[n - 2] = '\0';
    } else {
        snprintf(bare, sizeof bare, "%s", host);
    }
    bool ip = is_ip_literal(bare);
    if (!ip)
        SSL_set_tlsext_host_name(t->ssl, bare);
    if (t->cfg->verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(param, bare);
        else
            SSL_set1_host(t->ssl, bare);
    }
    t->key = xasprintf("%s:%u", bare, port);
    session_offer(t->cfg, t->key, t->ssl);
    SSL_set_connect_state(t->ssl);
}

static void fail(struct tls_engine *t, enum tls_engine_error e, const char *reason)
{
    t->state = TLS_ENGINE_FAILED;
    t->err = e;
    if (reason && !t->reason[0])
        snprintf(t->reason, sizeof t->reason, "%s", reason);
}

/* Classify a handshake that OpenSSL gave up on. */
static void fail_handshake(struct tls_engine *t)
{
    long vr = SSL_get_verify_result(t->ssl);
    if (t->cfg->kind == CFG_CLIENT && t->cfg->verify && vr != X509_V_OK) {
        fail(t, TLS_ENGINE_ERR_VERIFY, X509_verify_cert_error_string(vr));
    } else if (t->cfg->kind != CFG_CLIENT &&
               (t->alert_in == SSL_AD_BAD_CERTIFICATE || t->alert_in == SSL_AD_UNKNOWN_CA ||
                t->alert_in == SSL_AD_CERTIFICATE_UNKNOWN ||
                t->alert_in == SSL_AD_UNSUPPORTED_CERTIFICATE ||
                t->alert_in == SSL_AD_CERTIFICATE_EXPIRED ||
                t->alert_in == SSL_AD_CERTIFICATE_REVOKED)) {
        char why[80];
        snprintf(why, sizeof why, "client refused the certificate: %s",
                 SSL_alert_desc_string_long(t->alert_in));
        fail(t, TLS_ENGINE_ERR_CLIENT, why);
    } else {
        char why[120];
        ssl_reason(why, sizeof why, "handshake failed");
        fail(t, TLS_ENGINE_ERR_HANDSHAKE, why);
    }
    ERR_clear_error();
}

/* Advance the handshake as far as the fed bytes allow. */
static void drive(struct tls_engine *t)
{
    if (t->state != TLS_ENGINE_HANDSHAKING)
        return;
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->state = TLS_ENGINE_OPEN;
        return;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    fail_handshake(t);
}

struct tls_engine *tls_engine_new(struct tls_engine_config *cfg, const char *host, unsigned port)
{
    struct tls_engine *t = xcalloc(1, sizeof *t);
    t->cfg = cfg;
    t->alert_in = -1;
    t->state = TLS_ENGINE_HANDSHAKING;
    t->ssl = SSL_new(cfg->ctx);
    if (!t->ssl)
        abort(); /* only on allocation failure, like xmalloc */
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio)
        abort();
    /* An empty memory BIO means "retry later", never EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_app_data(t->ssl, t);
    if (cfg->kind == CFG_CLIENT) {
        client_setup(t, host ? host : "", port);
        drive(t); /* the ClientHello is ready to take */
    } else {
        if (host)
            t->fallback = xstrdup(host);
        SSL_set_accept_state(t->ssl);
    }
    return t;
}

enum tls_engine_state tls_engine_feed(struct tls_engine *t, const void *p, size_t n)
{
    if (t->state == TLS_ENGINE_FAILED || t->state == TLS_ENGINE_CLOSED)
        return t->state;
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        int w = BIO_write(t->rbio, p, chunk);
        if (w <= 0)
            abort(); /* a memory BIO fails only when out of memory */
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    drive(t);
    return t->state;
}

enum tls_engine_state tls_engine_feed_eof(struct tls_engine *t)
{
    switch (t->state) {
    case TLS_ENGINE_HANDSHAKING:
        /* A client that hangs up once it has our certificate, without an
         * alert, is one that did not trust it: Node.js and others check
         * the certificate after OpenSSL and just close the socket. */
        if (t->cfg->kind != CFG_CLIENT && BIO_number_written(t->wbio) > 0)
            fail(t, TLS_ENGINE_ERR_CLIENT,
                 "client closed the connection after our certificate (not trusted?)");
        else
            fail(t, TLS_ENGINE_ERR_HANDSHAKE, "connection closed during the handshake");
        break;
    case TLS_ENGINE_OPEN:
    case TLS_ENGINE_CLOSING:
        if (t->peer_closed)
            t->state = TLS_ENGINE_CLOSED;
        else
            fail(t, TLS_ENGINE_ERR_EOF, "connection closed without close_notify");
        break;
    case TLS_ENGINE_CLOSED:
    case TLS_ENGINE_FAILED:
        break;
    }
    return t->state;
}

long tls_engine_read(struct tls_engine *t, void *buf, size_t cap)
{
    drive(t);
    if (t->state == TLS_ENGINE_FAILED)
        return TLS_ENGINE_ERROR;
    if (t->state == TLS_ENGINE_HANDSHAKING)
        return TLS_ENGINE_WANT;
    if (t->peer_closed)
        return TLS_ENGINE_EOF;
    if (cap > LONG_MAX)
        cap = LONG_MAX;
    ERR_clear_error();
    size_t got = 0;
    int rc = SSL_read_ex(t->ssl, buf, cap, &got);
    if (rc == 1)
        return (long)got;
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_ENGINE_WANT;
    case SSL_ERROR_ZERO_RETURN:
        t->peer_closed = true;
        t->state = t->sent_close ? TLS_ENGINE_CLOSED : TLS_ENGINE_CLOSING;
        return TLS_ENGINE_EOF;
    default: {
        char why[120];
        ssl_reason(why, sizeof why, "bad TLS record");
        fail(t, TLS_ENGINE_ERR_PROTOCOL, why);
        ERR_clear_error();
        return TLS_ENGINE_ERROR;
    }
    }
}

size_t tls_engine_write(struct tls_engine *t, const void *p, size_t n)
{
    bool can = t->state == TLS_ENGINE_OPEN || (t->state == TLS_ENGINE_CLOSING && !t->sent_close);
    size_t pend = BIO_ctrl_pending(t->wbio);
    if (!can || n == 0 || pend >= TLS_ENGINE_OUT_MAX)
        return 0;
    /* At least one full record, at most what keeps the backlog bounded. */
    size_t room = TLS_ENGINE_OUT_MAX - pend;
    if (room < SSL3_RT_MAX_PLAIN_LENGTH)
        room = SSL3_RT_MAX_PLAIN_LENGTH;
    if (n > room)
        n = room;
    ERR_clear_error();
    size_t done = 0;
    if (SSL_write_ex(t->ssl, p, n, &done) != 1) {
        char why[120];
        ssl_reason(why, sizeof why, "write failed");
        fail(t, TLS_ENGINE_ERR_PROTOCOL, why);
        ERR_clear_error();
        return 0;
    }
    return done;
}

size_t tls_engine_pending(const struct tls_engine *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tls_engine_take(struct tls_engine *t, void *buf, size_t cap)
{
    if (cap > INT_MAX)
        cap = INT_MAX;
    int r = BIO_read(t->wbio, buf, (int)cap);
    return r > 0 ? (size_t)r : 0;
}

enum tls_engine_state tls_engine_close(struct tls_engine *t)
{
    switch (t->state) {
    case TLS_ENGINE_HANDSHAKING:
        /* Nothing to protect yet: no close_notify mid-handshake. */
        t->sent_close = true;
        t->state = TLS_ENGINE_CLOSED;
        break;
    case TLS_ENGINE_OPEN:
    case TLS_ENGINE_CLOSING:
        if (!t->sent_close) {
            ERR_clear_error();
            SSL_shutdown(t->ssl); /* queues close_notify into WBIO */
            ERR_clear_error();
            t->sent_close = true;
        }
        t->state = t->peer_closed ? TLS_ENGINE_CLOSED : TLS_ENGINE_CLOSING;
        break;
    case TLS_ENGINE_CLOSED:
    case TLS_ENGINE_FAILED:
        break;
    }
    return t->state;
}

enum tls_engine_state tls_engine_state(const struct tls_engine *t)
{
    return t->state;
}

enum tls_engine_error tls_engine_error(const struct tls_engine *t)
{
    return t->err;
}

const char *tls_engine_error_name(enum tls_engine_error e)
{
    switch (e) {
    case TLS_ENGINE_ERR_NONE:
        return "";
    case TLS_ENGINE_ERR_HANDSHAKE:
        return "tls_handshake";
    case TLS_ENGINE_ERR_VERIFY:
        return "tls_verify";
    case TLS_ENGINE_ERR_CLIENT:
        return "tls_client";
    case TLS_ENGINE_ERR_PROTOCOL:
        return "tls_protocol";
    case TLS_ENGINE_ERR_EOF:
        return "tls_eof";
    }
    return "";
}

const char *tls_engine_reason(const struct tls_engine *t)
{
    return t->state == TLS_ENGINE_FAILED ? t->reason : "";
}

bool tls_engine_peer_closed(const struct tls_engine *t)
{
    return t->peer_closed;
}

bool tls_engine_buffered(const struct tls_engine *t)
{
    return SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->rbio) > 0;
}

SSL *tls_engine_ssl(struct tls_engine *t)
{
    return t->ssl;
}

bool tls_engine_resumed(const struct tls_engine *t)
{
    return SSL_session_reused(t->ssl) == 1;
}

const char *tls_engine_sni(const struct tls_engine *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

void tls_engine_free(struct tls_engine *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t->key);
    free(t->fallback);
    free(t);
}
