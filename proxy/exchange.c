/*
 * exchange — the life of one exchange on a client connection, from the
 * request head decided to the exchange recorded: request rules and fault
 * headers, the answers the proxy writes itself (errors, aborts, hang, empty,
 * garbage, slow-head), failing and finishing, and the record.
 *
 * It sits between conn.c (the client connection, which hands it parsed
 * request events) and relay.c (the upstream side, which it drives). Calls go
 * down only: conn -> exchange -> relay. What goes back up goes through the
 * callbacks it was handed: c->client (struct exchange_client_ops, from
 * conn.c); relay.c reports to this file through c->events (struct
 * relay_events, filled in here). The states and their transitions are listed
 * next to their enums in conn_int.h.
 */
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "catalog.h"
#include "exchange.h"
#include "fault.h"
#include "options.h"
#include "resp_head.h"
#include "tunnel.h"

static void on_abort_timer(uv_timer_t *t);

/* ---------- synthesized answers ---------- */

/* "Connection: close" / "keep-alive" for the answer being written, if any. */
static void connection_header(struct conn *c, struct sbuf *h)
{
    resp_head_put_connection(h, exchange_must_close(c), c->x.client_keepalive, c->req.minor);
}

/* bad-chunk on an answer of ours: B becomes one chunk followed by a broken
 * chunk-size line; the connection closes after it. */
static void break_chunked_body(struct conn *c, struct sbuf *b)
{
    struct sbuf out = {0};
    char line[HTTP_CHUNK_LINE_MAX];
    sbuf_append(&out, line, http_chunk_line(line, b->len));
    sbuf_append(&out, b->data, b->len);
    sbuf_puts(&out, "\r\n" FAULT_BAD_CHUNK_LINE);
    sbuf_free(b);
    *b = out;
    c->close_after = 1;
    exchange_set_error(&c->x, "fault_bad_chunk");
}

static void on_slow_answer_done(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || x->resp != RESP_SLOW)
        return;
    sender_copy(&c->out, x->held_head.data, x->held_head.len);
    sbuf_reset(&x->held_head);
    x->resp = RESP_DONE;
    c->client->flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->req != REQ_DONE)
        c->client->parse_requests(c);
    exchange_maybe_finish(c);
}

/* Answer the current request ourselves: CODE with the body of DESIGN §3
 * ("CODE Reason\n", text/plain) unless BODY or the rule's body says
 * otherwise. A answers for a rule (reason, body, headers) or is NULL.
 * EXTRA_HEADERS are complete "Name: value\r\n" lines or NULL. */
void exchange_answer(struct conn *c, int code, const struct rule_actions *a, const char *extra_headers,
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
    const char *rule = exchange_rule_name(x);
    if (c->env->opts->mark_faults && rule)
        sbuf_printf(&h, "X-Statusproxy-Rule: %s\r\n", rule);
    connection_header(c, &h);
    sbuf_puts(&h, "\r\n");
    if (code == 429 || code >= 500) /* for the report's retry view */
        x->retry_after_ms = http_retry_after_ms(h.data, h.len);
    size_t head_len = h.len;
    if (body_out)
        sbuf_append(&h, b.data, b.len);
    x->final_code = code;
    if (exchange_must_close(c))
        c->close_after = 1;
    if (x->slow_head_ms) {
        /* slow-head: the head goes out bit by bit, then the rest. */
        sbuf_free(&x->held_head);
        x->held_head = h;
        x->slow_len = head_len;
        x->resp = RESP_SLOW;
        sbuf_free(&b);
        exchange_slow_head(c, on_slow_answer_done);
        return;
    }
    sender_copy(&c->out, h.data, h.len);
    sbuf_free(&h);
    sbuf_free(&b);
    x->resp = RESP_DONE;
    c->client->flush(c);
}

/* ---------- recording ---------- */

/* The scheme recorded and matched (DESIGN §9): https when the client side
 * (interception, --tls-listen) or the upstream side (--upstream https://)
 * speaks TLS, tunnel for a blind CONNECT, else http. */
static enum audit_scheme exchange_scheme(const struct conn *c)
{
    const struct exchange *x = &c->x;
    if (c->icpt != ICPT_NONE)
        return AUDIT_SCHEME_HTTPS;
    if (x->is_connect)
        return AUDIT_SCHEME_TUNNEL;
    if (c->client_tls != CTLS_NONE || (!x->forward_mode && c->env->opts->upstream_https))
        return AUDIT_SCHEME_HTTPS;
    return AUDIT_SCHEME_HTTP;
}

void exchange_drop(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->fault_slot) {
        x->fault_slot = 0;
        fault_release();
    }
    rules_unref(x->rules);
    x->rules = NULL;
    x->life = EX_NONE;
    x->bytes_in = 0;
    /* The connection served a request: idle timing as for keep-alive. */
    c->nrequests++;
}

void exchange_record(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->life != EX_OPEN)
        return;
    x->life = EX_RECORDED;
    if (x->fault_slot) {
        x->fault_slot = 0;
        fault_release();
    }
    const struct rule *rule = exchange_rule(x);
    const char *rname = exchange_rule_name(x);
    if (!rname)
        rname = "";
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
        .scheme = exchange_scheme(c),
    };
    c->env->hooks->record(c->env->owner, &e, x->has_req_v && x->has_resp_v ? rule_name(x->req_v.rule) : NULL);
}

/* ---------- exchange lifecycle ---------- */

void exchange_begin(struct conn *c)
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
    x->life = EX_OPEN;
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
    if (c->env->rules)
        x->rules = rules_ref(c->env->rules);
}

/* The exchange is over when the answer is complete and the request was read
 * (or will not be: the connection closes). Then record it and move on to the
 * next request, which may already wait in the read chunk. */
void exchange_maybe_finish(struct conn *c)
{
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || x->life != EX_OPEN)
        return;
    if (x->resp != RESP_DONE || x->pace.n || (x->req != REQ_DONE && !c->close_after))
        return;
    deadline_clear(&c->xtimer);
    uv_timer_stop(&c->ptimer);
    int reusable = x->resp_keepalive && x->req == REQ_DONE && x->sink == SINK_UPSTREAM &&
                   !x->error[0] && x->msg == MSG_COMPLETE;
    relay_detach(c, reusable);
    exchange_record(c);
    rules_unref(x->rules);
    x->rules = NULL;
    x->bytes_in = 0;
    c->nrequests++;
    /* RFC 9112 §9.6: after an answer that said "Connection: close" (the
     * client asked, or it is HTTP/1.0 without keep-alive), close. */
    if (c->close_after || c->stop_requested || !x->client_keepalive || c->client_eof) {
        c->client->close_gracefully(c);
        return;
    }
    c->client->next_request(c);
}

/* The exchange cannot go on: answer CODE if nothing was sent yet, else cut
 * the client's connection so that it sees an incomplete answer. */
void exchange_fail(struct conn *c, int code, const char *error)
{
    struct exchange *x = &c->x;
    exchange_set_error(x, error);
    deadline_clear(&c->xtimer);
    relay_detach(c, 0);
    if (exchange_head_sent(x)) {
        c->client->close(c, CLOSE_NOW);
        return;
    }
    if (x->req != REQ_DONE) {
        /* The rest of the request body has nowhere to go. */
        x->sink = SINK_DISCARD;
        if (x->expect_continue || x->req_has_body)
            c->close_after = 1;
    }
    exchange_answer(c, code, NULL, NULL, NULL);
    if (c->phase != PH_EXCHANGE)
        return;
    /* The parser may still owe the request's end (or body bytes to drop);
     * drive it, which also finishes the exchange and moves on. */
    if (x->req != REQ_DONE)
        c->client->parse_requests(c);
    exchange_maybe_finish(c);
}

/* ---------- faults ---------- */

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

int exchange_take_faults(struct conn *c, const struct rules_verdict *v)
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
    if (c->phase != PH_EXCHANGE || x->resp != RESP_SLOW)
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
        c->client->flush(c);
        if (c->phase != PH_EXCHANGE)
            return;
    }
    uint64_t tick = fault_slow_tick_ms(x->slow_len, x->slow_head_ms);
    if (elapsed + tick > x->slow_head_ms)
        tick = x->slow_head_ms - elapsed;
    uv_timer_start(t, on_slow_tick, tick, 0);
}

void exchange_slow_head(struct conn *c, uv_timer_cb done)
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
    if (c->phase != PH_EXCHANGE || c->x.brk != RULES_BREAK_HANG)
        return;
    exchange_record(c);
    c->client->close_gracefully(c);
}

/* hang, empty or garbage instead of the answer (DESIGN §10). The records
 * carry no final code and the fault's own error. */
static void break_answer(struct conn *c)
{
    struct exchange *x = &c->x;
    x->final_code = -1;
    x->sink = SINK_DISCARD;
    if (x->brk == RULES_BREAK_HANG) {
        exchange_set_error(x, "fault_hang");
        /* Without a duration, until the client leaves (client_gone records it). */
        if (x->brk_arg)
            uv_timer_start(&c->ptimer, on_hang_end, x->brk_arg, 0);
        c->client->update_reading(c);
        return;
    }
    if (x->brk == RULES_BREAK_GARBAGE) {
        uint8_t *junk = xmalloc(x->brk_arg);
        fault_garbage(junk, x->brk_arg);
        sender_copy(&c->out, junk, x->brk_arg);
        free(junk);
        exchange_set_error(x, "fault_garbage");
    } else {
        exchange_set_error(x, "fault_empty");
    }
    c->client->flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    exchange_record(c);
    c->client->close_gracefully(c);
}

void exchange_rules_exchange(struct conn *c, struct rules_exchange *rx, int status)
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
    rx->scheme = exchange_scheme(c);
}

/* Timer callback: send the held abort answer (or the reset) of x.abort_*. */
static void on_abort_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || x->resp != RESP_HOLD)
        return;
    if (x->do_reset) {
        c->client->close(c, CLOSE_RESET);
        return;
    }
    if (x->brk) {
        break_answer(c);
        return;
    }
    exchange_answer(c, x->abort_code, x->abort_actions, NULL, NULL);
    exchange_maybe_finish(c);
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
    uv_timer_start(&c->ptimer, on_abort_timer, x->delay_ms, 0);
}

/* A response rule replaces the upstream's answer (relay.c has let go of it). */
static void replace_answer(struct conn *c, uint64_t delay_ms)
{
    c->x.resp = RESP_HOLD;
    uv_timer_start(&c->ptimer, on_abort_timer, delay_ms, 0);
}

static const struct relay_events relay_events = {
    .fail = exchange_fail,
    .maybe_finish = exchange_maybe_finish,
    .record = exchange_record,
    .replace_answer = replace_answer,
    .take_faults = exchange_take_faults,
    .slow_head = exchange_slow_head,
    .rules_exchange = exchange_rules_exchange,
};

/* ---------- what conn.c hands over ---------- */

void exchange_init(struct conn *c, uv_loop_t *loop)
{
    c->events = &relay_events;
    deadline_init(loop, &c->xtimer, relay_on_timeout, c);
    c->x.upstream_code = c->x.final_code = -1;
}

/* Fault headers and request rules: returns 1 when one of them answers
 * instead of the upstream (now or after its delay), else 0. */
int exchange_request_rules(struct conn *c)
{
    struct exchange *x = &c->x;
    if (c->env->opts->fault_headers)
        read_fault_headers(c);
    if (x->rules && !x->abort_code && !x->brk) {
        struct rules_exchange rx;
        exchange_rules_exchange(c, &rx, 0);
        x->has_req_v = rules_match(x->rules, RULES_REQUEST, &rx, &x->req_v);
        while (x->has_req_v && !exchange_take_faults(c, &x->req_v))
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
        return 1;
    }
    return 0;
}

void exchange_close(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->life == EX_OPEN) {
        if (!x->error[0] && x->resp != RESP_DONE)
            exchange_set_error(x, "client_closed");
        exchange_record(c);
    }
}

void exchange_release(struct conn *c)
{
    relay_detach(c, 0);
    relay_pace_clear(&c->x.pace);
    rules_unref(c->x.rules);
    c->x.rules = NULL;
}

void exchange_free(struct conn *c)
{
    sbuf_free(&c->x.req_head);
    sbuf_free(&c->x.held_head);
    free(c->x.pace.items);
}
