/*
 * tls_engine — one TLS endpoint driven entirely through memory: the caller
 * feeds the ciphertext it read from a socket and takes back the ciphertext
 * to write, and reads/writes plaintext in between. Nothing here blocks,
 * touches a socket or an event loop, logs or exits, so the same engine
 * serves upstream connections, interception and TLS listeners (DESIGN §9)
 * and is unit-tested by pumping two engines into each other.
 *
 * Configs (an SSL_CTX each) are built once at start-up and shared by every
 * worker thread; a connection belongs to one thread.
 *
 *   client: verification against the system store, a CA file, or none;
 *           SNI and hostname check for the upstream host; ALPN http/1.1;
 *           a small per-"host:port" session cache for resumption.
 *   server: a certificate from files, or one minted per SNI name by tls_ca
 *           (IP SANs for IP literals; the caller's fallback name when the
 *           client sent no SNI); ALPN selects http/1.1 or nothing.
 *
 * Both: TLS 1.2 minimum, renegotiation refused. Error messages never carry
 * key material (only OpenSSL's reason strings and file names).
 *
 * Typical loop (caller side):
 *   bytes read from the socket -> tls_engine_feed
 *   while (tls_engine_read(...) > 0) hand plaintext to the owner
 *   plaintext to send          -> tls_engine_write (may take only part)
 *   tls_engine_take            -> bytes to write on the socket
 * and check tls_engine_state after each step.
 */
#ifndef STATUSPROXY_TLS_ENGINE_H
#define STATUSPROXY_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/types.h>

struct tls_ca;
struct tls_engine_config;
struct tls_engine;

enum tls_engine_state {
    TLS_ENGINE_HANDSHAKING, /* handshake in progress */
    TLS_ENGINE_OPEN,        /* application data both ways */
    TLS_ENGINE_CLOSING,     /* a close_notify was sent or received, not both */
    TLS_ENGINE_CLOSED,      /* close_notify both ways, or received then EOF */
    TLS_ENGINE_FAILED,      /* see tls_engine_error */
};

enum tls_engine_error {
    TLS_ENGINE_ERR_NONE,
    TLS_ENGINE_ERR_HANDSHAKE, /* "tls_handshake": handshake failed (not TLS, no common cipher, EOF) */
    TLS_ENGINE_ERR_VERIFY,    /* "tls_verify": our client rejected the peer's certificate */
    TLS_ENGINE_ERR_CLIENT,    /* "tls_client": the client rejected our certificate (alert) */
    TLS_ENGINE_ERR_PROTOCOL,  /* "tls_protocol": bad record or alert after the handshake */
    TLS_ENGINE_ERR_EOF,       /* "tls_eof": the socket ended without a close_notify */
};

/* Returned by tls_engine_read besides a byte count. */
#define TLS_ENGINE_WANT 0       /* nothing more until more ciphertext is fed */
#define TLS_ENGINE_EOF (-1)     /* the peer sent close_notify: no more plaintext */
#define TLS_ENGINE_ERROR (-2)   /* the connection FAILED */

/* tls_engine_write accepts plaintext only while less than this much
 * ciphertext waits to be taken, so a large write goes out in pieces and
 * memory stays bounded. */
#define TLS_ENGINE_OUT_MAX (64 * 1024)

/* Slots of a client config's session cache (one per "host:port"). */
#define TLS_ENGINE_SESSION_SLOTS 64

/* --- configs (create at start-up; shared, thread-safe) --- */

/* A client config. CA_FILE (PEM, may hold several certificates) replaces
 * the system store when not NULL; INSECURE turns verification off. Returns
 * NULL and ERR ("FILE: reason") when the file cannot be used. */
struct tls_engine_config *tls_engine_client_config(const char *ca_file, bool insecure, char *err,
                                                   size_t errlen);

/* A server config with the certificate (chain) in CERT_FILE and its key in
 * KEY_FILE (both PEM). Returns NULL and ERR naming the file. */
struct tls_engine_config *tls_engine_server_config_files(const char *cert_file,
                                                         const char *key_file, char *err,
                                                         size_t errlen);

/* A server config with a certificate and key in memory (a leaf minted at
 * start), and CHAIN (may be NULL: the issuer) sent after it. References
 * are taken; the caller keeps its own. Returns NULL and ERR when the key
 * does not belong to the certificate. */
struct tls_engine_config *tls_engine_server_config_cert(X509 *cert, EVP_PKEY *key, X509 *chain,
                                                        char *err, size_t errlen);

/* A server config that mints a certificate per SNI name from CA (borrowed:
 * it must outlive the config). */
struct tls_engine_config *tls_engine_server_config_ca(struct tls_ca *ca, char *err, size_t errlen);

/* The config's SSL_CTX, borrowed, for inspection and tests. */
SSL_CTX *tls_engine_config_ctx(struct tls_engine_config *cfg);

/* Sessions currently held by a client config's cache (for tests). */
size_t tls_engine_config_sessions(struct tls_engine_config *cfg);

/* Accepts NULL. Every connection made from it must be freed first. */
void tls_engine_config_free(struct tls_engine_config *cfg);

/* --- connections --- */

/* A new endpoint. For a client config, HOST is the name sent as SNI (not
 * for IP literals) and verified against the certificate, and "HOST:PORT" is
 * the session-cache key; the ClientHello is ready to take at once. For a
 * server config, HOST is the fallback certificate name when the client sends
 * no SNI (may be NULL with a file certificate); PORT is unused. Never NULL. */
struct tls_engine *tls_engine_new(struct tls_engine_config *cfg, const char *host, unsigned port);

/* Give the engine N bytes of ciphertext read from the socket (all are
 * kept). Advances the handshake. Returns the state afterwards. */
enum tls_engine_state tls_engine_feed(struct tls_engine *t, const void *p, size_t n);

/* The socket reached EOF. After a received close_notify this is a clean end
 * (CLOSED); during the handshake it FAILS with tls_handshake (a server
 * that had sent its certificate: tls_client, a client that silently
 * refused it), otherwise with tls_eof (a truncation an attacker or a crash
 * could cause). */
enum tls_engine_state tls_engine_feed_eof(struct tls_engine *t);

/* Copy up to CAP bytes of plaintext into BUF. Returns the byte count,
 * TLS_ENGINE_WANT, TLS_ENGINE_EOF or TLS_ENGINE_ERROR. Also processes
 * post-handshake messages (TLS 1.3 session tickets), so a client should
 * call it after every feed. */
long tls_engine_read(struct tls_engine *t, void *buf, size_t cap);

/* Encrypt up to N bytes of plaintext; returns how many were taken (0 when
 * not OPEN or while TLS_ENGINE_OUT_MAX ciphertext waits: take it first). */
size_t tls_engine_write(struct tls_engine *t, const void *p, size_t n);

/* Ciphertext waiting to be sent, and taking (copying out) up to CAP of it. */
size_t tls_engine_pending(const struct tls_engine *t);
size_t tls_engine_take(struct tls_engine *t, void *buf, size_t cap);

/* Start a clean close: queue close_notify (take it and send it). Further
 * writes are refused. Returns the state afterwards. */
enum tls_engine_state tls_engine_close(struct tls_engine *t);

enum tls_engine_state tls_engine_state(const struct tls_engine *t);
enum tls_engine_error tls_engine_error(const struct tls_engine *t);
/* "tls_handshake", "tls_verify", ... or "" for NONE. */
const char *tls_engine_error_name(enum tls_engine_error e);
/* A one-line human reason for a FAILED connection (OpenSSL's reason or the
 * verification error), "" otherwise. Borrowed, valid until freed. */
const char *tls_engine_reason(const struct tls_engine *t);
/* True when the peer's close_notify arrived. */
bool tls_engine_peer_closed(const struct tls_engine *t);

/* Whether bytes fed earlier may still yield plaintext or a close_notify
 * without more input (a reader that paused should call tls_engine_read). */
bool tls_engine_buffered(const struct tls_engine *t);

/* The SSL object, for inspection (SNI, ALPN, peer certificate, reuse). */
SSL *tls_engine_ssl(struct tls_engine *t);
/* Whether the handshake resumed a cached session. */
bool tls_engine_resumed(const struct tls_engine *t);
/* The SNI name a server received, or NULL. */
const char *tls_engine_sni(const struct tls_engine *t);

/* Accepts NULL. Sends nothing: call tls_engine_close first for a clean end.
 * A FAILED engine may still hold an alert for the peer (tls_engine_pending):
 * sending it before closing the socket is polite, not required. */
void tls_engine_free(struct tls_engine *t);

#endif
