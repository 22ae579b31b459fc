/*
 * relay — the upstream side of an exchange: acquiring the upstream
 * connection, forwarding the request head and body, parsing the response,
 * response rules and the rewrites and faults they ask for (status, reason,
 * headers, delay, throttle, reset, truncate), re-framing the body for the
 * client, and turning CONNECT and 101 into tunnels.
 *
 * Bodies are relayed as llhttp hands them over: each piece is a reference
 * into the read chunk (see sender.h), re-framed for the other side
 * (Content-Length kept, chunked re-chunked, close-delimited turned into
 * chunked for HTTP/1.1 clients).
 */
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "conn_int.h"
#include "dest.h"
#include "fault.h"
#include "log.h"
#include "options.h"
#include "resp_head.h"
#include "tunnel.h"

/* Calls up go through what the owners handed down: c->client (conn.c) and
 * c->events (exchange.c); this file calls neither directly. */

static const llhttp_settings_t response_settings;
static const struct upstream_ops up_ops;
static void handle_upstream_eof(struct conn *c, int status);
static void send_response_head(struct conn *c);
static void release_response_head(struct conn *c);
static void on_response_done(struct conn *c);
static void send_body_to_client(struct conn *c, struct chunk *ch, const char *at, size_t len);
static void on_pace_tick(uv_timer_t *t);
static void on_ptimer_release(uv_timer_t *t);
static int retry_on_fresh_connection(struct conn *c);

/* check_dest's refusals, as on_up_connect statuses (outside libuv's codes). */
#define RELAY_EDEST_DENIED (-100001)
#define RELAY_EDEST_SELF (-100002)

/* The record's error word for a failed connect. */
static const char *uv_error_name(int status)
{
    switch (status) {
    case UV_ECONNREFUSED: return "connect_refused";
    case UV_ETIMEDOUT: return "connect_timeout";
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH: return "unreachable";
    case UV_ECONNRESET: return "upstream_reset";
    default: break;
    }
    if (status <= UV_EAI_ADDRFAMILY && status > UV_EAI_ADDRFAMILY - 100)
        return "dns"; /* the resolver's UV_EAI_* codes */
    return "connect_failed";
}

void relay_pace_clear(struct pace *pc)
{
    for (size_t i = 0; i < pc->n; i++)
        chunk_unref(pc->items[(pc->head + i) % pc->cap].c);
    pc->n = pc->head = 0;
    pc->bytes = 0;
}

void relay_detach(struct conn *c, int reusable)
{
    struct exchange *x = &c->x;
    if (c->up_in) {
        /* Bytes after the end of the answer: the connection is out of step. */
        if (c->up_pos < c->up_in->len)
            reusable = 0;
        chunk_unref(c->up_in);
        c->up_in = NULL;
    }
    if (x->up) {
        upstream_release(x->up, reusable);
        x->up = NULL;
    }
}

/* ---------- talking to the upstream ---------- */

/* The upstream must show progress within --response-timeout. */
static void arm_response_timeout(struct conn *c)
{
    deadline_set(&c->xtimer, c->env->opts->response_timeout_ms);
}

void relay_on_timeout(struct deadline *d)
{
    struct conn *c = d->data;
    if (c->phase != PH_EXCHANGE)
        return;
    if (c->resp_flow == FLOW_HELD) {
        /* The upstream is not read because the client stopped reading:
         * the client is the slow side, not the upstream. */
        c->events->fail(c, 504, "client_timeout");
        return;
    }
    if (c->up_in && c->up_pos < c->up_in->len) {
        /* The upstream's bytes wait for us (a throttle paces them out):
         * nobody is late. The pace timer drains them, and reading resumes. */
        arm_response_timeout(c);
        return;
    }
    c->events->fail(c, 504, c->x.upc >= UPC_SENT ? "timeout" : "connect_timeout");
}

/* The head to forward (resp_head_build_request), kept for one retry. */
static void build_request_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct resp_head_request q = {
        .method = x->method_name,
        .target = &x->target,
        .forward_mode = x->forward_mode,
        .up_host = x->up_host,
        .up_port = x->up_port,
        .is_upgrade = x->is_upgrade,
        .via = c->env->via_value,
        .max_forwards = x->max_forwards,
        .chunked = x->req_chunked,
        .has_length = (c->parser.flags & F_CONTENT_LENGTH) != 0,
        .length = x->req_length,
    };
    sbuf_reset(&x->req_head);
    resp_head_build_request(&q, &c->req, &x->req_head);
}

/* Body bytes AT[0..LEN) of chunk CH to S, as one chunk when CHUNKED (both
 * directions re-frame the same way). */
static void send_body_piece(struct sender *s, int chunked, struct chunk *ch, const char *at,
                            size_t len)
{
    if (chunked) {
        char line[HTTP_CHUNK_LINE_MAX];
        sender_copy(s, line, http_chunk_line(line, len));
        sender_ref(s, ch, at, len);
        sender_static(s, "\r\n", 2);
    } else {
        sender_ref(s, ch, at, len);
    }
}

void relay_forward_body(struct conn *c, const char *at, size_t len)
{
    send_body_piece(upstream_sender(c->x.up), c->x.req_chunked, c->in, at, len);
}

void relay_end_body(struct conn *c)
{
    sender_static(upstream_sender(c->x.up), HTTP_LAST_CHUNK, sizeof HTTP_LAST_CHUNK - 1);
}

void relay_flush_upstream(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->up)
        return;
    struct sender *s = upstream_sender(x->up);
    if (sender_flush(s) != 0) {
        if (!retry_on_fresh_connection(c))
            c->events->fail(c, 502, "upstream_closed");
        return;
    }
    if (s->inflight > WRITE_HIGH)
        c->req_flow = FLOW_HELD;
}

/* The upstream is ready: send the head, then let the body flow. */
static void send_request(struct conn *c)
{
    struct exchange *x = &c->x;
    struct sender *s = upstream_sender(x->up);
    x->upc = UPC_SENT;
    sender_copy(s, x->req_head.data, x->req_head.len);
    relay_flush_upstream(c);
    if (c->phase != PH_EXCHANGE)
        return;
    llhttp_init(&c->rparser, HTTP_RESPONSE, &response_settings);
    c->resp_crlf = 0;
    c->rparser.data = c;
    http_head_reset(&c->resp);
    arm_response_timeout(c);
    if (x->req == REQ_BODY) {
        c->client->parse_requests(c);
        if (c->phase == PH_CLOSED)
            return;
        c->client->update_reading(c);
    }
}

static void on_tunnel_reading(void *owner)
{
    struct conn *c = owner;
    c->client->update_reading(c);
}

static void on_tunnel_finished(void *owner, const char *error)
{
    struct conn *c = owner;
    if (error)
        exchange_set_error(&c->x, error);
    c->client->close(c, CLOSE_NOW);
}

static const struct tunnel_ops tunnel_ops = {
    .client_reading = on_tunnel_reading,
    .finished = on_tunnel_finished,
};

/* CONNECT succeeded or the upstream switched protocols: from now on bytes
 * flow both ways untouched. Bytes already read on either side go first. */
static void start_tunnel(struct conn *c)
{
    struct exchange *x = &c->x;
    deadline_clear(&c->xtimer);
    x->resp = RESP_DONE;
    c->phase = PH_TUNNEL;
    c->tunnel = tunnel_new(&c->out, x->up, &tunnel_ops, c);
    x->up = NULL; /* the tunnel owns it now */
    c->client->tunnel_active(c);
    c->client->flush(c);
    if (c->phase != PH_TUNNEL)
        return;
    if (c->up_in) {
        tunnel_from_upstream(c->tunnel, c->up_in, c->up_pos);
        chunk_unref(c->up_in);
        c->up_in = NULL;
    }
    if (c->phase != PH_TUNNEL)
        return;
    /* Reading from the upstream paused while those bytes waited (a delay
     * held the 101): the tunnel reads from now on. */
    tunnel_resume_upstream(c->tunnel);
    if (c->in)
        tunnel_from_client(c->tunnel, c->in, c->in_pos);
    c->client->release_input(c);
    if (c->phase == PH_TUNNEL)
        c->client->update_reading(c);
}

static void on_up_connect(struct upstream *u, int status, void *owner)
{
    struct conn *c = owner;
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || x->upc != UPC_CONNECTING || u != x->up) {
        /* Only the connection this exchange waits for may report; never
         * send a request on anything else. */
        LOG(LOG_WARN, "c%llu upstream connect reported in an unexpected state",
            (unsigned long long)c->id);
        if (c->phase == PH_EXCHANGE)
            c->events->fail(c, 502, "internal");
        return;
    }
    if (status == RELAY_EDEST_DENIED || status == RELAY_EDEST_SELF) {
        int self = status == RELAY_EDEST_SELF;
        LOG(LOG_INFO, "c%llu refused %s:%d: %s", (unsigned long long)c->id, x->up_host,
            x->up_port, self ? "it reaches this proxy's own listener" : "address in --deny-dest");
        c->events->fail(c, self ? 508 : 403, self ? "loop" : "dest_denied");
        return;
    }
    if (status == UPSTREAM_ETLS) {
        /* tls_handshake or tls_verify, as the TLS transport classified it. */
        const char *kind = transport_error_name(upstream_transport(u));
        LOG(LOG_INFO, "c%llu upstream %s:%d: TLS handshake failed (%s): %s",
            (unsigned long long)c->id, x->up_host, x->up_port, kind ? kind : "tls_handshake",
            upstream_tls_reason(u));
        c->events->fail(c, 502, kind ? kind : "tls_handshake");
        return;
    }
    if (status != 0) {
        LOG(LOG_DEBUG, "c%llu upstream %s:%d: %s", (unsigned long long)c->id, x->up_host,
            x->up_port, uv_strerror(status));
        c->events->fail(c, status == UPSTREAM_ETIMEDOUT ? 504 : 502, uv_error_name(status));
        return;
    }
    if (x->is_connect) {
        static const char established[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
        sender_static(&c->out, established, sizeof established - 1);
        x->final_code = 200;
        start_tunnel(c);
        return;
    }
    send_request(c);
}

/* The TLS client config for this exchange's upstream: --upstream https://
 * for gateway requests; forward-mode requests go as they were asked. */
static struct tls_engine_config *up_tls(const struct conn *c)
{
    if (c->icpt != ICPT_NONE)
        return c->env->opts->intercept_client; /* an intercepted CONNECT's origin */
    return c->x.forward_mode ? NULL : c->env->opts->upstream_tls;
}

void relay_start(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->upc != UPC_NONE) {
        LOG(LOG_WARN, "c%llu relay started twice", (unsigned long long)c->id);
        c->events->fail(c, 502, "internal");
        return;
    }
    if (!x->is_connect)
        build_request_head(c);
    int reused = 0;
    x->upc = UPC_CONNECTING;
    x->up = upstream_acquire(c->env->pool, up_tls(c), x->up_host, x->up_port,
                             x->is_connect || x->is_upgrade, &up_ops, c, &reused);
    x->up_origin = reused ? UPC_POOLED : UPC_FRESH;
    deadline_set(&c->xtimer,
                 u64_add_sat(c->env->opts->connect_timeout_ms, c->env->opts->response_timeout_ms));
    if (reused)
        send_request(c);
}

/* A reused connection failed before any response byte: the backend closed
 * it while it sat in the pool. A request without a body is sent once more on
 * a new connection (RFC 9112 §9.3.1 allows retrying idempotent requests;
 * a request that never reached the application is safe to send again). */
static int retry_on_fresh_connection(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->up_origin != UPC_POOLED || x->upc == UPC_ANSWERING || x->req_has_body || x->is_upgrade)
        return 0;
    x->up_origin = UPC_RETRIED;
    relay_detach(c, 0);
    x->upc = UPC_CONNECTING;
    int reused = 0; /* a fresh connection is asked for */
    x->up = upstream_acquire(c->env->pool, up_tls(c), x->up_host, x->up_port, 1, &up_ops, c,
                             &reused);
    return 1;
}

static void on_up_written(struct upstream *u, int status, void *owner)
{
    struct conn *c = owner;
    UNUSED(u);
    if (c->phase == PH_TUNNEL) {
        tunnel_upstream_written(c->tunnel, status);
        return;
    }
    if (c->phase != PH_EXCHANGE)
        return;
    if (status != 0) {
        if (retry_on_fresh_connection(c))
            return;
        c->events->fail(c, 502, "upstream_closed");
        return;
    }
    struct sender *s = upstream_sender(c->x.up);
    if (c->req_flow == FLOW_HELD && s->inflight < WRITE_LOW) {
        c->req_flow = FLOW_OPEN;
        if (c->x.req == REQ_BODY) {
            /* Progress on the request body counts as upstream activity. */
            arm_response_timeout(c);
            c->client->parse_requests(c);
            if (c->phase != PH_CLOSED)
                c->client->update_reading(c);
        }
    }
}

static void on_up_read(struct upstream *u, ssize_t nread, struct chunk *ch, void *owner)
{
    struct conn *c = owner;
    UNUSED(u);
    if (c->phase == PH_TUNNEL) {
        c->client->tunnel_active(c);
        if (nread < 0)
            tunnel_upstream_eof(c->tunnel, (int)nread);
        else
            tunnel_from_upstream(c->tunnel, ch, 0);
        chunk_unref(ch);
        return;
    }
    if (c->phase != PH_EXCHANGE) {
        chunk_unref(ch);
        return;
    }
    if (nread < 0) {
        if (c->up_in) {
            c->x.up_eof = (int)nread; /* after the pending bytes */
            return;
        }
        handle_upstream_eof(c, (int)nread);
        return;
    }
    if (c->up_in) {
        /* Reading pauses while bytes wait (relay_update_reading); should a
         * read slip through anyway, this exchange fails, not the process. */
        chunk_unref(ch);
        LOG(LOG_WARN, "c%llu upstream read while bytes were pending", (unsigned long long)c->id);
        c->events->fail(c, 502, "internal");
        return;
    }
    c->x.upc = UPC_ANSWERING;
    c->up_in = ch;
    c->up_pos = 0;
    arm_response_timeout(c);
    relay_parse_responses(c);
}

/* Forward mode (and interception): the resolved address must not be a --deny-dest block or one
 * of our own listeners (DESIGN §12). Gateway mode goes where --upstream says. */
static int check_dest(const struct sockaddr *sa, void *owner)
{
    struct conn *c = owner;
    if (!c->x.forward_mode && c->icpt == ICPT_NONE)
        return 0; /* an intercepted CONNECT's origin is checked like the CONNECT */
    switch (dest_check(c->env->dest, sa)) {
    case DEST_DENIED: return RELAY_EDEST_DENIED;
    case DEST_SELF: return RELAY_EDEST_SELF;
    default: return 0;
    }
}

static const struct upstream_ops up_ops = {
    .on_connect = on_up_connect,
    .on_read = on_up_read,
    .on_written = on_up_written,
    .check_addr = check_dest,
};

/* ---------- the response parser callbacks ---------- */

static int on_resp_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    http_head_reset(&c->resp);
    return 0;
}

static int on_resp_status(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    return http_head_add_reason(&c->resp, at, len) == 0 ? 0 : HPE_USER;
}

static int on_resp_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->x.resp == RESP_BODY)
        return 0; /* trailers are dropped */
    return http_head_add_name(&c->resp, at, len) == 0 ? 0 : HPE_USER;
}

static int on_resp_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->x.resp == RESP_BODY)
        return 0;
    /* An obs-fold in a response is replaced by the whitespace that follows
     * it (RFC 9112 §5.2): the pieces are simply joined. */
    return http_head_add_value(&c->resp, at, len) == 0 ? 0 : HPE_USER;
}

static int on_resp_value_done(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->x.resp != RESP_BODY)
        http_head_end_value(&c->resp);
    return 0;
}

static int on_resp_headers_done(llhttp_t *p)
{
    struct conn *c = p->data;
    c->revent |= EV_HEAD;
    int status = llhttp_get_status_code(p);
    /* llhttp leaves it to us to say which answers have no body whatever
     * their Content-Length says: those to HEAD, 1xx (but 101, which it
     * handles as an upgrade), 204 and 304 (RFC 9112 §6.3). The head is
     * then handled together with the end of the message. */
    if ((c->x.is_head && status >= 200) || (status / 100 == 1 && status != 101) ||
        status == 204 || status == 304) {
        return 1;
    }
    return HPE_PAUSED;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (!c->x.resp_discard)
        send_body_to_client(c, c->up_in, at, len);
    if (http_chunk_piece_done((p->flags & F_CHUNKED) != 0, p->content_length, at + len, c->up_in->data + c->up_in->len, &c->resp_crlf) != 0)
        return HPE_USER;
    return 0;
}

static int on_resp_done(llhttp_t *p)
{
    struct conn *c = p->data;
    c->revent |= EV_DONE;
    return HPE_PAUSED;
}

static const llhttp_settings_t response_settings = {
    .on_message_begin = on_resp_begin,
    .on_status = on_resp_status,
    .on_header_field = on_resp_field,
    .on_header_value = on_resp_value,
    .on_header_value_complete = on_resp_value_done,
    .on_headers_complete = on_resp_headers_done,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_done,
};

/* ---------- body to the client: framing, truncate, throttle ---------- */

static void emit_body(struct conn *c, struct chunk *ch, const char *at, size_t len)
{
    send_body_piece(&c->out, c->x.out_mode == OUT_CHUNKED, ch, at, len);
}

static void pace_push(struct pace *pc, struct chunk *ch, const char *at, size_t len)
{
    if (pc->n == pc->cap) {
        size_t ncap = pc->cap ? pc->cap * 2 : 16;
        struct piece *items = xmalloc(ncap * sizeof *items);
        for (size_t i = 0; i < pc->n; i++)
            items[i] = pc->items[(pc->head + i) % pc->cap];
        free(pc->items);
        pc->items = items;
        pc->cap = ncap;
        pc->head = 0;
    }
    pc->items[(pc->head + pc->n) % pc->cap] = (struct piece){chunk_ref(ch), at, len};
    pc->n++;
    pc->bytes += len;
}

static void truncate_reached(struct conn *c)
{
    /* The answer is cut here: the client sees a short body and a close. */
    struct exchange *x = &c->x;
    if (x->truncated)
        exchange_set_error(&c->x, "truncated");
    x->resp = RESP_DONE;
    x->msg = MSG_CUT;
    relay_pace_clear(&x->pace);
    deadline_clear(&c->xtimer);
    relay_detach(c, 0);
    c->events->record(c);
    c->client->close_gracefully(c);
}

static void send_body_to_client(struct conn *c, struct chunk *ch, const char *at, size_t len)
{
    struct exchange *x = &c->x;
    if (x->truncate_left == 0) {
        x->truncated |= len > 0;
        return;
    }
    if (x->truncate_left > 0 && (int64_t)len > x->truncate_left) {
        len = (size_t)x->truncate_left;
        x->truncated = 1;
    }
    if (x->truncate_left > 0)
        x->truncate_left -= (int64_t)len;
    if (x->bad_chunk && x->out_mode == OUT_CHUNKED) {
        /* One good chunk, then a broken size line; the caller closes. */
        emit_body(c, ch, at, len);
        sender_static(&c->out, FAULT_BAD_CHUNK_LINE, sizeof FAULT_BAD_CHUNK_LINE - 1);
        exchange_set_error(&c->x, "fault_bad_chunk");
        x->truncate_left = 0;
        return;
    }
    if (x->pace.bps) {
        pace_push(&x->pace, ch, at, len);
        if (!uv_is_active((uv_handle_t *)&c->ptimer)) {
            x->pace.last_us = time_mono_us();
            uv_timer_start(&c->ptimer, on_pace_tick, PACE_TICK_MS, PACE_TICK_MS);
        }
        return;
    }
    emit_body(c, ch, at, len);
}

/* Release as many paced bytes as the rate allows since the last tick. */
static void on_pace_tick(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    struct pace *pc = &x->pace;
    if (c->phase != PH_EXCHANGE || (x->resp != RESP_BODY && x->resp != RESP_DONE)) {
        uv_timer_stop(t); /* nothing of this exchange's body is paced any more */
        return;
    }
    uint64_t now = time_mono_us();
    pc->budget += (double)pc->bps * (double)(now - pc->last_us) / 1e6;
    pc->last_us = now;
    while (pc->n && pc->budget >= 1) {
        struct piece *pp = &pc->items[pc->head];
        size_t take = pp->n < (size_t)pc->budget ? pp->n : (size_t)pc->budget;
        emit_body(c, pp->c, pp->p, take);
        pp->p += take;
        pp->n -= take;
        pc->bytes -= take;
        pc->budget -= (double)take;
        if (pp->n == 0) {
            chunk_unref(pp->c);
            pc->head = (pc->head + 1) % pc->cap;
            pc->n--;
        }
    }
    if (pc->n == 0) {
        uv_timer_stop(&c->ptimer);
        pc->budget = 0;
    }
    c->client->flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->truncate_left == 0 && pc->n == 0) {
        truncate_reached(c);
        return;
    }
    if (pc->bytes < PACE_QUEUE_MAX) {
        relay_parse_responses(c);
        if (c->phase != PH_EXCHANGE)
            return;
    }
    if (pc->n == 0 && x->msg == MSG_COMPLETE) {
        if (x->out_mode == OUT_CHUNKED)
            sender_static(&c->out, HTTP_LAST_CHUNK, sizeof HTTP_LAST_CHUNK - 1);
        c->client->flush(c);
        c->events->maybe_finish(c);
    }
}

/* ---------- response head: rules, rewrite, framing ---------- */

/* Apply one rule's response-side actions on top of what is set. Returns 0,
 * or -1 when a set-header does not fit under the head limit. */
static int apply_actions(struct conn *c, const struct rule_actions *a, uint64_t delay_ms,
                         int *status, const char **reason, uint64_t *delay)
{
    struct exchange *x = &c->x;
    if (a->set_status)
        *status = a->set_status;
    if (a->reason)
        *reason = a->reason;
    for (size_t i = 0; i < a->n_del_headers; i++)
        http_head_remove(&c->resp, a->del_headers[i].name);
    for (size_t i = 0; i < a->n_set_headers; i++) {
        http_head_remove(&c->resp, a->set_headers[i].name);
        const char *n = a->set_headers[i].name, *v = a->set_headers[i].value;
        if (http_head_add_field(&c->resp, n, strlen(n), v, strlen(v)) != 0)
            return -1;
    }
    if (a->has_delay)
        *delay = delay_ms;
    if (a->throttle_bps)
        x->pace.bps = a->throttle_bps;
    if (a->truncate >= 0)
        x->truncate_left = a->truncate;
    if (a->reset)
        x->do_reset = 1;
    if (a->retry_after_auto) {
        char v[24];
        int n = snprintf(v, sizeof v, "%llu", (unsigned long long)x->retry_after_s);
        http_head_remove(&c->resp, "Retry-After");
        if (http_head_add_field(&c->resp, "Retry-After", 11, v, (size_t)n) != 0)
            return -1;
    }
    return 0;
}

/* The request rule's, then the response rule's actions. 0, or -1 as apply_actions. */
static int apply_rules(struct conn *c, int *status, const char **reason, uint64_t *delay)
{
    struct exchange *x = &c->x;
    if (x->has_req_v &&
        apply_actions(c, x->req_v.actions, x->req_v.delay_ms, status, reason, delay) != 0)
        return -1;
    if (x->has_resp_v &&
        apply_actions(c, x->resp_v.actions, x->resp_v.delay_ms, status, reason, delay) != 0)
        return -1;
    return 0;
}

/* Validate the upstream's head, run response rules, then send (or hold). */
static void on_response_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->resp;
    int status = llhttp_get_status_code(&c->rparser);
    h->status = status;
    h->major = llhttp_get_http_major(&c->rparser);
    h->minor = llhttp_get_http_minor(&c->rparser);
    x->upstream_code = status;
    if (status < 100 || status > 599) {
        /* Not a status at all: the client gets 502, the record keeps it. */
        c->events->fail(c, 502, "invalid_status");
        return;
    }
    if (h->major != 1) {
        c->events->fail(c, 502, "bad_response");
        return;
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (!http_is_token(h->buf + f->name, f->name_len) ||
            !http_is_field_value(h->buf + f->value, f->value_len)) {
            c->events->fail(c, 502, "bad_response");
            return;
        }
    }
    if (status < 200) {
        if (status == 101) {
            if (!x->is_upgrade) {
                c->events->fail(c, 502, "bad_response");
                return;
            }
            x->msg = MSG_BODY;
            send_response_head(c);
            return;
        }
        /* 1xx: relayed to HTTP/1.1 clients before the final answer; never
         * to HTTP/1.0 clients (RFC 9110 §15.2). Its end is owed. */
        x->msg = MSG_INTERIM;
        if (c->req.minor == 1) {
            struct sbuf out = {0};
            resp_head_interim(h, c->env->via_value, &out);
            sender_copy(&c->out, out.data, out.len);
            sbuf_free(&out);
            c->client->flush(c);
        }
        return;
    }
    x->msg = MSG_BODY;
    x->resp_keepalive = llhttp_should_keep_alive(&c->rparser);
    /* Response rules see the upstream's status. */
    if (x->rules && rules_has_phase(x->rules, RULES_RESPONSE)) {
        struct rules_exchange rx;
        c->events->rules_exchange(c, &rx, status);
        x->has_resp_v = rules_match(x->rules, RULES_RESPONSE, &rx, &x->resp_v);
        while (x->has_resp_v && !c->events->take_faults(c, &x->resp_v))
            x->has_resp_v = rules_match_next(x->rules, RULES_RESPONSE, &rx, &x->resp_v);
    }
    if (x->has_resp_v && (x->resp_v.actions->abort_code || x->resp_v.actions->brk)) {
        /* The upstream's answer is replaced; its connection is not reusable. */
        const struct rule_actions *a = x->resp_v.actions;
        relay_detach(c, 0);
        deadline_clear(&c->xtimer);
        x->abort_code = a->abort_code;
        x->abort_actions = a;
        x->delay_ms = x->resp_v.delay_ms;
        if (x->req != REQ_DONE)
            c->close_after = 1;
        c->events->replace_answer(c, x->delay_ms);
        return;
    }
    if (x->bad_chunk) /* without a length, the body goes chunked to HTTP/1.1 clients */
        http_head_remove(h, "Content-Length");
    send_response_head(c);
}

/* Status line, the kept fields, Via and the rule mark into out
 * (resp_head_put_fields); the Retry-After of an error answer is noted for
 * the report's retry view. */
static void put_head_fields(struct conn *c, struct sbuf *out, int status, const char *reason)
{
    struct exchange *x = &c->x;
    struct resp_head_fields f = {
        .up = &c->resp,
        .status = status,
        .reason = reason,
        .via = c->env->via_value,
        .mark_faults = c->env->opts->mark_faults,
        .mark = exchange_rule_name(x),
    };
    resp_head_put_fields(&f, out);
    if (status == 429 || status >= 500) /* for the report's retry view */
        x->retry_after_ms = http_retry_after_ms(out->data, out->len);
}

/* Choose how the body goes to this client (resp_head_put_framing), write
 * its framing fields and end the head; the exchange follows the choice. */
static void put_client_framing(struct conn *c, struct sbuf *out, int status, int upgrade,
                               const char *cl, int up_chunked)
{
    static const enum body_out modes[] = {
        [RESP_FRAMING_NONE] = OUT_NONE,
        [RESP_FRAMING_LENGTH] = OUT_LENGTH,
        [RESP_FRAMING_CHUNKED] = OUT_CHUNKED,
        [RESP_FRAMING_CLOSE] = OUT_CLOSE,
    };
    struct exchange *x = &c->x;
    struct resp_head_framing_in in = {
        .status = status,
        .up_status = c->resp.status,
        .is_head = x->is_head,
        .upgrade = upgrade,
        .cl = cl,
        .up_chunked = up_chunked,
        .client_minor = c->req.minor,
        .client_keepalive = x->client_keepalive,
        .close = exchange_must_close(c),
        .req_done = x->req == REQ_DONE,
    };
    struct resp_head_framing_out r;
    resp_head_put_framing(&in, out, &r);
    x->out_mode = modes[r.framing];
    if (r.discard)
        x->resp_discard = 1;
    if (r.close)
        c->close_after = 1;
    if (r.drop_request)
        x->sink = SINK_DISCARD;
}

/* Send the prepared head now, or hold it for a delay or until the reset. */
static void release_or_hold_head(struct conn *c, uint64_t delay)
{
    struct exchange *x = &c->x;
    if (delay == 0 && !x->do_reset) {
        release_response_head(c);
        return;
    }
    /* Held for a delay, or until the reset: the parser stays paused and the
     * upstream is not read meanwhile. */
    x->resp = RESP_HOLD;
    deadline_clear(&c->xtimer);
    uv_timer_start(&c->ptimer, on_ptimer_release, delay, 0);
}

/* Build and send the answer's head: the upstream's status and fields with
 * hop-by-hop fields dropped, rule actions applied, framing for this client. */
static void send_response_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->resp;
    int status = h->status;
    const char *reason = NULL;
    uint64_t delay = x->delay_ms;
    int upgrade = status == 101;
    char clbuf[24];
    const char *cl = resp_head_prepare(h, upgrade, clbuf, sizeof clbuf);
    int up_chunked = (c->rparser.flags & F_CHUNKED) != 0;
    if (apply_rules(c, &status, &reason, &delay) != 0) {
        /* The answer the rule asks for cannot be built: say so, never drop
         * the header silently. */
        c->events->fail(c, 502, "header_overflow");
        return;
    }
    x->final_code = status;
    struct sbuf *out = &x->held_head; /* kept by the connection: no malloc per answer */
    sbuf_reset(out);
    put_head_fields(c, out, status, reason);
    put_client_framing(c, out, status, upgrade, cl, up_chunked);
    release_or_hold_head(c, delay);
}

/* Send the prepared head; the body follows as it is parsed. */
static void release_response_head(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->do_reset) {
        sbuf_reset(&x->held_head);
        exchange_set_error(&c->x, "reset");
        x->final_code = -1;
        c->client->close(c, CLOSE_RESET);
        return;
    }
    if (x->slow_head_ms) {
        /* slow-head: the head trickles out, then this runs again for the rest. */
        x->resp = RESP_SLOW;
        x->slow_len = x->held_head.len;
        deadline_clear(&c->xtimer);
        c->events->slow_head(c, on_ptimer_release);
        return;
    }
    sender_copy(&c->out, x->held_head.data, x->held_head.len);
    sbuf_reset(&x->held_head);
    x->resp = RESP_BODY;
    if (c->resp.status == 101)
        start_tunnel(c);
}

static void on_ptimer_release(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->phase != PH_EXCHANGE || (c->x.resp != RESP_HOLD && c->x.resp != RESP_SLOW))
        return;
    release_response_head(c);
    if (c->phase != PH_EXCHANGE || c->x.resp == RESP_HOLD || c->x.resp == RESP_SLOW)
        return;
    if (c->x.msg == MSG_COMPLETE) {
        /* The message ended while its head was held. */
        on_response_done(c);
        return;
    }
    arm_response_timeout(c);
    relay_parse_responses(c);
}

/* The upstream's message is complete (or its body, when close-delimited, ended). */
static void on_response_done(struct conn *c)
{
    struct exchange *x = &c->x;
    deadline_clear(&c->xtimer);
    if (x->bad_chunk && x->truncate_left == 0) {
        truncate_reached(c); /* the broken framing is out: no last chunk */
        return;
    }
    x->msg = MSG_COMPLETE;
    if (x->pace.n) {
        x->resp = RESP_DONE;
        return; /* the pace timer finishes the answer */
    }
    if (x->out_mode == OUT_CHUNKED)
        sender_static(&c->out, HTTP_LAST_CHUNK, sizeof HTTP_LAST_CHUNK - 1);
    x->resp = RESP_DONE;
    c->client->flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->out_mode == OUT_CLOSE)
        c->close_after = 1;
    c->events->maybe_finish(c);
}

static int can_parse_response(struct conn *c)
{
    struct exchange *x = &c->x;
    return c->phase == PH_EXCHANGE && x->up && x->resp != RESP_HOLD && x->resp != RESP_SLOW &&
           x->resp != RESP_DONE && c->resp_flow == FLOW_OPEN && x->pace.bytes < PACE_QUEUE_MAX && x->truncate_left != 0;
}

static void after_parsing(struct conn *c);

/* Feed pending upstream bytes to the response parser. */
void relay_parse_responses(struct conn *c)
{
    struct exchange *x = &c->x;
    /* Finishing an exchange may start the next pipelined one on the same
     * struct: what this call parsed belongs to the first, so it stops. */
    int exchange = c->nrequests;
    for (;;) {
        size_t len = c->up_in ? c->up_in->len - c->up_pos : 0;
        if ((len == 0 && !c->up_kick) || !can_parse_response(c))
            break;
        const char *data = c->up_in ? c->up_in->data + c->up_pos : "";
        if (c->resp_crlf && http_chunk_crlf(data, data + len, &c->resp_crlf) != 0) {
            c->events->fail(c, 502, "bad_response");
            return;
        }
        c->up_kick = 0;
        c->revent = 0;
        size_t used;
        enum http_pump_step step = http_pump(&c->rparser, data, len, &used);
        if (step == HTTP_PUMP_PAUSED || step == HTTP_PUMP_UPGRADE) {
            c->up_kick = 1;
            if (step == HTTP_PUMP_PAUSED) /* after 101 the tunnel takes over */
                llhttp_resume(&c->rparser);
        } else if (step == HTTP_PUMP_ERROR) {
            LOG(LOG_DEBUG, "c%llu bad response from %s:%d: %s", (unsigned long long)c->id,
                x->up_host, x->up_port, llhttp_get_error_reason(&c->rparser));
            c->events->fail(c, 502, "bad_response");
            return;
        }
        c->up_pos += used;
        if (c->revent & EV_HEAD) {
            on_response_head(c);
            if (c->phase != PH_EXCHANGE || c->nrequests != exchange)
                return;
        }
        if (x->truncated && !x->pace.n) {
            /* Cut before the message's end, even when that end came in the
             * same read: the client must not see a complete answer. */
            c->client->flush(c);
            if (c->phase == PH_EXCHANGE)
                truncate_reached(c);
            return;
        }
        if (c->revent & EV_DONE) {
            if (x->msg == MSG_INTERIM) {
                x->msg = MSG_HEAD;
                continue;
            }
            if (x->resp == RESP_HOLD || x->resp == RESP_SLOW) {
                x->msg = MSG_COMPLETE; /* finished once the held head is out */
                break;
            }
            if (c->resp.status == 101)
                return; /* the tunnel has taken over */
            on_response_done(c);
            if (c->phase != PH_EXCHANGE || c->nrequests != exchange)
                return;
            if (x->resp == RESP_DONE)
                break;
        }
        if (x->truncate_left == 0 && !x->pace.n) {
            c->client->flush(c);
            if (c->phase == PH_EXCHANGE)
                truncate_reached(c);
            return;
        }
    }
    if (c->phase == PH_EXCHANGE)
        after_parsing(c);
}

/* Parsing stopped: send what it produced, let go of a used-up read chunk
 * (then a pending EOF counts), and read again if the state allows. */
static void after_parsing(struct conn *c)
{
    struct exchange *x = &c->x;
    c->client->flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (c->up_in && (c->up_pos >= c->up_in->len || x->resp == RESP_DONE)) {
        c->up_prev_last = c->up_in->len ? c->up_in->data[c->up_in->len - 1] : c->up_prev_last;
        chunk_unref(c->up_in);
        c->up_in = NULL;
        if (x->up_eof && x->resp != RESP_DONE) {
            int st = x->up_eof;
            x->up_eof = 0;
            handle_upstream_eof(c, st);
            return;
        }
    }
    relay_update_reading(c);
}

/* Read from the upstream only while nothing read waits to be parsed and the
 * client keeps up: what one exchange holds stays within one chunk plus what
 * is in flight to the client (a delay or throttle holds the parser too). */
void relay_update_reading(struct conn *c)
{
    if (!c->x.up)
        return;
    if (!c->up_in && c->resp_flow == FLOW_OPEN)
        upstream_resume(c->x.up);
    else
        upstream_pause(c->x.up);
}

/* The upstream closed or failed while we were reading from it. */
static void handle_upstream_eof(struct conn *c, int status)
{
    struct exchange *x = &c->x;
    if (x->resp == RESP_DONE)
        return;
    if (status == UV_EOF && x->resp == RESP_BODY) {
        /* A close-delimited body ends here; any other framing was cut short. */
        if (llhttp_finish(&c->rparser) == HPE_OK && (c->revent & EV_DONE)) {
            on_response_done(c);
            return;
        }
        if (llhttp_message_needs_eof(&c->rparser)) {
            on_response_done(c);
            return;
        }
    }
    if (x->upc != UPC_ANSWERING && retry_on_fresh_connection(c))
        return;
    const char *error = status == UV_EOF ? "upstream_closed" : "upstream_reset";
    if (exchange_head_sent(x)) {
        /* Mid-body: the client must see an incomplete answer, never a
         * clean short one: close without the terminating chunk. */
        exchange_set_error(&c->x, error);
        x->resp = RESP_DONE;
        relay_detach(c, 0);
        c->client->flush(c);
        if (c->phase == PH_CLOSED)
            return;
        c->events->record(c);
        c->client->close_gracefully(c);
        return;
    }
    c->events->fail(c, 502, x->upc == UPC_ANSWERING ? "bad_response" : error);
}