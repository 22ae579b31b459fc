/*
 * transport_tls — TLS as a second implementation of the transport seam
 * (transport.h): it wraps an inner transport (plain TCP), feeds every byte
 * the inner one reads into a tls_engine, hands the plaintext to its own
 * owner, and sends what it encrypts through the inner transport's batched
 * sender. The owner reads and writes exactly as over TCP.
 *
 * Events to the owner: on_ready once the handshake is done (no read comes
 * before it); a failed handshake is one on_read with UV_EPROTO, after which
 * transport_error_name() says "tls_handshake", "tls_verify" or "tls_client".
 * A clean close_notify and an abrupt EOF both reach the owner as UV_EOF (the
 * HTTP framing decides whether a body was cut short), after every byte of
 * plaintext that came before. Shutdown sends close_notify, then the inner
 * shutdown. Close sends close_notify when it can do so without waiting, then
 * closes the inner transport; on_closed follows both.
 */
#ifndef STATUSPROXY_TRANSPORT_TLS_H
#define STATUSPROXY_TRANSPORT_TLS_H

#include <stdint.h>
#include <uv.h>

#include "tls_engine.h"
#include "transport.h"

/* Wrap INNER (connected, not reading; it becomes this transport's and must
 * stay valid until on_closed) and start the handshake at once. CFG decides
 * the side; HOST and PORT are as for tls_engine_new. OPS and OWNER receive
 * the events. The returned transport frees itself after its on_closed; it
 * is never NULL (a failure to start is reported as a failed handshake). */
struct transport *tls_transport_new(struct transport *inner, uv_loop_t *loop,
                                    struct tls_engine_config *cfg, const char *host,
                                    unsigned port, const struct transport_ops *ops, void *owner);

/* Bytes the owner read from the inner transport before wrapping it (a
 * ClientHello that came right behind a CONNECT head): fed to the engine
 * ahead of anything read later. Only during the handshake; the handshake
 * advances from the loop, not from this call. */
void tls_transport_preload(struct transport *t, const void *p, size_t n);

/* The engine under T (T must come from tls_transport_new), for inspection
 * (resumed session, SNI). */
struct tls_engine *tls_transport_engine(struct transport *t);

/* Ciphertext bytes the peer sent so far (0: it never spoke, e.g. a port
 * probe that connected and closed). */
uint64_t tls_transport_bytes_in(struct transport *t);

#endif
