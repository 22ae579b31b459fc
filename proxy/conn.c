/*
 * conn — the client connection: reading client bytes, the request parser,
 * validating and routing requests, policy (access, loops, proxy
 * authentication, Max-Forwards), writing to the client, pipelining,
 * keep-alive, idle/header/linger timers and closing. It hands each parsed
 * request (head, body pieces, end) to the exchange (exchange.c), which owns
 * the rest of its life; exchange.c and relay.c call back only through
 * conn_side (struct exchange_client_ops).
 *
 * A connection carries one exchange at a time. The request parser pauses at
 * the end of each request head (so the upstream can be chosen before any
 * body byte is forwarded) and at the end of each request (so a pipelined
 * next request waits, unparsed, in its read chunk until this answer is
 * complete: answers stay in order). Reading from the client stops whenever
 * unparsed bytes are pending, which bounds memory to one chunk per side.
 *
 * Phases of the connection:
 *   PH_IDLE     waiting for the first byte of a request (idle timeout)
 *   PH_HEAD     receiving a request head (header timeout, then 408)
 *   PH_EXCHANGE a request is being answered
 *   PH_TUNNEL   CONNECT or 101: bytes relayed both ways (tunnel.c)
 *   PH_HANDSHAKE an intercepted CONNECT was answered 200: the client's TLS
 *               handshake with a minted certificate (header timeout); then
 *               PH_IDLE, with every request going to the CONNECT authority
 *   PH_LINGER   answer sent, write side shut; draining input before close
 *   PH_CLOSED   handles are closing; freed after the last close callback
 */
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "exchange.h"
#include "intercept.h"
#include "log.h"
#include "options.h"
#include "policy.h"
#include "transport_tls.h"
#include "tunnel.h"

static const llhttp_settings_t request_settings;
static const struct exchange_client_ops conn_side;
static const struct transport_ops client_ops;
static void next_request(struct conn *c);
static void on_timer(struct deadline *d);
static void on_client_read(struct transport *t, ssize_t nread, struct chunk *ch, void *owner);
static void on_client_written(struct sender *s, int status);
static void conn_update_reading(struct conn *c);
static void conn_parse_requests(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_close(struct conn *c, enum close_how how);
static void conn_close_gracefully(struct conn *c);

/* ---------- small helpers ---------- */

struct conn *conn_next(struct conn *c)
{
    return c->next;
}

static const char *http_method_str(int method)
{
    return llhttp_method_name((llhttp_method_t)method);
}

/* ---------- reading from the client ---------- */

/* A `hang` ends the connection without an answer, so requests pipelined
 * behind it are never served: keep reading anyway, to see the client leave
 * (which ends a hang without a duration), and drop what it sends. */
static int hang_drops_input(const struct conn *c)
{
    return c->phase == PH_EXCHANGE && c->x.brk == RULES_BREAK_HANG && c->x.req == REQ_DONE;
}

static void conn_update_reading(struct conn *c)
{
    int want = c->phase != PH_CLOSED && (!c->in || hang_drops_input(c)) &&
               (c->phase != PH_TUNNEL || tunnel_wants_client(c->tunnel));
    if (want && !c->reading) {
        if (transport_read_start(c->tr) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        transport_read_stop(c->tr);
        c->reading = 0;
    }
}

static void conn_release_input(struct conn *c)
{
    if (c->in) {
        c->prev_last = c->in->len ? c->in->data[c->in->len - 1] : c->prev_last;
        chunk_unref(c->in);
        c->in = NULL;
        c->in_pos = 0;
    }
}

static void arm_timer(struct conn *c, uint64_t ms)
{
    deadline_set(&c->timer, ms);
}

static void conn_tunnel_active(struct conn *c)
{
    arm_timer(c, c->env->opts->tunnel_idle_timeout_ms);
}

/* A TLS client's handshake failed. A client that rejected our certificate
 * (tls_client) or spoke something else (plain HTTP: tls_handshake) is
 * recorded as one exchange with no codes, under its SNI name when it sent
 * one; a connection that closed without a byte (a port probe) is not. */
static void client_tls_failed(struct conn *c, const char *error)
{
    if (tls_transport_bytes_in(c->tr) > 0) {
        exchange_begin(c);
        const char *sni = tls_engine_sni(tls_transport_engine(c->tr));
        if (sni)
            str_copy(c->x.rec_host, sizeof c->x.rec_host, sni);
        exchange_set_error(&c->x, error);
        exchange_record(c);
    }
    LOG(LOG_DEBUG, "c%llu TLS handshake failed: %s", (unsigned long long)c->id,
        tls_engine_reason(tls_transport_engine(c->tr)));
    conn_close(c, CLOSE_NOW);
}

/* The client went away (EOF or error) or a write to it failed. */
static void client_gone(struct conn *c, int status)
{
    if (c->phase == PH_CLOSED)
        return;
    if (c->client_tls == CTLS_HANDSHAKE) {
        const char *error = transport_error_name(c->tr);
        client_tls_failed(c, error ? error : "tls_handshake");
        return;
    }
    int eof = status == UV_EOF;
    if (c->phase == PH_LINGER) {
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->phase == PH_TUNNEL) {
        tunnel_client_eof(c->tunnel, status);
        return;
    }
    if (c->phase == PH_HANDSHAKE) {
        /* The client refused our certificate (an alert: tls_client) or did
         * not speak TLS / left mid-handshake (tls_handshake): the CONNECT is
         * recorded as one exchange with that error and no codes. */
        const char *kind = transport_error_name(c->tr);
        exchange_set_error(&c->x, kind ? kind : "tls_handshake");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->phase == PH_EXCHANGE && eof && c->x.req == REQ_DONE && !c->x.client_keepalive &&
        c->req.minor == 0) {
        /* An HTTP/1.0 client that shut its side after the request (the
         * old "send, then half-close" style): answer, then close. */
        c->client_eof = 1;
        c->close_after = 1;
        return;
    }
    /* Any other client gone while its answer is pending gave up on it: the
     * upstream is released (closed) and the exchange recorded as such. */
    if (c->phase == PH_EXCHANGE)
        exchange_set_error(&c->x, "client_closed");
    conn_close(c, CLOSE_NOW);
}

static void on_client_read(struct transport *t, ssize_t nread, struct chunk *ch, void *owner)
{
    struct conn *c = owner;
    UNUSED(t);
    if (nread < 0) {
        client_gone(c, (int)nread);
        return;
    }
    if (c->phase == PH_LINGER || hang_drops_input(c)) {
        chunk_unref(ch);
        return;
    }
    if (c->phase == PH_TUNNEL) {
        conn_tunnel_active(c);
        tunnel_from_client(c->tunnel, ch, 0);
        chunk_unref(ch);
        return;
    }
    c->in = ch;
    c->in_pos = 0;
    conn_parse_requests(c);
}

/* ---------- the request parser callbacks ---------- */

static int on_req_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->phase == PH_IDLE) {
        c->phase = PH_HEAD;
        http_head_reset(&c->req);
        c->obs_fold = 0;
        if (c->nrequests > 0)
            arm_timer(c, c->env->opts->header_timeout_ms);
    }
    return 0;
}

static int on_req_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->req.target_len + len > URL_LIMIT) {
        c->parse_status = 414;
        return HPE_USER;
    }
    if (http_head_add_target(&c->req, at, len) != 0) {
        c->parse_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_req_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->phase != PH_HEAD)
        return 0; /* trailer fields are dropped */
    if (http_head_add_name(&c->req, at, len) != 0) {
        c->parse_status = 431;
        return HPE_USER;
    }
    return 0;
}

/* A value piece that starts right after a line feed is an obs-fold
 * continuation line (RFC 9112 §5.2): requests carrying one are refused. */
static int follows_lf(const struct chunk *in, const char *at, char prev_last)
{
    return (in && at > in->data) ? at[-1] == '\n' : prev_last == '\n';
}

static int on_req_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->phase != PH_HEAD)
        return 0;
    if (c->req.in_value && follows_lf(c->in, at, c->prev_last))
        c->obs_fold = 1;
    if (http_head_add_value(&c->req, at, len) != 0) {
        c->parse_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_req_value_done(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->phase == PH_HEAD)
        http_head_end_value(&c->req);
    return 0;
}

static int on_req_headers_done(llhttp_t *p)
{
    struct conn *c = p->data;
    c->event = EV_HEAD;
    return HPE_PAUSED;
}

static int on_req_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->x.req_body_bytes += len;
    uint64_t limit = c->env->opts->max_request_body;
    if (limit && c->x.req_body_bytes > limit) {
        /* A chunked body grew past --max-request-body: cut the exchange
         * (413 if no answer began) before this piece goes upstream. */
        exchange_set_error(&c->x, "body_too_large");
        c->parse_status = 413;
        return HPE_USER;
    }
    exchange_request_body(c, at, len);
    if (http_chunk_piece_done((p->flags & F_CHUNKED) != 0, p->content_length, at + len, c->in->data + c->in->len, &c->req_crlf) != 0) {
        c->parse_status = 400;
        return HPE_USER;
    }
    return 0;
}

static int on_req_done(llhttp_t *p)
{
    struct conn *c = p->data;
    c->event = EV_DONE;
    return HPE_PAUSED;
}

static const llhttp_settings_t request_settings = {
    .on_message_begin = on_req_begin,
    .on_url = on_req_url,
    .on_header_field = on_req_field,
    .on_header_value = on_req_value,
    .on_header_value_complete = on_req_value_done,
    .on_headers_complete = on_req_headers_done,
    .on_body = on_req_body,
    .on_message_complete = on_req_done,
};


/* ---------- closing ---------- */

static void closed_one(struct conn *c);

static void on_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void on_client_closed(struct transport *t, void *owner)
{
    UNUSED(t);
    closed_one(owner);
}

static void on_deadline_closed(uv_handle_t *h)
{
    struct deadline *d = h->data;
    closed_one(d->data);
}

static void closed_one(struct conn *c)
{
    if (--c->pending_closes > 0)
        return;
    struct conn_env *env = c->env;
    http_head_free(&c->req);
    http_head_free(&c->resp);
    exchange_free(c);
    free(c);
    env->hooks->closed(env->owner);
}

static void conn_close(struct conn *c, enum close_how how)
{
    if (c->phase == PH_CLOSED)
        return;
    exchange_close(c);
    if (c->tunnel) {
        tunnel_free(c->tunnel);
        c->tunnel = NULL;
    }
    exchange_release(c);
    conn_release_input(c);
    c->phase = PH_CLOSED;
    sender_discard(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->env->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->pending_closes = 4;
    transport_close(c->tr, how == CLOSE_RESET); /* on_client_closed follows */
    deadline_close(&c->timer, on_deadline_closed);
    deadline_close(&c->xtimer, on_deadline_closed);
    uv_close((uv_handle_t *)&c->ptimer, on_closed);
}

static void on_shutdown(struct transport *t, int status, void *arg)
{
    struct conn *c = arg;
    UNUSED(t);
    if (c->phase == PH_CLOSED)
        return;
    if (status != 0 || c->client_eof) {
        conn_close(c, CLOSE_NOW);
        return;
    }
    /* Drain what the client still sends, so that closing does not turn into
     * a reset that could destroy the answer in flight (RFC 9112 §9.6). */
    c->phase = PH_LINGER;
    conn_release_input(c);
    conn_update_reading(c);
    arm_timer(c, LINGER_MS);
}

/* Close after everything queued to the client is written. */
static void conn_close_gracefully(struct conn *c)
{
    if (c->phase == PH_CLOSED || c->phase == PH_LINGER)
        return;
    conn_flush(c);
    if (c->phase == PH_CLOSED)
        return;
    c->phase = PH_LINGER;
    if (transport_shutdown(c->tr, on_shutdown, c) != 0)
        conn_close(c, CLOSE_NOW);
}

void conn_abort(struct conn *c)
{
    exchange_set_error(&c->x, "shutdown");
    conn_close(c, CLOSE_NOW);
}

void conn_shutdown(struct conn *c)
{
    c->stop_requested = 1;
    if (c->phase == PH_IDLE || c->phase == PH_HANDSHAKE)
        conn_close(c, CLOSE_NOW);
    else if (c->phase == PH_EXCHANGE || c->phase == PH_HEAD)
        c->close_after = 1;
}

/* ---------- writing to the client ---------- */

static void conn_flush(struct conn *c)
{
    if (c->phase == PH_CLOSED)
        return;
    int rc = sender_flush(&c->out);
    if (rc != 0) {
        exchange_set_error(&c->x, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->x.up && c->resp_flow == FLOW_OPEN && c->out.inflight > WRITE_HIGH) {
        c->resp_flow = FLOW_HELD;
        exchange_client_held(c);
    }
}

static void on_client_written(struct sender *s, int status)
{
    struct conn *c = CONTAINER_OF(s, struct conn, out);
    if (c->phase == PH_CLOSED)
        return;
    if (c->phase == PH_TUNNEL) {
        tunnel_client_written(c->tunnel, status);
        return;
    }
    if (status != 0) {
        exchange_set_error(&c->x, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->resp_flow == FLOW_HELD && c->out.inflight < WRITE_LOW) {
        c->resp_flow = FLOW_OPEN;
        exchange_client_drained(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->phase == PH_EXCHANGE)
        exchange_maybe_finish(c);
}

/* Check the head llhttp accepted against what a proxy must refuse.
 * Returns 0, or the status to answer. */
static int validate_request(struct conn *c, const char **why)
{
    if (c->obs_fold) {
        *why = "obsolete line folding is not accepted";
        return 400;
    }
    return http_check_request(&c->req, (c->parser.flags & F_CHUNKED) != 0, why);
}

/* Answer a request the proxy will not forward: "CODE Reason\n" as DESIGN
 * says, the reason in an X-Statusproxy-Error header; the connection closes. */
static void refuse_request(struct conn *c, int status, const char *why)
{
    c->close_after = 1;
    c->x.sink = SINK_DISCARD;
    exchange_set_error(&c->x, "bad_request");
    if (why == policy_no_upstream_help) {
        char *body = xasprintf("%d %s\n%s", status, catalog_reason(status), why);
        exchange_answer(c, status, NULL, NULL, body);
        free(body);
        return;
    }
    char *extra = why ? xasprintf("X-Statusproxy-Error: %s\r\n", why) : NULL;
    exchange_answer(c, status, NULL, extra, NULL);
    free(extra);
}

static const llhttp_settings_t probe_settings;
struct probe_state {
    const char *end;
    int crlf;
};

/* Parse ahead, with a copy of the parser and no callbacks, over the body
 * bytes that arrived with the head: a malformed body (a bad chunk size, a
 * smuggling attempt) is refused before anything reaches the upstream. Body
 * bytes that arrive later are checked as they stream; what is forwarded is
 * always re-framed by us, so nothing malformed passes either way. */
static int body_ahead_ok(struct conn *c)
{
    if (!c->x.req_has_body || !c->in || c->in_pos >= c->in->len)
        return 1;
    struct probe_state st = {c->in->data + c->in->len, 0};
    llhttp_t probe = c->parser;
    probe.settings = (void *)&probe_settings;
    probe.data = &st;
    llhttp_errno_t err = llhttp_execute(&probe, c->in->data + c->in_pos, c->in->len - c->in_pos);
    return err == HPE_OK || err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE;
}

static int on_probe_body(llhttp_t *p, const char *at, size_t len)
{
    struct probe_state *st = p->data;
    return http_chunk_piece_done((p->flags & F_CHUNKED) != 0, p->content_length, at + len, st->end, &st->crlf) == 0 ? 0 : HPE_USER;
}

static int on_probe_done(llhttp_t *p)
{
    UNUSED(p);
    return HPE_PAUSED;
}

static const llhttp_settings_t probe_settings = {
    .on_body = on_probe_body,
    .on_message_complete = on_probe_done,
};

/* Where the request goes (policy_route): fills target, up_host/up_port,
 * rec_host, path. Returns 0 or the status to answer (with *why). */
static int route_request(struct conn *c, const char **why)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->req;
    size_t hlen = 0;
    const char *hv = http_head_get_known(h, HTTP_F_HOST, &hlen);
    struct policy_route r = {.target = &x->target, .up_host = x->up_host, .rec_host = x->rec_host};
    _Static_assert(sizeof x->up_host == POLICY_HOST_SIZE && sizeof x->rec_host == POLICY_HOST_SIZE,
                   "policy_route writes POLICY_HOST_SIZE bytes");
    int status = c->icpt == ICPT_OPEN
                     ? policy_route_intercepted(h->buf + h->target, h->target_len, hv, hlen,
                                                c->icpt_host, c->icpt_port, &r, why)
                     : policy_route(h->buf + h->target, h->target_len, x->is_connect, hv, hlen,
                                    c->env->opts, &r, why);
    if (status)
        return status;
    x->forward_mode = r.forward_mode;
    x->up_port = r.up_port;
    x->path = r.path;
    x->path_len = r.path_len;
    return 0;
}

/* TRACE reaching its last hop here (--allow-trace): echo the request as
 * message/http, minus the fields likely to hold credentials (RFC 9110 §9.3.8). */
static void answer_trace(struct conn *c)
{
    struct http_head *h = &c->req;
    struct sbuf b = {0};
    sbuf_puts(&b, "TRACE ");
    sbuf_append(&b, h->buf + h->target, h->target_len);
    sbuf_printf(&b, " HTTP/1.%d\r\n", h->minor);
    http_head_remove(h, "Authorization");
    http_head_remove(h, "Proxy-Authorization");
    http_head_remove(h, "Cookie");
    http_head_write(h, &b);
    sbuf_puts(&b, "\r\n");
    c->x.answer_ctype = "message/http";
    exchange_answer(c, 200, NULL, NULL, b.data);
    sbuf_free(&b);
}

/* Access, loops, authentication, Max-Forwards (policy_access). Returns 0
 * to go on, or answers itself and returns 1. */
static int check_policy(struct conn *c)
{
    struct exchange *x = &c->x;
    struct policy_request q = {
        .client_allowed = c->env->hooks->client_allowed(c->env->owner, (const struct sockaddr *)&c->peer),
        .req = &c->req,
        .via_token = c->env->via_token,
        .forward_mode = x->forward_mode,
        .is_connect = x->is_connect,
        .is_options = x->method == HTTP_OPTIONS,
        .is_trace = x->method == HTTP_TRACE,
        .up_host = x->up_host,
        .up_port = x->up_port,
    };
    struct policy_decision d;
    policy_access(&q, c->env->opts, &d);
    if (d.strip_proxy_auth)
        http_head_remove(&c->req, "Proxy-Authorization");
    if (d.strip_max_forwards)
        http_head_remove(&c->req, "Max-Forwards");
    if (d.max_forwards >= 0)
        x->max_forwards = d.max_forwards;
    switch (d.verdict) {
    case POLICY_GO:
        return 0;
    case POLICY_TRACE:
        answer_trace(c);
        return 1;
    case POLICY_ANSWER:
        break;
    }
    if (d.close)
        c->close_after = 1;
    if (d.error)
        exchange_set_error(&c->x, d.error);
    exchange_answer(c, d.code, NULL, d.extra_headers, NULL);
    return 1;
}


/* A CONNECT to an intercepted host passed every check: answer 200, then
 * wrap the client's transport in TLS with a certificate minted for its SNI
 * (else the CONNECT host). The CONNECT exchange stays open, unrecorded,
 * until the handshake ends: dropped when it succeeds (the requests inside
 * are recorded), recorded with tls_client/tls_handshake when it fails. */
static void start_interception(struct conn *c)
{
    static const char established[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
    struct exchange *x = &c->x;
    x->sink = SINK_DISCARD;
    sender_static(&c->out, established, sizeof established - 1);
    conn_flush(c);
    if (c->phase == PH_CLOSED)
        return;
    if (c->reading) {
        transport_read_stop(c->tr);
        c->reading = 0;
    }
    str_copy(c->icpt_host, sizeof c->icpt_host, x->up_host);
    c->icpt_port = x->up_port;
    c->icpt = ICPT_HANDSHAKE;
    c->phase = PH_HANDSHAKE;
    /* Over the transport the client already has: TCP, or TLS on --tls-listen. */
    struct transport *t = tls_transport_new(c->tr, c->env->loop,
                                            c->env->opts->intercept_server, x->up_host, 0,
                                            &client_ops, c);
    c->tr = t;
    c->out.tr = t;
    /* A ClientHello sent right behind the CONNECT head is TLS's, not ours. */
    if (c->in && c->in_pos < c->in->len)
        tls_transport_preload(t, c->in->data + c->in_pos, c->in->len - c->in_pos);
    conn_release_input(c);
    arm_timer(c, c->env->opts->header_timeout_ms);
    conn_update_reading(c);
}

/* The client completed the TLS handshake: HTTP starts over inside it. */
static void on_client_tls_ready(struct transport *t, void *owner)
{
    struct conn *c = owner;
    UNUSED(t);
    if (c->phase != PH_HANDSHAKE)
        return;
    c->icpt = ICPT_OPEN;
    exchange_drop(c);
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    c->head_bytes = 0;
    c->req_crlf = 0;
    c->prev_last = 0;
    next_request(c);
}

static void on_request_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->req;
    deadline_clear(&c->timer);
    exchange_begin(c);
    c->phase = PH_EXCHANGE;
    h->method = llhttp_get_method(&c->parser);
    h->major = llhttp_get_http_major(&c->parser);
    h->minor = llhttp_get_http_minor(&c->parser);
    x->method = h->method;
    str_copy(x->method_name, sizeof x->method_name, http_method_str(h->method));
    x->is_head = h->method == HTTP_HEAD;
    x->is_connect = h->method == HTTP_CONNECT;
    x->req_chunked = (c->parser.flags & F_CHUNKED) != 0;
    x->req_length = c->parser.content_length;
    x->req_has_body = x->req_chunked || ((c->parser.flags & F_CONTENT_LENGTH) && x->req_length > 0);
    x->client_keepalive = llhttp_should_keep_alive(&c->parser);
    x->expect_continue = http_head_has_token(h, "Expect", "100-continue");
    x->is_upgrade = !x->is_connect && c->parser.upgrade && http_head_get(h, "Upgrade", &(size_t){0});
    if (x->is_connect || x->is_upgrade)
        x->client_keepalive = 1;

    const char *why;
    int status = validate_request(c, &why);
    if (!status)
        status = route_request(c, &why);
    if (status) {
        c->close_after = 1;
        x->sink = SINK_DISCARD;
        refuse_request(c, status, why);
        return;
    }
    if (check_policy(c)) {
        x->sink = SINK_DISCARD;
        if (x->expect_continue && x->req_has_body)
            c->close_after = 1;
        return;
    }
    uint64_t limit = c->env->opts->max_request_body;
    if (limit && !x->req_chunked && x->req_length > limit) {
        exchange_set_error(&c->x, "body_too_large");
        refuse_request(c, 413, "request body over --max-request-body");
        return;
    }
    if (exchange_request_rules(c))
        return;
    if (!body_ahead_ok(c)) {
        refuse_request(c, 400, "malformed request body");
        return;
    }
    if (x->is_connect && c->env->opts->intercept_server && intercept_wanted(c->env->opts, x->up_host)) {
        start_interception(c);
        return;
    }
    exchange_forward(c);
}

/* ---------- the request side: parsing pump ---------- */

static int can_parse_request(struct conn *c)
{
    struct exchange *x = &c->x;
    switch (c->phase) {
    case PH_IDLE:
    case PH_HEAD:
        return 1;
    case PH_EXCHANGE:
        if (x->req == REQ_DONE)
            return 0;
        if (x->sink == SINK_DISCARD)
            return 1;
        return x->up && x->upc >= UPC_SENT && c->req_flow == FLOW_OPEN;
    default:
        return 0;
    }
}

static void on_request_done(struct conn *c)
{
    c->x.req = REQ_DONE;
    exchange_request_end(c);
}

/* Answer CODE to a connection that has no request under way (a head that
 * could not be parsed or did not come in time, a connection over the limit),
 * record it with ERROR, and close. */
static void answer_and_close(struct conn *c, int code, const char *error, const char *extra)
{
    exchange_begin(c);
    c->phase = PH_EXCHANGE;
    if (c->req.target_len)
        str_copy(c->x.method_name, sizeof c->x.method_name,
                 http_method_str(llhttp_get_method(&c->parser)));
    c->x.req = REQ_DONE;
    c->x.sink = SINK_DISCARD;
    c->close_after = 1;
    exchange_set_error(&c->x, error);
    exchange_answer(c, code, NULL, extra, NULL);
    exchange_maybe_finish(c);
}

static void request_parse_error(struct conn *c, llhttp_errno_t err)
{
    int status = c->parse_status ? c->parse_status : 400;
    LOG(LOG_DEBUG, "c%llu bad request: %s", (unsigned long long)c->id,
        llhttp_get_error_reason(&c->parser));
    if (c->phase == PH_EXCHANGE) {
        /* The body was malformed (e.g. a bad chunk size): the exchange
         * cannot be completed; cut it. */
        exchange_set_error(&c->x, "bad_request");
        if (c->x.resp == RESP_WAIT) {
            c->close_after = 1;
            c->x.sink = SINK_DISCARD;
            c->x.req = REQ_DONE;
            exchange_fail(c, status, "bad_request");
            return;
        }
        conn_close(c, CLOSE_NOW);
        return;
    }
    UNUSED(err);
    answer_and_close(c, status, "bad_request", NULL);
}

/* The head limit counts the head as it came on the wire, separators and
 * line ends included: many small fields must not pass where one large one
 * is refused. Answers 431 and returns 1 past the limit. */
static int head_too_large(struct conn *c, size_t used)
{
    c->head_bytes += (uint32_t)(used < REQ_HEAD_LIMIT ? used : REQ_HEAD_LIMIT + 1);
    if (c->head_bytes <= REQ_HEAD_LIMIT) {
        if (c->event == EV_HEAD)
            c->head_bytes = 0; /* the next head counts from zero */
        return 0;
    }
    c->head_bytes = 0;
    c->parse_status = 431;
    request_parse_error(c, HPE_USER);
    return 1;
}

/* Feed pending client bytes to the request parser while the state allows.
 * After a pause llhttp may have more to do without any new byte (a request
 * without a body completes right after its head), hence the "kick". */
static void conn_parse_requests(struct conn *c)
{
    for (;;) {
        size_t len = c->in ? c->in->len - c->in_pos : 0;
        if ((len == 0 && !c->kick) || !can_parse_request(c))
            break;
        const char *data = c->in ? c->in->data + c->in_pos : "";
        if (c->req_crlf && http_chunk_crlf(data, data + len, &c->req_crlf) != 0) {
            c->parse_status = 400;
            request_parse_error(c, HPE_USER);
            return;
        }
        c->kick = 0;
        c->event = EV_NONE;
        int in_head = c->phase == PH_IDLE || c->phase == PH_HEAD;
        size_t used;
        enum http_pump_step step = http_pump(&c->parser, data, len, &used);
        if (step == HTTP_PUMP_PAUSED) {
            /* At the end of a request the parser stays paused until the
             * answer is out (next_request resumes it). */
            c->kick = 1;
            if (c->event != EV_DONE)
                llhttp_resume(&c->parser);
        } else if (step == HTTP_PUMP_UPGRADE) {
            /* After an Upgrade request that was not upgraded, HTTP goes on. */
            llhttp_resume_after_upgrade(&c->parser);
            c->kick = 1;
        } else if (step == HTTP_PUMP_ERROR) {
            request_parse_error(c, llhttp_get_errno(&c->parser));
            return;
        }
        c->in_pos += used;
        c->x.bytes_in += used;
        if (in_head && head_too_large(c, used))
            return;
        if (c->event == EV_HEAD) {
            on_request_head(c);
            if (c->phase == PH_CLOSED)
                return;
        } else if (c->event == EV_DONE) {
            on_request_done(c);
            if (c->phase == PH_CLOSED || c->phase == PH_TUNNEL)
                return;
        }
    }
    if (c->phase == PH_CLOSED || c->phase == PH_TUNNEL || c->phase == PH_HANDSHAKE)
        return;
    if (c->phase == PH_EXCHANGE) {
        exchange_push_request(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->in && c->in_pos >= c->in->len)
        conn_release_input(c);
    conn_update_reading(c);
}

/* The exchange is over and the connection stays open: the next request
 * may already wait in the read chunk. */
static void next_request(struct conn *c)
{
    c->phase = PH_IDLE;
    llhttp_resume(&c->parser);
    c->kick = 1;
    arm_timer(c, c->env->opts->idle_timeout_ms);
    conn_parse_requests(c);
    if (c->phase != PH_CLOSED)
        conn_update_reading(c);
}

/* What the exchange and the relay may ask of the client connection. */
static const struct exchange_client_ops conn_side = {
    .flush = conn_flush,
    .close = conn_close,
    .close_gracefully = conn_close_gracefully,
    .update_reading = conn_update_reading,
    .parse_requests = conn_parse_requests,
    .release_input = conn_release_input,
    .tunnel_active = conn_tunnel_active,
    .next_request = next_request,
};

/* ---------- timers and accepting ---------- */

static void on_timer(struct deadline *d)
{
    struct conn *c = d->data;
    switch (c->phase) {
    case PH_IDLE:
        if (c->client_tls == CTLS_HANDSHAKE) {
            /* No handshake in time: there is no channel to answer 408 on. */
            client_tls_failed(c, "header_timeout");
            break;
        }
        if (c->nrequests > 0) {
            conn_close(c, CLOSE_NOW); /* idle keep-alive connection */
            break;
        }
        /* A new connection must send its head in time. */
        __attribute__((fallthrough));
    case PH_HEAD:
        /* The head did not arrive in time (RFC 9110 §15.5.9). */
        answer_and_close(c, 408, "header_timeout", NULL);
        break;
    case PH_LINGER:
        conn_close(c, CLOSE_NOW);
        break;
    case PH_HANDSHAKE:
        /* The intercepted client did not finish its handshake in time. */
        exchange_set_error(&c->x, "tls_handshake");
        conn_close(c, CLOSE_NOW);
        break;
    case PH_TUNNEL:
        /* No byte either way for --tunnel-idle-timeout (DESIGN §12). */
        exchange_set_error(&c->x, "tunnel_idle");
        conn_close(c, CLOSE_NOW);
        break;
    default:
        break;
    }
}

/* A TLS handshake with the client is done: an intercepted CONNECT's (HTTP
 * starts over inside it), or a --tls-listen client's, served like any other
 * from now on (reading started at accept goes on inside the transport). */
static void on_client_ready(struct transport *t, void *owner)
{
    struct conn *c = owner;
    if (c->phase == PH_HANDSHAKE) {
        on_client_tls_ready(t, owner);
        return;
    }
    c->client_tls = CTLS_OPEN;
    if (c->phase == PH_IDLE && c->over_limit)
        answer_and_close(c, 503, "max_connections", "Retry-After: 1\r\n");
}

static const struct transport_ops client_ops = {
    .on_ready = on_client_ready,
    .on_read = on_client_read,
    .on_closed = on_client_closed,
};

/* Put TLS over the accepted socket (a --tls-listen client): the client's
 * transport and its sender use the wrapper from now on. */
static void conn_start_tls(struct conn *c, struct tls_engine_config *tls)
{
    c->client_tls = CTLS_HANDSHAKE;
    c->tr = tls_transport_new(&c->tcp.base, c->env->loop, tls, NULL, 0, &client_ops, c);
    c->out.tr = c->tr;
}

int conn_accept(struct conn_env *env, uv_stream_t *server, struct tls_engine_config *tls)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->env = env;
    c->id = ++env->next_conn_id;
    tcp_transport_init(&c->tcp, env->loop, &client_ops, c);
    /* A TLS listener wraps this transport (conn_start_tls) and points c->tr
     * and c->out.tr at the wrapper; nothing below reads the socket directly. */
    c->tr = &c->tcp.base;
    deadline_init(env->loop, &c->timer, on_timer, c);
    exchange_init(c, env->loop);
    uv_timer_init(env->loop, &c->ptimer);
    c->ptimer.data = c;
    int rc = uv_accept(server, (uv_stream_t *)tcp_transport_handle(&c->tcp));
    /* From here on the connection is on the worker's list and closes
     * through conn_close, even when accepting failed. */
    c->next = env->conns;
    if (env->conns)
        env->conns->prev = c;
    env->conns = c;
    int total = env->hooks->opened(env->owner);
    http_head_init(&c->req, REQ_HEAD_LIMIT);
    http_head_init(&c->resp, RESP_HEAD_LIMIT);
    sender_init(&c->out, c->tr, on_client_written);
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    c->client = &conn_side;
    if (rc != 0) {
        conn_close(c, CLOSE_NOW);
        return rc;
    }
    rc = transport_peer(c->tr, &c->peer);
    if (rc != 0) {
        /* Reset before we got to it (ENOTCONN): no address to check the
         * access list against, and no one to answer. */
        conn_close(c, CLOSE_NOW);
        return rc;
    }
    if (c->peer.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&c->peer, c->peer_ip, sizeof c->peer_ip);
    else
        uv_ip4_name((struct sockaddr_in *)&c->peer, c->peer_ip, sizeof c->peer_ip);
    uv_tcp_nodelay(tcp_transport_handle(&c->tcp), 1);
    c->phase = PH_IDLE;
    /* The header timeout covers a TLS handshake too. */
    arm_timer(c, env->opts->header_timeout_ms);
    if (tls)
        conn_start_tls(c, tls);
    if (total > env->opts->max_connections) {
        /* Over the limit: a short answer instead of silence (over TLS, once
         * the handshake is done: on_client_ready). */
        c->over_limit = 1;
        if (!tls)
            answer_and_close(c, 503, "max_connections", "Retry-After: 1\r\n");
        return 0;
    }
    conn_update_reading(c);
    return 0;
}
