/*
 * conn — the client side of a connection: reading and validating requests,
 * routing them, policy (access, loops, proxy authentication, Max-Forwards),
 * request rules and fault headers, answers the proxy writes itself,
 * pipelining, keep-alive, timeouts, closing, and recording each exchange.
 * The upstream side of an exchange is in relay.c.
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
 *   PH_LINGER   answer sent, write side shut; draining input before close
 *   PH_CLOSED   handles are closing; freed after the last close callback
 */
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "conn_int.h"
#include "fault.h"
#include "log.h"
#include "policy.h"
#include "resp_head.h"
#include "server.h"
#include "tunnel.h"
#include "units.h"

static const llhttp_settings_t request_settings;
static void on_timer(struct deadline *d);
static void on_client_read(struct transport *t, ssize_t nread, struct chunk *ch, void *owner);

/* ---------- small helpers ---------- */

struct conn *conn_next(struct conn *c)
{
    return c->next;
}

static const char *http_method_str(int method)
{
    return llhttp_method_name((llhttp_method_t)method);
}

void conn_set_error(struct conn *c, const char *error)
{
    if (!c->x.error[0])
        str_copy(c->x.error, sizeof c->x.error, error);
}

/* ---------- reading from the client ---------- */

/* A `hang` ends the connection without an answer, so requests pipelined
 * behind it are never served: keep reading anyway, to see the client leave
 * (which ends a hang without a duration), and drop what it sends. */
static int hang_drops_input(const struct conn *c)
{
    return c->phase == PH_EXCHANGE && c->x.brk == RULES_BREAK_HANG && c->x.req == REQ_DONE;
}

void conn_update_reading(struct conn *c)
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

void conn_release_input(struct conn *c)
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

void conn_tunnel_active(struct conn *c)
{
    arm_timer(c, c->w->opts->tunnel_idle_timeout_ms);
}

/* The client went away (EOF or error) or a write to it failed. */
static void client_gone(struct conn *c, int status)
{
    if (c->phase == PH_CLOSED)
        return;
    int eof = status == UV_EOF;
    if (c->phase == PH_LINGER) {
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->phase == PH_TUNNEL) {
        tunnel_client_eof(c->tunnel, status);
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
        conn_set_error(c, "client_closed");
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
            arm_timer(c, c->w->opts->header_timeout_ms);
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
    uint64_t limit = c->w->opts->max_request_body;
    if (limit && c->x.req_body_bytes > limit) {
        /* A chunked body grew past --max-request-body: cut the exchange
         * (413 if no answer began) before this piece goes upstream. */
        conn_set_error(c, "body_too_large");
        c->parse_status = 413;
        return HPE_USER;
    }
    if (c->x.sink == SINK_UPSTREAM && c->x.up)
        relay_forward_body(c, at, len);
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

/* ---------- synthesized answers ---------- */

/* Does this answer end the connection? HTTP/1.0 clients keep it only when they asked. */
int conn_must_close(const struct conn *c)
{
    return c->close_after || !c->x.client_keepalive || c->w->stopping || c->client_eof;
}

void conn_put_connection_header(struct conn *c, struct sbuf *h)
{
    resp_head_put_connection(h, conn_must_close(c), c->x.client_keepalive, c->req.minor);
}

/* bad-chunk on an answer of ours: B becomes one chunk followed by a broken
 * chunk-size line; the connection closes after it. */
static void break_chunked_body(struct conn *c, struct sbuf *b)
{
    struct sbuf out = {0};
    sbuf_printf(&out, "%zx\r\n", b->len);
    sbuf_append(&out, b->data, b->len);
    sbuf_puts(&out, "\r\n" FAULT_BAD_CHUNK_LINE);
    sbuf_free(b);
    *b = out;
    c->close_after = 1;
    conn_set_error(c, "fault_bad_chunk");
}

static void on_slow_answer_done(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE)
        return;
    sender_copy(&c->out, x->held_head.data, x->held_head.len);
    sbuf_reset(&x->held_head);
    x->resp = RESP_DONE;
    conn_flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->req != REQ_DONE)
        conn_parse_requests(c);
    conn_maybe_finish(c);
}

/* Answer the current request ourselves: CODE with the body of DESIGN §3
 * ("CODE Reason\n", text/plain) unless BODY or the rule's body says
 * otherwise. A answers for a rule (reason, body, headers) or is NULL.
 * EXTRA_HEADERS are complete "Name: value\r\n" lines or NULL. */
void conn_answer(struct conn *c, int code, const struct rule_actions *a, const char *extra_headers,
                   const char *body)
{
    struct exchange *x = &c->x;
    const char *reason = (a && a->reason) ? a->reason : catalog_reason(code);
    struct sbuf b = {0}, h = {0};
    const char *ctype = x->answer_ctype ? x->answer_ctype : "text/plain";
    if (a && a->body) {
        sbuf_append(&b, a->body, a->body_len);
        if (a->body_is_json)
            ctype = "application/json";
    } else if (body) {
        sbuf_puts(&b, body);
    } else {
        sbuf_printf(&b, "%d %s\n", code, reason);
    }
    enum catalog_body kind = catalog_body(code);
    int body_out = kind == CATALOG_BODY_ALLOWED && !x->is_head;
    int broken = body_out && x->bad_chunk && c->req.minor == 1;
    sbuf_printf(&h, "HTTP/1.1 %d %s\r\n", code, reason);
    if (broken) {
        sbuf_printf(&h, "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n", ctype);
        break_chunked_body(c, &b);
    } else if (kind == CATALOG_BODY_ALLOWED) {
        sbuf_printf(&h, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, b.len);
    } else if (kind == CATALOG_BODY_EMPTY) {
        sbuf_puts(&h, "Content-Length: 0\r\n");
    }
    if (extra_headers)
        sbuf_puts(&h, extra_headers);
    if (a) {
        for (size_t i = 0; i < a->n_set_headers; i++)
            sbuf_printf(&h, "%s: %s\r\n", a->set_headers[i].name, a->set_headers[i].value);
        if (a->retry_after_auto)
            sbuf_printf(&h, "Retry-After: %llu\r\n", (unsigned long long)x->retry_after_s);
    }
    const char *rule = x->has_resp_v ? rule_name(x->resp_v.rule)
                       : x->has_req_v ? rule_name(x->req_v.rule)
                                      : x->fault_rule;
    if (c->w->opts->mark_faults && rule)
        sbuf_printf(&h, "X-Statusproxy-Rule: %s\r\n", rule);
    conn_put_connection_header(c, &h);
    sbuf_puts(&h, "\r\n");
    if (code == 429 || code >= 500) /* for the report's retry view */
        x->retry_after_ms = http_retry_after_ms(h.data, h.len);
    size_t head_len = h.len;
    if (body_out)
        sbuf_append(&h, b.data, b.len);
    x->final_code = code;
    x->resp_head_sent = 1;
    if (conn_must_close(c))
        c->close_after = 1;
    if (x->slow_head_ms) {
        /* slow-head: the head goes out bit by bit, then the rest. */
        sbuf_free(&x->held_head);
        x->held_head = h;
        x->slow_len = head_len;
        x->resp = RESP_HOLD;
        sbuf_free(&b);
        conn_slow_head(c, on_slow_answer_done);
        return;
    }
    sender_copy(&c->out, h.data, h.len);
    sbuf_free(&h);
    sbuf_free(&b);
    x->resp = RESP_DONE;
    conn_flush(c);
}

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
    struct worker *w = c->w;
    http_head_free(&c->req);
    http_head_free(&c->resp);
    sbuf_free(&c->x.req_head);
    sbuf_free(&c->x.held_head);
    free(c->x.pace.items);
    free(c);
    worker_conn_closed(w);
}

void conn_close(struct conn *c, enum close_how how)
{
    if (c->phase == PH_CLOSED)
        return;
    if (c->x.active) {
        if (!c->x.error[0] && c->x.resp != RESP_DONE)
            conn_set_error(c, "client_closed");
        conn_record(c);
    }
    if (c->tunnel) {
        tunnel_free(c->tunnel);
        c->tunnel = NULL;
    }
    relay_detach(c, 0);
    conn_release_input(c);
    relay_pace_clear(&c->x.pace);
    rules_unref(c->x.rules);
    c->x.rules = NULL;
    c->phase = PH_CLOSED;
    sender_discard(&c->out);
    struct worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
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
void conn_close_gracefully(struct conn *c)
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
    conn_set_error(c, "shutdown");
    conn_close(c, CLOSE_NOW);
}

void conn_shutdown(struct conn *c)
{
    c->stop_requested = 1;
    if (c->phase == PH_IDLE)
        conn_close(c, CLOSE_NOW);
    else if (c->phase == PH_EXCHANGE || c->phase == PH_HEAD)
        c->close_after = 1;
}

/* ---------- writing to the client ---------- */

void conn_flush(struct conn *c)
{
    if (c->phase == PH_CLOSED)
        return;
    int rc = sender_flush(&c->out);
    if (rc != 0) {
        conn_set_error(c, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->x.up && !c->hold_upstream && c->out.inflight > WRITE_HIGH) {
        c->hold_upstream = 1;
        relay_update_reading(c);
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
        conn_set_error(c, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->hold_upstream && c->out.inflight < WRITE_LOW) {
        c->hold_upstream = 0;
        relay_parse_responses(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->phase == PH_EXCHANGE)
        conn_maybe_finish(c);
}

/* ---------- recording ---------- */

void conn_record(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->active)
        return;
    x->active = 0;
    if (x->fault_slot) {
        x->fault_slot = 0;
        fault_release();
    }
    const struct rule *rule = x->has_resp_v ? x->resp_v.rule : x->has_req_v ? x->req_v.rule : NULL;
    const char *rname = rule ? rule_name(rule) : x->fault_rule ? x->fault_rule : "";
    const char *action = rule ? rule_actions_text(rule) : x->fault_rule ? x->fault_action : "";
    const struct audit_entry e = {
        .start_ms = x->start_ms,
        .duration_us = (int64_t)(time_mono_us() - x->start_us),
        .upstream_code = x->upstream_code,
        .final_code = x->final_code,
        .bytes_in = x->bytes_in + (c->tunnel ? tunnel_client_bytes(c->tunnel) : 0),
        .bytes_out = c->out.total + sender_queued(&c->out) - x->out_start,
        .client = AUDIT_TEXT(c->peer_ip),
        .method = AUDIT_TEXT(x->method_name),
        .host = AUDIT_TEXT(x->rec_host),
        .path = {x->path ? x->path : "", x->path ? x->path_len : 0},
        .rule = AUDIT_TEXT(rname),
        .action = AUDIT_TEXT(action),
        .error = AUDIT_TEXT(x->error),
        .retry_after_ms = x->retry_after_ms,
        .scheme = x->is_connect ? AUDIT_SCHEME_TUNNEL : AUDIT_SCHEME_HTTP,
    };
    worker_record(c->w, &e, x->has_req_v && x->has_resp_v ? rule_name(x->req_v.rule) : NULL);
}

/* ---------- exchange lifecycle ---------- */

static void exchange_begin(struct conn *c)
{
    struct exchange *x = &c->x;
    /* The head buffers and the pace queue keep their memory across exchanges. */
    struct sbuf keep = x->req_head, keep_held = x->held_head;
    struct pace pace = x->pace;
    uint64_t bytes_in = x->bytes_in;
    memset(x, 0, sizeof *x);
    sbuf_reset(&keep);
    sbuf_reset(&keep_held);
    x->req_head = keep;
    x->held_head = keep_held;
    pace.n = pace.head = pace.bytes = 0;
    pace.budget = 0;
    pace.bps = 0;
    x->pace = pace;
    x->active = 1;
    x->bytes_in = bytes_in;
    x->start_us = time_mono_us();
    x->start_ms = time_now_ms();
    x->out_start = c->out.total + sender_queued(&c->out);
    x->upstream_code = -1;
    x->final_code = -1;
    x->truncate_left = -1;
    x->max_forwards = -1;
    x->resp = RESP_WAIT;
    x->req = REQ_BODY;
    x->sink = SINK_UPSTREAM;
    if (c->w->rules)
        x->rules = rules_ref(c->w->rules);
}

/* The exchange is over when the answer is complete and the request was read
 * (or will not be: the connection closes). Then record it and move on to the
 * next request, which may already wait in the read chunk. */
void conn_maybe_finish(struct conn *c)
{
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || !x->active)
        return;
    if (x->resp != RESP_DONE || x->pace.n || (x->req != REQ_DONE && !c->close_after))
        return;
    deadline_clear(&c->xtimer);
    uv_timer_stop(&c->ptimer);
    int reusable = x->resp_keepalive && x->req == REQ_DONE && x->sink == SINK_UPSTREAM &&
                   !x->error[0] && x->resp_complete;
    relay_detach(c, reusable);
    conn_record(c);
    rules_unref(x->rules);
    x->rules = NULL;
    x->bytes_in = 0;
    c->nrequests++;
    /* RFC 9112 §9.6: after an answer that said "Connection: close" (the
     * client asked, or it is HTTP/1.0 without keep-alive), close. */
    if (c->close_after || c->stop_requested || !x->client_keepalive || c->client_eof) {
        conn_close_gracefully(c);
        return;
    }
    c->phase = PH_IDLE;
    llhttp_resume(&c->parser);
    c->kick = 1;
    arm_timer(c, c->w->opts->idle_timeout_ms);
    conn_parse_requests(c);
    if (c->phase != PH_CLOSED)
        conn_update_reading(c);
}

/* The exchange cannot go on: answer CODE if nothing was sent yet, else cut
 * the client's connection so that it sees an incomplete answer. */
void conn_fail(struct conn *c, int code, const char *error)
{
    struct exchange *x = &c->x;
    conn_set_error(c, error);
    deadline_clear(&c->xtimer);
    relay_detach(c, 0);
    if (x->resp_head_sent) {
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (x->req != REQ_DONE) {
        /* The rest of the request body has nowhere to go. */
        x->sink = SINK_DISCARD;
        if (x->expect_continue || x->req_has_body)
            c->close_after = 1;
    }
    conn_answer(c, code, NULL, NULL, NULL);
    if (c->phase != PH_EXCHANGE)
        return;
    /* The parser may still owe the request's end (or body bytes to drop);
     * drive it, which also finishes the exchange and moves on. */
    if (x->req != REQ_DONE)
        conn_parse_requests(c);
    conn_maybe_finish(c);
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
    conn_set_error(c, "bad_request");
    if (why == policy_no_upstream_help) {
        char *body = xasprintf("%d %s\n%s", status, catalog_reason(status), why);
        conn_answer(c, status, NULL, NULL, body);
        free(body);
        return;
    }
    char *extra = why ? xasprintf("X-Statusproxy-Error: %s\r\n", why) : NULL;
    conn_answer(c, status, NULL, extra, NULL);
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
    const char *hv = http_head_get(h, "Host", &hlen);
    struct policy_route r = {.target = &x->target, .up_host = x->up_host, .rec_host = x->rec_host};
    _Static_assert(sizeof x->up_host == POLICY_HOST_SIZE && sizeof x->rec_host == POLICY_HOST_SIZE,
                   "policy_route writes POLICY_HOST_SIZE bytes");
    int status = policy_route(h->buf + h->target, h->target_len, x->is_connect, hv, hlen,
                              c->w->opts, &r, why);
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
    conn_answer(c, 200, NULL, NULL, b.data);
    sbuf_free(&b);
}

/* Access, loops, authentication, Max-Forwards (policy_access). Returns 0
 * to go on, or answers itself and returns 1. */
static int check_policy(struct conn *c)
{
    struct exchange *x = &c->x;
    struct policy_request q = {
        .client_allowed = worker_client_allowed(c->w, (const struct sockaddr *)&c->peer),
        .req = &c->req,
        .via_token = c->w->via_token,
        .forward_mode = x->forward_mode,
        .is_connect = x->is_connect,
        .is_options = x->method == HTTP_OPTIONS,
        .is_trace = x->method == HTTP_TRACE,
        .up_host = x->up_host,
        .up_port = x->up_port,
    };
    struct policy_decision d;
    policy_access(&q, c->w->opts, &d);
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
        conn_set_error(c, d.error);
    conn_answer(c, d.code, NULL, d.extra_headers, NULL);
    return 1;
}

/* X-Statusproxy-Abort / X-Statusproxy-Delay (only with --fault-headers). */
static void read_fault_headers(struct conn *c)
{
    struct exchange *x = &c->x;
    size_t len;
    const char *v = http_head_get(&c->req, "X-Statusproxy-Abort", &len);
    if (v && len == 3) {
        int code = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
        if (v[0] >= '2' && v[0] <= '5' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' &&
            v[2] <= '9') {
            x->abort_code = code;
            x->fault_rule = "fault-header";
            snprintf(x->fault_action, sizeof x->fault_action, "abort %d", code);
        }
    }
    v = http_head_get(&c->req, "X-Statusproxy-Delay", &len);
    uint64_t ms;
    char d[48];
    if (v && fault_header_delay(v, len, &ms, d, sizeof d) == 0 &&
        (x->fault_slot || !ms || (x->fault_slot = fault_acquire()))) {
        x->delay_ms = ms;
        x->fault_rule = "fault-header";
        size_t used = strlen(x->fault_action);
        snprintf(x->fault_action + used, sizeof x->fault_action - used, "%s%s", used ? " " : "", d);
    }
    v = http_head_get(&c->req, "X-Statusproxy-Fault", &len);
    enum rules_break brk;
    int bad_chunk;
    if (v && !x->abort_code && fault_header_kind(v, len, &brk, &bad_chunk) == 0 &&
        (brk != RULES_BREAK_HANG || x->fault_slot || (x->fault_slot = fault_acquire()))) {
        x->brk = brk;
        x->brk_arg = brk == RULES_BREAK_GARBAGE ? FAULT_GARBAGE_DEFAULT : 0;
        x->bad_chunk = bad_chunk;
        x->fault_rule = "fault-header";
        size_t used = strlen(x->fault_action);
        snprintf(x->fault_action + used, sizeof x->fault_action - used, "%s%.*s", used ? " " : "",
                 (int)(len < 16 ? len : 16), v);
    }
}

int conn_take_faults(struct conn *c, const struct rules_verdict *v)
{
    struct exchange *x = &c->x;
    const struct rule_actions *a = v->actions;
    int holds = v->delay_ms || a->brk == RULES_BREAK_HANG || a->throttle_bps || a->slow_head_ms;
    if (holds && !x->fault_slot) {
        if (!fault_acquire())
            return 0;
        x->fault_slot = 1;
    }
    if (a->brk) {
        x->brk = a->brk;
        x->brk_arg = a->brk == RULES_BREAK_HANG ? a->hang_ms : a->garbage_bytes;
    }
    x->bad_chunk |= a->bad_chunk;
    if (a->slow_head_ms)
        x->slow_head_ms = a->slow_head_ms;
    if (v->retry_after_s)
        x->retry_after_s = v->retry_after_s;
    return 1;
}

static void on_slow_tick(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE)
        return;
    uint64_t elapsed = uv_now(t->loop) - x->slow_start_ms;
    if (elapsed >= x->slow_head_ms) {
        /* Time is up: drop what was sent from the held head; DONE sends the rest. */
        memmove(x->held_head.data, x->held_head.data + x->slow_sent,
                x->held_head.len - x->slow_sent);
        x->held_head.len -= x->slow_sent;
        x->slow_sent = 0;
        x->slow_head_ms = 0;
        x->slow_done(t);
        return;
    }
    size_t due = fault_slow_due(x->slow_len, x->slow_head_ms, elapsed);
    if (due > x->slow_sent) {
        sender_copy(&c->out, x->held_head.data + x->slow_sent, due - x->slow_sent);
        x->slow_sent = due;
        conn_flush(c);
        if (c->phase != PH_EXCHANGE)
            return;
    }
    uint64_t tick = fault_slow_tick_ms(x->slow_len, x->slow_head_ms);
    if (elapsed + tick > x->slow_head_ms)
        tick = x->slow_head_ms - elapsed;
    uv_timer_start(t, on_slow_tick, tick, 0);
}

void conn_slow_head(struct conn *c, uv_timer_cb done)
{
    struct exchange *x = &c->x;
    x->slow_done = done;
    x->slow_start_ms = uv_now(c->ptimer.loop);
    x->slow_sent = 0;
    if (x->slow_len > x->held_head.len)
        x->slow_len = x->held_head.len;
    on_slow_tick(&c->ptimer);
}

/* hang [DURATION] is over: close without a byte. */
static void on_hang_end(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->phase != PH_EXCHANGE)
        return;
    conn_record(c);
    conn_close_gracefully(c);
}

/* hang, empty or garbage instead of the answer (DESIGN §10). The records
 * carry no final code and the fault's own error. */
static void break_answer(struct conn *c)
{
    struct exchange *x = &c->x;
    x->final_code = -1;
    x->sink = SINK_DISCARD;
    if (x->brk == RULES_BREAK_HANG) {
        conn_set_error(c, "fault_hang");
        /* Without a duration, until the client leaves (client_gone records it). */
        if (x->brk_arg)
            uv_timer_start(&c->ptimer, on_hang_end, x->brk_arg, 0);
        conn_update_reading(c);
        return;
    }
    if (x->brk == RULES_BREAK_GARBAGE) {
        uint8_t *junk = xmalloc(x->brk_arg);
        fault_garbage(junk, x->brk_arg);
        sender_copy(&c->out, junk, x->brk_arg);
        free(junk);
        conn_set_error(c, "fault_garbage");
    } else {
        conn_set_error(c, "fault_empty");
    }
    conn_flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    conn_record(c);
    conn_close_gracefully(c);
}

void conn_rules_exchange(struct conn *c, struct rules_exchange *rx, int status)
{
    struct exchange *x = &c->x;
    rx->method = x->method_name;
    rx->method_len = strlen(x->method_name);
    rx->host = x->rec_host;
    rx->host_len = strlen(x->rec_host);
    rx->path = x->path ? x->path : "";
    rx->path_len = x->path_len;
    rx->request = &c->req;
    rx->client = (const struct sockaddr *)&c->peer;
    rx->status = status;
    rx->scheme = x->is_connect ? AUDIT_SCHEME_TUNNEL : AUDIT_SCHEME_HTTP;
}

void conn_on_abort_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (x->do_reset) {
        conn_close(c, CLOSE_RESET);
        return;
    }
    if (x->brk) {
        break_answer(c);
        return;
    }
    conn_answer(c, x->abort_code, x->abort_actions, NULL, NULL);
    conn_maybe_finish(c);
}

/* Answer now (or after the delay) without contacting the upstream. */
static void abort_request(struct conn *c)
{
    struct exchange *x = &c->x;
    x->sink = SINK_DISCARD;
    /* With Expect: 100-continue the client holds its body back: do not wait
     * for it, close after the answer (RFC 9110 §10.1.1). */
    if (x->expect_continue && x->req_has_body)
        c->close_after = 1;
    x->resp = RESP_HOLD;
    uv_timer_start(&c->ptimer, conn_on_abort_timer, x->delay_ms, 0);
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
    uint64_t limit = c->w->opts->max_request_body;
    if (limit && !x->req_chunked && x->req_length > limit) {
        conn_set_error(c, "body_too_large");
        refuse_request(c, 413, "request body over --max-request-body");
        return;
    }
    if (c->w->opts->fault_headers)
        read_fault_headers(c);
    if (x->rules && !x->abort_code && !x->brk) {
        struct rules_exchange rx;
        conn_rules_exchange(c, &rx, 0);
        x->has_req_v = rules_match(x->rules, RULES_REQUEST, &rx, &x->req_v);
        while (x->has_req_v && !conn_take_faults(c, &x->req_v))
            x->has_req_v = rules_match_next(x->rules, RULES_REQUEST, &rx, &x->req_v);
        if (x->has_req_v) {
            const struct rule_actions *a = x->req_v.actions;
            if (a->abort_code || a->brk) {
                x->abort_code = a->abort_code;
                x->abort_actions = a;
                x->delay_ms = x->req_v.delay_ms;
            }
        }
    }
    if (x->abort_code || x->brk) {
        abort_request(c);
        return;
    }
    if (!body_ahead_ok(c)) {
        refuse_request(c, 400, "malformed request body");
        return;
    }
    relay_start(c);
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
        return x->up && x->up_ready && !c->hold_client;
    default:
        return 0;
    }
}

static void on_request_done(struct conn *c)
{
    struct exchange *x = &c->x;
    x->req = REQ_DONE;
    if (x->sink == SINK_UPSTREAM && x->up && x->req_chunked)
        sender_static(upstream_sender(x->up), "0\r\n\r\n", 5);
    conn_maybe_finish(c);
}

/* A request that llhttp refused: answer and close. */
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
    conn_set_error(c, error);
    conn_answer(c, code, NULL, extra, NULL);
    conn_maybe_finish(c);
}

static void request_parse_error(struct conn *c, llhttp_errno_t err)
{
    int status = c->parse_status ? c->parse_status : 400;
    LOG(LOG_DEBUG, "c%llu bad request: %s", (unsigned long long)c->id,
        llhttp_get_error_reason(&c->parser));
    if (c->phase == PH_EXCHANGE) {
        /* The body was malformed (e.g. a bad chunk size): the exchange
         * cannot be completed; cut it. */
        conn_set_error(c, "bad_request");
        if (!c->x.resp_head_sent && c->x.resp != RESP_HOLD) {
            relay_detach(c, 0);
            c->close_after = 1;
            c->x.sink = SINK_DISCARD;
            c->x.req = REQ_DONE;
            conn_answer(c, status, NULL, NULL, NULL);
            conn_maybe_finish(c);
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
void conn_parse_requests(struct conn *c)
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
        llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
        size_t used = len;
        if (err == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            c->kick = 1;
            if (c->event != EV_DONE)
                llhttp_resume(&c->parser);
        } else if (err == HPE_PAUSED_UPGRADE) {
            /* After an Upgrade request that was not upgraded, HTTP goes on. */
            used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            llhttp_resume_after_upgrade(&c->parser);
            c->kick = 1;
        } else if (err != HPE_OK) {
            request_parse_error(c, err);
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
    if (c->phase == PH_CLOSED || c->phase == PH_TUNNEL)
        return;
    if (c->phase == PH_EXCHANGE && c->x.up && c->x.sink == SINK_UPSTREAM) {
        relay_flush_upstream(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->in && c->in_pos >= c->in->len)
        conn_release_input(c);
    conn_update_reading(c);
}

/* ---------- timers and accepting ---------- */

static void on_timer(struct deadline *d)
{
    struct conn *c = d->data;
    switch (c->phase) {
    case PH_IDLE:
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
    case PH_TUNNEL:
        /* No byte either way for --tunnel-idle-timeout (DESIGN §12). */
        conn_set_error(c, "tunnel_idle");
        conn_close(c, CLOSE_NOW);
        break;
    default:
        break;
    }
}

static const struct transport_ops client_ops = {
    .on_read = on_client_read,
    .on_closed = on_client_closed,
};

int conn_accept(struct worker *w, uv_stream_t *server)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->id = ++w->next_conn_id;
    tcp_transport_init(&c->tcp, &w->loop, &client_ops, c);
    /* A TLS listener (issue 10) wraps this transport and points c->tr and
     * c->out.tr at the wrapper; nothing below reads the socket directly. */
    c->tr = &c->tcp.base;
    deadline_init(&w->loop, &c->timer, on_timer, c);
    deadline_init(&w->loop, &c->xtimer, relay_on_timeout, c);
    uv_timer_init(&w->loop, &c->ptimer);
    c->ptimer.data = c;
    int rc = uv_accept(server, (uv_stream_t *)tcp_transport_handle(&c->tcp));
    /* From here on the connection is on the worker's list and closes
     * through conn_close, even when accepting failed. */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    int total = worker_conn_opened(w);
    http_head_init(&c->req, REQ_HEAD_LIMIT);
    http_head_init(&c->resp, RESP_HEAD_LIMIT);
    sender_init(&c->out, c->tr, on_client_written);
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    c->x.upstream_code = c->x.final_code = -1;
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
    arm_timer(c, w->opts->header_timeout_ms);
    if (total > w->opts->max_connections) {
        /* Over the limit: a short answer instead of silence. */
        answer_and_close(c, 503, "max_connections", "Retry-After: 1\r\n");
        return 0;
    }
    conn_update_reading(c);
    return 0;
}
