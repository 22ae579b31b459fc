/*
 * conn — the client connection state machine.
 *
 * A connection carries one exchange at a time. The request parser pauses at
 * the end of each request head (so the upstream can be chosen before any
 * body byte is forwarded) and at the end of each request (so a pipelined
 * next request waits, unparsed, in its read chunk until this answer is
 * complete: answers stay in order). Reading from the client stops whenever
 * unparsed bytes are pending, which bounds memory to one chunk per side.
 *
 * Bodies are relayed as llhttp hands them over: each piece is a reference
 * into the read chunk (see sender.h), re-framed for the other side
 * (Content-Length kept, chunked re-chunked, close-delimited turned into
 * chunked for HTTP/1.1 clients).
 *
 * Phases of the connection:
 *   PH_IDLE     waiting for the first byte of a request (idle timeout)
 *   PH_HEAD     receiving a request head (header timeout, then 408)
 *   PH_EXCHANGE a request is being answered
 *   PH_TUNNEL   CONNECT or 101: bytes relayed both ways (tunnel.c)
 *   PH_LINGER   answer sent, write side shut; draining input before close
 *   PH_CLOSED   handles are closing; freed after the last close callback
 */
#include "conn.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "chunk.h"
#include "http.h"
#include "log.h"
#include "rules.h"
#include "sender.h"
#include "server.h"
#include "target.h"
#include "tunnel.h"
#include "units.h"
#include "upstream.h"
#include "util.h"

#define REQ_HEAD_LIMIT (64 * 1024)
#define URL_LIMIT (8 * 1024)
#define RESP_HEAD_LIMIT (64 * 1024)
#define WRITE_HIGH (512 * 1024)
#define WRITE_LOW (128 * 1024)
#define LINGER_MS 2000
#define PACE_TICK_MS 10
#define PACE_QUEUE_MAX (64 * 1024)

enum phase { PH_IDLE, PH_HEAD, PH_EXCHANGE, PH_TUNNEL, PH_LINGER, PH_CLOSED };
enum req_state { REQ_BODY, REQ_DONE };
enum req_sink { SINK_UPSTREAM, SINK_DISCARD };
enum resp_state { RESP_WAIT, RESP_HOLD, RESP_BODY, RESP_DONE };
enum body_out { OUT_NONE, OUT_LENGTH, OUT_CHUNKED, OUT_CLOSE };
enum close_how { CLOSE_NOW, CLOSE_RESET };

/* Parser events: a callback records what happened and pauses llhttp. */
enum { EV_NONE = 0, EV_HEAD = 1, EV_DONE = 2 };

struct piece {
    struct chunk *c;
    const char *p;
    size_t n;
};

/* Body bytes held back by `throttle`, released by the pace timer. */
struct pace {
    struct piece *items;
    size_t head, n, cap;
    size_t bytes;
    uint64_t bps;
    uint64_t last_us;
    double budget;
};

struct exchange {
    int active;
    uint64_t start_us;
    int64_t start_ms;
    uint64_t out_start;          /* c->out.total when the exchange began */
    uint64_t bytes_in;           /* request bytes parsed for this exchange */

    /* request */
    int method;
    char method_name[24];
    int is_head, is_connect, is_upgrade;
    int client_keepalive;
    int expect_continue;
    int req_chunked, req_has_body;
    uint64_t req_length;
    enum req_state req;
    enum req_sink sink;
    uint64_t req_body_bytes;
    struct target target;
    int forward_mode;            /* absolute-form or CONNECT */
    char up_host[256];
    int up_port;
    char rec_host[256];          /* host as recorded and matched: no port */
    const char *path;            /* into c->req; without the query */
    size_t path_len;
    int max_forwards;            /* -1: absent or not applicable */

    /* rules and faults */
    struct rules *rules;
    int has_req_v, has_resp_v;
    struct rules_verdict req_v, resp_v;
    const char *fault_rule;      /* "fault-header" when a fault header acted */
    char fault_action[64];
    int abort_code;
    const struct rule_actions *abort_actions;
    uint64_t delay_ms;

    /* upstream and response */
    struct upstream *up;
    int up_reused, up_ready, retried;
    int up_seen;                 /* any response byte arrived */
    int up_eof;                  /* a pending EOF/error from the upstream (0: none) */
    struct sbuf req_head;        /* the forwarded head, kept for one retry */
    int upstream_code;           /* -1: none */
    int final_code;              /* -1: none */
    enum resp_state resp;
    int resp_head_sent;
    int resp_interim;            /* the response being parsed is 1xx */
    int resp_skip_body;          /* llhttp was told there is no body (HEAD) */
    int done_pending;            /* the message ended while its head was held */
    int resp_complete;           /* upstream message complete */
    int resp_discard;            /* upstream body is dropped */
    int resp_keepalive;          /* upstream connection reusable afterwards */
    enum body_out out_mode;
    int64_t truncate_left;       /* -1: no truncate */
    int do_reset;
    struct pace pace;
    struct sbuf held_head;       /* the answer's head, while held by a delay */
    char error[32];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;            /* idle / header timeout, linger */
    uv_timer_t xtimer;           /* response timeout */
    uv_timer_t ptimer;           /* delay and throttle pacing */
    uv_shutdown_t shutdown_req;
    struct worker *w;
    struct conn *prev, *next;    /* worker's list */
    uint64_t id;
    struct sockaddr_storage peer;
    char peer_ip[48];
    enum phase phase;
    int pending_closes;
    int reading;
    int close_after;             /* close once the current answer is written */
    int client_eof;              /* the client half-closed */
    int stop_requested;          /* the worker is stopping */
    int nrequests;
    int hold_client;             /* client parsing blocked by upstream backpressure */
    int hold_upstream;           /* upstream reading blocked by client backpressure */

    llhttp_t parser;             /* requests */
    llhttp_t rparser;            /* responses of the current exchange */
    int event, revent;
    int kick, up_kick;           /* run the parser once more, even without bytes */
    int req_crlf, resp_crlf;     /* CRLF bytes still expected after chunk data */
    int parse_status;            /* status for a failed request parse (400, 414, 431) */
    int obs_fold;
    char prev_last;              /* last byte of the previous client chunk */
    char up_prev_last;
    struct http_head req, resp;
    struct sender out;           /* to the client */
    struct chunk *in;            /* unparsed client bytes: in->data[in_pos..in->len) */
    size_t in_pos;
    struct chunk *up_in;         /* unparsed upstream bytes */
    size_t up_pos;
    struct tunnel *tunnel;
    struct exchange x;
};

static const llhttp_settings_t request_settings;
static const llhttp_settings_t response_settings;
static const struct upstream_ops up_ops;

static void client_parse(struct conn *c);
static void upstream_parse(struct conn *c);
static void conn_close(struct conn *c, enum close_how how);
static void exchange_maybe_finish(struct conn *c);
static void fail_exchange(struct conn *c, int code, const char *error);
static void answer(struct conn *c, int code, const struct rule_actions *a, const char *extra_headers,
                   const char *body);
static void start_upstream(struct conn *c);
static void send_response_head(struct conn *c);
static void release_response_head(struct conn *c);
static void on_response_done(struct conn *c);
static void client_flush(struct conn *c);
static void update_reading(struct conn *c);

/* ---------- small helpers ---------- */

struct conn *conn_next(struct conn *c)
{
    return c->next;
}

static const char *http_method_str(int method)
{
    return llhttp_method_name((llhttp_method_t)method);
}

static void set_error(struct conn *c, const char *error)
{
    if (!c->x.error[0])
        snprintf(c->x.error, sizeof c->x.error, "%s", error);
}

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
    if (status <= UV_EAI_ADDRFAMILY && status >= UV_EAI_SOCKTYPE - 10)
        return "dns";
    return "connect_failed";
}

static void timer_stop(uv_timer_t *t)
{
    uv_timer_stop(t);
}

/* ---------- reading from the client ---------- */

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    UNUSED(h);
    UNUSED(suggested);
    struct chunk *ch = chunk_new();
    *buf = uv_buf_init(ch->data, CHUNK_SIZE);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct conn *c)
{
    int want = c->phase != PH_CLOSED && !c->in &&
               (c->phase != PH_TUNNEL || tunnel_wants_client(c->tunnel));
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void release_input(struct conn *c)
{
    if (c->in) {
        c->prev_last = c->in->len ? c->in->data[c->in->len - 1] : c->prev_last;
        chunk_unref(c->in);
        c->in = NULL;
        c->in_pos = 0;
    }
}

static void on_timer(uv_timer_t *t);

static void arm_timer(struct conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
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
    if (c->phase == PH_EXCHANGE && eof && c->x.req == REQ_DONE) {
        /* A half-close after a complete request: answer, then close. */
        c->client_eof = 1;
        c->close_after = 1;
        return;
    }
    if (c->phase == PH_EXCHANGE)
        set_error(c, "client_closed");
    conn_close(c, CLOSE_NOW);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    struct chunk *ch = buf->base ? CONTAINER_OF(buf->base, struct chunk, data) : NULL;
    if (nread <= 0) {
        chunk_unref(ch);
        if (nread < 0)
            client_gone(c, (int)nread);
        return;
    }
    ch->len = (uint32_t)nread;
    if (c->phase == PH_LINGER) {
        chunk_unref(ch);
        return;
    }
    if (c->phase == PH_TUNNEL) {
        tunnel_from_client(c->tunnel, ch, 0);
        chunk_unref(ch);
        return;
    }
    c->in = ch;
    c->in_pos = 0;
    client_parse(c);
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

static void send_body_to_upstream(struct conn *c, const char *at, size_t len);

/* llhttp 8.1 does not check the CRLF that must end each chunk's data
 * (RFC 9112 §7.1): accepting any two bytes there would let a request be
 * read differently by the backend. *PENDING counts the CRLF bytes still
 * expected; P..END are the bytes that follow. Returns 0, or -1 on a mismatch. */
static int check_chunk_crlf(const char *p, const char *end, int *pending)
{
    for (; *pending && p < end; p++, (*pending)--)
        if (*p != (*pending == 2 ? '\r' : '\n'))
            return -1;
    return 0;
}

/* After a body piece: when it ended a chunk, its CRLF must follow. */
static int chunk_piece_done(llhttp_t *p, const char *after, const char *end, int *pending)
{
    if (!(p->flags & F_CHUNKED) || p->content_length != 0)
        return 0;
    *pending = 2;
    return check_chunk_crlf(after, end, pending);
}

static int on_req_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->x.req_body_bytes += len;
    if (c->x.sink == SINK_UPSTREAM && c->x.up)
        send_body_to_upstream(c, at, len);
    if (chunk_piece_done(p, at + len, c->in->data + c->in->len, &c->req_crlf) != 0) {
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
static int must_close(struct conn *c)
{
    return c->close_after || !c->x.client_keepalive || c->w->stopping || c->client_eof;
}

static void put_connection_header(struct conn *c, struct sbuf *h)
{
    if (must_close(c))
        sbuf_puts(h, "Connection: close\r\n");
    else if (c->x.client_keepalive && c->req.minor == 0)
        sbuf_puts(h, "Connection: keep-alive\r\n");
}

/* Answer the current request ourselves: CODE with the body of DESIGN §3
 * ("CODE Reason\n", text/plain) unless BODY or the rule's body says
 * otherwise. A answers for a rule (reason, body, headers) or is NULL.
 * EXTRA_HEADERS are complete "Name: value\r\n" lines or NULL. */
static void answer(struct conn *c, int code, const struct rule_actions *a, const char *extra_headers,
                   const char *body)
{
    struct exchange *x = &c->x;
    const char *reason = (a && a->reason) ? a->reason : catalog_reason(code);
    struct sbuf b = {0}, h = {0};
    const char *ctype = "text/plain";
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
    sbuf_printf(&h, "HTTP/1.1 %d %s\r\n", code, reason);
    if (kind == CATALOG_BODY_ALLOWED) {
        sbuf_printf(&h, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, b.len);
    } else if (kind == CATALOG_BODY_EMPTY) {
        sbuf_puts(&h, "Content-Length: 0\r\n");
    }
    if (extra_headers)
        sbuf_puts(&h, extra_headers);
    if (a) {
        for (size_t i = 0; i < a->n_set_headers; i++)
            sbuf_printf(&h, "%s: %s\r\n", a->set_headers[i].name, a->set_headers[i].value);
    }
    const char *rule = x->has_resp_v ? rule_name(x->resp_v.rule)
                       : x->has_req_v ? rule_name(x->req_v.rule)
                                      : x->fault_rule;
    if (c->w->opts->mark_faults && rule)
        sbuf_printf(&h, "X-Statusproxy-Rule: %s\r\n", rule);
    put_connection_header(c, &h);
    sbuf_puts(&h, "\r\n");
    sender_copy(&c->out, h.data, h.len);
    if (kind == CATALOG_BODY_ALLOWED && !x->is_head)
        sender_copy(&c->out, b.data, b.len);
    sbuf_free(&h);
    sbuf_free(&b);
    x->final_code = code;
    x->resp_head_sent = 1;
    x->resp = RESP_DONE;
    if (must_close(c))
        c->close_after = 1;
    client_flush(c);
}

/* ---------- closing ---------- */

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
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

static void pace_clear(struct pace *pc)
{
    for (size_t i = 0; i < pc->n; i++)
        chunk_unref(pc->items[(pc->head + i) % pc->cap].c);
    pc->n = pc->head = 0;
    pc->bytes = 0;
}

static void record_exchange(struct conn *c);

static void detach_upstream(struct conn *c, int reusable)
{
    struct exchange *x = &c->x;
    if (c->up_in) {
        chunk_unref(c->up_in);
        c->up_in = NULL;
    }
    if (x->up) {
        upstream_release(x->up, reusable);
        x->up = NULL;
    }
}

static void conn_close(struct conn *c, enum close_how how)
{
    if (c->phase == PH_CLOSED)
        return;
    if (c->x.active) {
        if (!c->x.error[0] && c->x.resp != RESP_DONE)
            set_error(c, "client_closed");
        record_exchange(c);
    }
    if (c->tunnel) {
        tunnel_free(c->tunnel);
        c->tunnel = NULL;
    }
    detach_upstream(c, 0);
    release_input(c);
    pace_clear(&c->x.pace);
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
    if (how == CLOSE_RESET && !uv_is_closing((uv_handle_t *)&c->tcp) &&
        uv_tcp_close_reset(&c->tcp, on_closed) == 0) {
        /* closed with RST */
    } else if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    } else {
        c->pending_closes--;
    }
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->xtimer, on_closed);
    uv_close((uv_handle_t *)&c->ptimer, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->phase == PH_CLOSED)
        return;
    if (status != 0 || c->client_eof) {
        conn_close(c, CLOSE_NOW);
        return;
    }
    /* Drain what the client still sends, so that closing does not turn into
     * a reset that could destroy the answer in flight (RFC 9112 §9.6). */
    c->phase = PH_LINGER;
    release_input(c);
    update_reading(c);
    arm_timer(c, LINGER_MS);
}

/* Close after everything queued to the client is written. */
static void close_gracefully(struct conn *c)
{
    if (c->phase == PH_CLOSED || c->phase == PH_LINGER)
        return;
    client_flush(c);
    if (c->phase == PH_CLOSED)
        return;
    c->phase = PH_LINGER;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c, CLOSE_NOW);
}

void conn_abort(struct conn *c)
{
    set_error(c, "shutdown");
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

static void client_flush(struct conn *c)
{
    if (c->phase == PH_CLOSED)
        return;
    int rc = sender_flush(&c->out);
    if (rc != 0) {
        set_error(c, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->x.up && !c->hold_upstream && c->out.inflight > WRITE_HIGH) {
        c->hold_upstream = 1;
        upstream_pause(c->x.up);
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
        set_error(c, "client_closed");
        conn_close(c, CLOSE_NOW);
        return;
    }
    if (c->hold_upstream && c->out.inflight < WRITE_LOW) {
        c->hold_upstream = 0;
        if (c->x.up)
            upstream_resume(c->x.up);
        upstream_parse(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->phase == PH_EXCHANGE)
        exchange_maybe_finish(c);
}

/* ---------- recording ---------- */

static void copy_str(char *dst, size_t dstlen, const char *src, size_t len)
{
    if (len >= dstlen)
        len = dstlen - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void record_exchange(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->active)
        return;
    x->active = 0;
    struct audit_record r;
    memset(&r, 0, sizeof r);
    r.start_ms = x->start_ms;
    r.duration_us = (int64_t)(time_mono_us() - x->start_us);
    r.upstream_code = x->upstream_code;
    r.final_code = x->final_code;
    r.bytes_in = x->bytes_in;
    r.bytes_out = c->out.total + sender_queued(&c->out) - x->out_start;
    if (c->tunnel)
        r.bytes_in += tunnel_client_bytes(c->tunnel);
    snprintf(r.client, sizeof r.client, "%s", c->peer_ip);
    snprintf(r.method, sizeof r.method, "%s", x->method_name);
    snprintf(r.host, sizeof r.host, "%s", x->rec_host);
    if (x->path)
        copy_str(r.path, sizeof r.path, x->path, x->path_len);
    const struct rule *rule = x->has_resp_v ? x->resp_v.rule : x->has_req_v ? x->req_v.rule : NULL;
    if (rule) {
        snprintf(r.rule, sizeof r.rule, "%s", rule_name(rule));
        snprintf(r.action, sizeof r.action, "%s", rule_actions_text(rule));
    } else if (x->fault_rule) {
        snprintf(r.rule, sizeof r.rule, "%s", x->fault_rule);
        snprintf(r.action, sizeof r.action, "%s", x->fault_action);
    }
    snprintf(r.error, sizeof r.error, "%s", x->error);
    worker_record(c->w, &r);
}

/* ---------- exchange lifecycle ---------- */

static void exchange_begin(struct conn *c)
{
    struct exchange *x = &c->x;
    struct sbuf keep = x->req_head;
    struct pace pace = x->pace;
    sbuf_free(&x->held_head);
    uint64_t bytes_in = x->bytes_in;
    memset(x, 0, sizeof *x);
    sbuf_reset(&keep);
    x->req_head = keep;
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
static void exchange_maybe_finish(struct conn *c)
{
    struct exchange *x = &c->x;
    if (c->phase != PH_EXCHANGE || !x->active)
        return;
    if (x->resp != RESP_DONE || x->pace.n || (x->req != REQ_DONE && !c->close_after))
        return;
    timer_stop(&c->xtimer);
    timer_stop(&c->ptimer);
    int reusable = x->resp_keepalive && x->req == REQ_DONE && x->sink == SINK_UPSTREAM &&
                   !x->error[0] && x->resp_complete;
    detach_upstream(c, reusable);
    record_exchange(c);
    rules_unref(x->rules);
    x->rules = NULL;
    x->bytes_in = 0;
    c->nrequests++;
    if (c->close_after || c->stop_requested) {
        close_gracefully(c);
        return;
    }
    c->phase = PH_IDLE;
    llhttp_resume(&c->parser);
    c->kick = 1;
    arm_timer(c, c->w->opts->idle_timeout_ms);
    client_parse(c);
    if (c->phase != PH_CLOSED)
        update_reading(c);
}

/* The exchange cannot go on: answer CODE if nothing was sent yet, else cut
 * the client's connection so that it sees an incomplete answer. */
static void fail_exchange(struct conn *c, int code, const char *error)
{
    struct exchange *x = &c->x;
    set_error(c, error);
    timer_stop(&c->xtimer);
    detach_upstream(c, 0);
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
    answer(c, code, NULL, NULL, NULL);
    exchange_maybe_finish(c);
}

/* ---------- request validation and routing ---------- */

/* Fields a proxy does not forward (RFC 9110 §7.6.1), plus those it rewrites
 * itself (framing, Via handled by appending, fault headers). */
static void drop_hop_by_hop(struct http_head *h, int keep_upgrade)
{
    for (int i = http_head_find(h, "Connection", 0); i >= 0; i = http_head_find(h, "Connection", i + 1)) {
        const struct http_field *f = &h->fields[i];
        const char *v = h->buf + f->value;
        size_t n = f->value_len, pos = 0;
        while (pos < n) {
            while (pos < n && (v[pos] == ' ' || v[pos] == '\t' || v[pos] == ','))
                pos++;
            size_t start = pos;
            while (pos < n && v[pos] != ',' && v[pos] != ' ' && v[pos] != '\t')
                pos++;
            if (pos > start) {
                char name[64];
                if (pos - start < sizeof name) {
                    memcpy(name, v + start, pos - start);
                    name[pos - start] = '\0';
                    if (!(keep_upgrade && strcasecmp(name, "upgrade") == 0))
                        http_head_remove(h, name);
                }
            }
        }
    }
    static const char *const hop[] = {"Connection", "Keep-Alive", "Proxy-Connection", "TE",
                                      "Trailer", "Transfer-Encoding", "Content-Length",
                                      "X-Statusproxy-Abort", "X-Statusproxy-Delay"};
    for (size_t i = 0; i < ARRAY_LEN(hop); i++)
        http_head_remove(h, hop[i]);
    if (!keep_upgrade)
        http_head_remove(h, "Upgrade");
}

static void write_fields(struct sbuf *out, const struct http_head *h)
{
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (f->removed)
            continue;
        sbuf_append(out, h->buf + f->name, f->name_len);
        sbuf_append(out, ": ", 2);
        sbuf_append(out, h->buf + f->value, f->value_len);
        sbuf_append(out, "\r\n", 2);
    }
}

/* Check the head llhttp accepted against what a proxy must refuse.
 * Returns 0, or the status to answer. */
static int validate_request(struct conn *c, const char **why)
{
    struct http_head *h = &c->req;
    *why = NULL;
    if (h->major != 1 || h->minor > 1) {
        *why = "only HTTP/1.0 and HTTP/1.1 are spoken here";
        return 505;
    }
    if (c->obs_fold) {
        *why = "obsolete line folding is not accepted";
        return 400;
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (!http_is_token(h->buf + f->name, f->name_len)) {
            *why = "malformed header field name";
            return 400;
        }
        if (!http_is_field_value(h->buf + f->value, f->value_len)) {
            *why = "malformed header field value";
            return 400;
        }
    }
    int hosts = 0;
    for (int i = http_head_find(h, "Host", 0); i >= 0; i = http_head_find(h, "Host", i + 1))
        hosts++;
    if (hosts > 1 || (hosts == 0 && h->minor == 1)) {
        *why = hosts ? "more than one Host header" : "HTTP/1.1 requests need a Host header";
        return 400;
    }
    size_t len;
    const char *te = http_head_get(h, "Transfer-Encoding", &len);
    if (te && h->minor == 0) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return 400;
    }
    if (te && !(c->parser.flags & F_CHUNKED)) {
        /* RFC 9112 §6.3: chunked must be the final coding of a request. */
        *why = "Transfer-Encoding without chunked as the final coding";
        return 400;
    }
    return 0;
}

static const char no_upstream_help[] =
    "This proxy has no --upstream, so it cannot take origin-form requests (GET /path).\n"
    "Use it as a forward proxy (absolute-form: GET http://host/path), e.g. with\n"
    "  curl -x http://PROXY_ADDR http://host/path   or   HTTP_PROXY=http://PROXY_ADDR,\n"
    "or start it with --upstream http://HOST:PORT to put it in front of one backend.\n";

/* Answer a request the proxy will not forward: "CODE Reason\n" as DESIGN
 * says, the reason in an X-Statusproxy-Error header; the connection closes. */
static void refuse_request(struct conn *c, int status, const char *why)
{
    c->close_after = 1;
    c->x.sink = SINK_DISCARD;
    set_error(c, "bad_request");
    if (why == no_upstream_help) {
        char *body = xasprintf("%d %s\n%s", status, catalog_reason(status), why);
        answer(c, status, NULL, NULL, body);
        free(body);
        return;
    }
    char *extra = why ? xasprintf("X-Statusproxy-Error: %s\r\n", why) : NULL;
    answer(c, status, NULL, extra, NULL);
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
    return chunk_piece_done(p, at + len, st->end, &st->crlf) == 0 ? 0 : HPE_USER;
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

/* Where the request goes: fills target, up_host/up_port, rec_host, path.
 * Returns 0 or the status to answer (with *why). */
static int route_request(struct conn *c, const char **why)
{
    struct exchange *x = &c->x;
    const struct run_options *o = c->w->opts;
    struct http_head *h = &c->req;
    if (target_parse(h->buf + h->target, h->target_len, x->is_connect, &x->target, why) != 0)
        return 400;
    size_t hlen;
    const char *hv = http_head_get(h, "Host", &hlen);
    char host_hdr[256] = "";
    int host_port = 80;
    if (hv && hlen && target_parse_authority(hv, hlen, host_hdr, sizeof host_hdr, &host_port, 80) != 0) {
        *why = "malformed Host header";
        return 400;
    }
    switch (x->target.form) {
    case TARGET_AUTHORITY:
    case TARGET_ABSOLUTE:
        x->forward_mode = 1;
        snprintf(x->up_host, sizeof x->up_host, "%s", x->target.host);
        x->up_port = x->target.port;
        snprintf(x->rec_host, sizeof x->rec_host, "%s", x->target.host);
        x->path = x->target.path ? x->target.path : "";
        x->path_len = x->target.path_only_len;
        if (x->target.form == TARGET_ABSOLUTE && x->path_len == 0) {
            x->path = "/";
            x->path_len = 1;
        }
        return 0;
    case TARGET_ORIGIN:
    case TARGET_ASTERISK:
        if (!o->has_upstream) {
            *why = no_upstream_help;
            return 400;
        }
        snprintf(x->up_host, sizeof x->up_host, "%s", o->upstream_host);
        x->up_port = o->upstream_port;
        snprintf(x->rec_host, sizeof x->rec_host, "%s", host_hdr[0] ? host_hdr : o->upstream_host);
        x->path = x->target.path;
        x->path_len = x->target.path_only_len;
        return 0;
    }
    return 400;
}

/* Is HOST:PORT this proxy's own listening or admin address? */
static int targets_self(struct conn *c, const char *host, int port)
{
    const struct run_options *o = c->w->opts;
    const struct listen_addr *addrs[2] = {&o->listen, o->admin_enabled ? &o->admin : NULL};
    for (int i = 0; i < 2; i++) {
        const struct listen_addr *a = addrs[i];
        if (!a || a->port != port)
            continue;
        unsigned char buf[16];
        if (strcmp(host, "localhost") == 0)
            return 1;
        if (a->sa.ss_family == AF_INET && inet_pton(AF_INET, host, buf) == 1) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
            if (sin->sin_addr.s_addr == htonl(INADDR_ANY) || memcmp(buf, &sin->sin_addr, 4) == 0 ||
                buf[0] == 127)
                return 1;
        }
        if (a->sa.ss_family == AF_INET6 && inet_pton(AF_INET6, host, buf) == 1) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
            if (memcmp(buf, &s6->sin6_addr, 16) == 0 || memcmp(buf, &in6addr_loopback, 16) == 0 ||
                memcmp(&s6->sin6_addr, &in6addr_any, 16) == 0)
                return 1;
        }
    }
    return 0;
}

/* Does a Via field carry this proxy's received-by? Then the request has
 * been through here already: a loop. */
static int via_has_self(struct conn *c)
{
    const struct http_head *h = &c->req;
    const char *token = c->w->via_token;
    size_t tlen = strlen(token);
    for (int i = http_head_find(h, "Via", 0); i >= 0; i = http_head_find(h, "Via", i + 1)) {
        const struct http_field *f = &h->fields[i];
        const char *v = h->buf + f->value, *end = v + f->value_len;
        for (const char *p = v; p + tlen <= end; p++) {
            if (strncasecmp(p, token, tlen) == 0 && (p == v || p[-1] == ' ') &&
                (p + tlen == end || p[tlen] == ' ' || p[tlen] == ','))
                return 1;
        }
    }
    return 0;
}

static int base64_encode(const char *in, size_t n, char *out, size_t outlen)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (n + 2) / 3 * 4 + 1, o = 0;
    if (need > outlen)
        return -1;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return 0;
}

static int proxy_auth_ok(struct conn *c)
{
    const char *cred = c->w->opts->proxy_auth;
    char want[512];
    if (base64_encode(cred, strlen(cred), want, sizeof want) != 0)
        return 0;
    size_t len;
    const char *v = http_head_get(&c->req, "Proxy-Authorization", &len);
    if (!v || len < 6 || strncasecmp(v, "Basic ", 6) != 0)
        return 0;
    v += 6;
    len -= 6;
    while (len && *v == ' ')
        v++, len--;
    return len == strlen(want) && memcmp(v, want, len) == 0;
}

/* Access, loops, authentication, Max-Forwards. Returns 0 to go on, or
 * answers itself and returns 1. */
static int check_policy(struct conn *c)
{
    struct exchange *x = &c->x;
    const struct run_options *o = c->w->opts;
    if (!worker_client_allowed(c->w, (const struct sockaddr *)&c->peer)) {
        c->close_after = 1;
        answer(c, 403, NULL, NULL, NULL);
        return 1;
    }
    if (via_has_self(c) || (x->forward_mode && targets_self(c, x->up_host, x->up_port))) {
        set_error(c, "loop");
        answer(c, 508, NULL, NULL, NULL);
        return 1;
    }
    if (o->proxy_auth && x->forward_mode) {
        if (!proxy_auth_ok(c)) {
            answer(c, 407, NULL, "Proxy-Authenticate: Basic realm=\"statusproxy\"\r\n", NULL);
            return 1;
        }
        http_head_remove(&c->req, "Proxy-Authorization");
    }
    if (x->is_connect) {
        int allowed = 0;
        for (size_t i = 0; i < o->n_connect_ports; i++)
            allowed |= o->connect_ports[i] == x->up_port;
        if (!allowed) {
            c->close_after = 1;
            answer(c, 403, NULL, NULL, NULL);
            return 1;
        }
    }
    if (x->method == HTTP_OPTIONS || x->method == HTTP_TRACE) {
        size_t len;
        const char *mf = http_head_get(&c->req, "Max-Forwards", &len);
        if (mf) {
            long v = 0;
            size_t i = 0;
            for (; i < len && i < 9 && mf[i] >= '0' && mf[i] <= '9'; i++)
                v = v * 10 + (mf[i] - '0');
            if (i == len && len > 0) {
                x->max_forwards = (int)v;
                http_head_remove(&c->req, "Max-Forwards");
            }
        }
        if (x->max_forwards == 0) {
            /* RFC 9110 §7.6.2: the last recipient answers itself. */
            if (x->method == HTTP_OPTIONS)
                answer(c, 200, NULL,
                       "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT\r\n", "");
            else
                answer(c, 405, NULL,
                       "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT\r\n", NULL);
            return 1;
        }
    }
    return 0;
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
    if (v && units_parse_duration(v, len, &ms) == 0 && ms <= 600000) {
        x->delay_ms = ms;
        x->fault_rule = "fault-header";
        size_t used = strlen(x->fault_action);
        char d[32];
        units_format_duration(ms, d, sizeof d);
        snprintf(x->fault_action + used, sizeof x->fault_action - used, "%sdelay %s",
                 used ? " " : "", d);
    }
}

static void fill_rules_exchange(struct conn *c, struct rules_exchange *rx, int status)
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
}

static void on_ptimer_abort(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct exchange *x = &c->x;
    if (x->do_reset) {
        conn_close(c, CLOSE_RESET);
        return;
    }
    answer(c, x->abort_code, x->abort_actions, NULL, NULL);
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
    uv_timer_start(&c->ptimer, on_ptimer_abort, x->delay_ms, 0);
}

static void on_request_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->req;
    timer_stop(&c->timer);
    exchange_begin(c);
    c->phase = PH_EXCHANGE;
    h->method = llhttp_get_method(&c->parser);
    h->major = llhttp_get_http_major(&c->parser);
    h->minor = llhttp_get_http_minor(&c->parser);
    x->method = h->method;
    snprintf(x->method_name, sizeof x->method_name, "%s", http_method_str(h->method));
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
    if (c->w->opts->fault_headers)
        read_fault_headers(c);
    if (x->rules && !x->abort_code) {
        struct rules_exchange rx;
        fill_rules_exchange(c, &rx, 0);
        x->has_req_v = rules_match(x->rules, RULES_REQUEST, &rx, &x->req_v);
        if (x->has_req_v) {
            const struct rule_actions *a = x->req_v.actions;
            if (a->abort_code) {
                x->abort_code = a->abort_code;
                x->abort_actions = a;
                x->delay_ms = x->req_v.delay_ms;
            }
        }
    }
    if (x->abort_code) {
        abort_request(c);
        return;
    }
    if (!body_ahead_ok(c)) {
        refuse_request(c, 400, "malformed request body");
        return;
    }
    start_upstream(c);
}

/* ---------- talking to the upstream ---------- */

static void on_xtimer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->phase != PH_EXCHANGE)
        return;
    fail_exchange(c, 504, "timeout");
}

static void arm_response_timeout(struct conn *c)
{
    uv_timer_start(&c->xtimer, on_xtimer, c->w->opts->response_timeout_ms, 0);
}

static void build_request_head(struct conn *c)
{
    struct exchange *x = &c->x;
    struct http_head *h = &c->req;
    struct sbuf *out = &x->req_head;
    sbuf_reset(out);
    sbuf_printf(out, "%s ", x->method_name);
    if (x->target.form == TARGET_ABSOLUTE) {
        if (x->target.path_only_len == 0)
            sbuf_putc(out, '/');
        sbuf_append(out, x->target.path, x->target.path_len);
    } else {
        sbuf_append(out, x->target.path, x->target.path_len);
    }
    sbuf_puts(out, " HTTP/1.1\r\n");
    if (x->forward_mode || http_head_find(h, "Host", 0) < 0) {
        /* Forward mode: Host names the target. An HTTP/1.0 request without
         * Host gets the upstream's, since HTTP/1.1 requires one. */
        char auth[300];
        target_format_authority(x->up_host, x->up_port, 1, auth, sizeof auth);
        sbuf_printf(out, "Host: %s\r\n", auth);
        http_head_remove(h, "Host");
    }
    drop_hop_by_hop(h, x->is_upgrade);
    write_fields(out, h);
    sbuf_printf(out, "Via: %s\r\n", c->w->via_value);
    if (x->max_forwards > 0)
        sbuf_printf(out, "Max-Forwards: %d\r\n", x->max_forwards - 1);
    if (x->req_chunked)
        sbuf_puts(out, "Transfer-Encoding: chunked\r\n");
    else if (c->parser.flags & F_CONTENT_LENGTH)
        sbuf_printf(out, "Content-Length: %llu\r\n", (unsigned long long)x->req_length);
    if (x->is_upgrade)
        sbuf_puts(out, "Connection: Upgrade\r\n");
    sbuf_puts(out, "\r\n");
}

static void send_body_to_upstream(struct conn *c, const char *at, size_t len)
{
    struct sender *s = upstream_sender(c->x.up);
    if (c->x.req_chunked) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        sender_copy(s, line, (size_t)n);
        sender_ref(s, c->in, at, len);
        sender_static(s, "\r\n", 2);
    } else {
        sender_ref(s, c->in, at, len);
    }
}

static void upstream_flush(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->up)
        return;
    struct sender *s = upstream_sender(x->up);
    if (sender_flush(s) != 0) {
        fail_exchange(c, 502, "upstream_closed");
        return;
    }
    if (s->inflight > WRITE_HIGH)
        c->hold_client = 1;
}

/* The upstream is ready: send the head, then let the body flow. */
static void send_request(struct conn *c)
{
    struct exchange *x = &c->x;
    struct sender *s = upstream_sender(x->up);
    x->up_ready = 1;
    sender_copy(s, x->req_head.data, x->req_head.len);
    upstream_flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    llhttp_init(&c->rparser, HTTP_RESPONSE, &response_settings);
    c->resp_crlf = 0;
    c->rparser.data = c;
    http_head_reset(&c->resp);
    arm_response_timeout(c);
    if (x->req == REQ_BODY) {
        client_parse(c);
        if (c->phase == PH_CLOSED)
            return;
        update_reading(c);
    }
}

static void on_tunnel_reading(void *owner)
{
    update_reading(owner);
}

static void on_tunnel_finished(void *owner, const char *error)
{
    struct conn *c = owner;
    if (error)
        set_error(c, error);
    conn_close(c, CLOSE_NOW);
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
    timer_stop(&c->xtimer);
    x->resp_head_sent = 1;
    x->resp = RESP_DONE;
    c->phase = PH_TUNNEL;
    c->tunnel = tunnel_new(&c->out, x->up, &tunnel_ops, c);
    x->up = NULL; /* the tunnel owns it now */
    client_flush(c);
    if (c->phase != PH_TUNNEL)
        return;
    if (c->up_in) {
        tunnel_from_upstream(c->tunnel, c->up_in, c->up_pos);
        chunk_unref(c->up_in);
        c->up_in = NULL;
    }
    if (c->phase != PH_TUNNEL)
        return;
    if (c->in)
        tunnel_from_client(c->tunnel, c->in, c->in_pos);
    release_input(c);
    if (c->phase == PH_TUNNEL)
        update_reading(c);
}

static void on_up_connect(struct upstream *u, int status, void *owner)
{
    struct conn *c = owner;
    struct exchange *x = &c->x;
    UNUSED(u);
    if (status != 0) {
        LOG(LOG_DEBUG, "c%llu upstream %s:%d: %s", (unsigned long long)c->id, x->up_host,
            x->up_port, uv_strerror(status));
        fail_exchange(c, status == UPSTREAM_ETIMEDOUT ? 504 : 502, uv_error_name(status));
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

static void start_upstream(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->is_connect)
        build_request_head(c);
    x->up = upstream_acquire(c->w->pool, x->up_host, x->up_port, x->is_connect || x->is_upgrade,
                             &up_ops, c, &x->up_reused);
    uv_timer_start(&c->xtimer, on_xtimer,
                   c->w->opts->connect_timeout_ms + c->w->opts->response_timeout_ms, 0);
    if (x->up_reused)
        send_request(c);
}

/* A reused connection failed before any response byte: the backend closed
 * it while it sat in the pool. A request without a body is sent once more on
 * a new connection (RFC 9112 §9.3.1 allows retrying idempotent requests;
 * a request that never reached the application is safe to send again). */
static int retry_on_fresh_connection(struct conn *c)
{
    struct exchange *x = &c->x;
    if (!x->up_reused || x->retried || x->up_seen || x->req_has_body || x->is_upgrade)
        return 0;
    x->retried = 1;
    detach_upstream(c, 0);
    x->up_ready = 0;
    x->up = upstream_acquire(c->w->pool, x->up_host, x->up_port, 1, &up_ops, c, &x->up_reused);
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
        fail_exchange(c, 502, "upstream_closed");
        return;
    }
    struct sender *s = upstream_sender(c->x.up);
    if (c->hold_client && s->inflight < WRITE_LOW) {
        c->hold_client = 0;
        if (c->x.req == REQ_BODY) {
            /* Progress on the request body counts as upstream activity. */
            arm_response_timeout(c);
            client_parse(c);
            if (c->phase != PH_CLOSED)
                update_reading(c);
        }
    }
}

static void handle_upstream_eof(struct conn *c, int status);

static void on_up_read(struct upstream *u, ssize_t nread, struct chunk *ch, void *owner)
{
    struct conn *c = owner;
    UNUSED(u);
    if (c->phase == PH_TUNNEL) {
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
    c->x.up_seen = 1;
    c->up_in = ch;
    c->up_pos = 0;
    arm_response_timeout(c);
    upstream_parse(c);
}

static const struct upstream_ops up_ops = {
    .on_connect = on_up_connect,
    .on_read = on_up_read,
    .on_written = on_up_written,
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
        c->x.resp_skip_body = 1;
        return 1;
    }
    return HPE_PAUSED;
}

static void send_body_to_client(struct conn *c, struct chunk *ch, const char *at, size_t len);

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (!c->x.resp_discard)
        send_body_to_client(c, c->up_in, at, len);
    if (chunk_piece_done(p, at + len, c->up_in->data + c->up_in->len, &c->resp_crlf) != 0)
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
    if (c->x.out_mode == OUT_CHUNKED) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        sender_copy(&c->out, line, (size_t)n);
        sender_ref(&c->out, ch, at, len);
        sender_static(&c->out, "\r\n", 2);
    } else {
        sender_ref(&c->out, ch, at, len);
    }
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

static void on_pace_tick(uv_timer_t *t);

static void truncate_reached(struct conn *c)
{
    /* The answer is cut here: the client sees a short body and a close. */
    struct exchange *x = &c->x;
    x->resp = RESP_DONE;
    x->resp_complete = 0;
    pace_clear(&x->pace);
    timer_stop(&c->xtimer);
    detach_upstream(c, 0);
    record_exchange(c);
    close_gracefully(c);
}

static void send_body_to_client(struct conn *c, struct chunk *ch, const char *at, size_t len)
{
    struct exchange *x = &c->x;
    if (x->truncate_left == 0)
        return;
    if (x->truncate_left > 0 && (int64_t)len > x->truncate_left)
        len = (size_t)x->truncate_left;
    if (x->truncate_left > 0)
        x->truncate_left -= (int64_t)len;
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
    client_flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->truncate_left == 0 && pc->n == 0) {
        truncate_reached(c);
        return;
    }
    if (pc->bytes < PACE_QUEUE_MAX) {
        upstream_parse(c);
        if (c->phase != PH_EXCHANGE)
            return;
    }
    if (pc->n == 0 && x->resp_complete) {
        if (x->out_mode == OUT_CHUNKED)
            sender_static(&c->out, "0\r\n\r\n", 5);
        client_flush(c);
        exchange_maybe_finish(c);
    }
}

/* ---------- response head: rules, rewrite, framing ---------- */

/* Apply one rule's response-side actions on top of what is set. */
static void apply_actions(struct conn *c, const struct rule_actions *a, uint64_t delay_ms,
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
        http_head_add_field(&c->resp, n, strlen(n), v, strlen(v));
    }
    if (a->has_delay)
        *delay = delay_ms;
    if (a->throttle_bps)
        x->pace.bps = a->throttle_bps;
    if (a->truncate >= 0)
        x->truncate_left = a->truncate;
    if (a->reset)
        x->do_reset = 1;
}

static void on_ptimer_release(uv_timer_t *t);

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
        fail_exchange(c, 502, "invalid_status");
        return;
    }
    if (h->major != 1) {
        fail_exchange(c, 502, "bad_response");
        return;
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (!http_is_token(h->buf + f->name, f->name_len) ||
            !http_is_field_value(h->buf + f->value, f->value_len)) {
            fail_exchange(c, 502, "bad_response");
            return;
        }
    }
    if (status < 200) {
        x->resp_interim = 1;
        if (status == 101) {
            if (!x->is_upgrade) {
                fail_exchange(c, 502, "bad_response");
                return;
            }
            x->resp_interim = 0;
            send_response_head(c);
            return;
        }
        /* 1xx: relayed to HTTP/1.1 clients before the final answer; never
         * to HTTP/1.0 clients (RFC 9110 §15.2). */
        if (c->req.minor == 1) {
            struct sbuf out = {0};
            sbuf_printf(&out, "HTTP/1.1 %d ", status);
            sbuf_append(&out, h->buf + h->reason, h->reason_len);
            sbuf_puts(&out, "\r\n");
            drop_hop_by_hop(h, 0);
            write_fields(&out, h);
            sbuf_printf(&out, "Via: %s\r\n\r\n", c->w->via_value);
            sender_copy(&c->out, out.data, out.len);
            sbuf_free(&out);
            client_flush(c);
        }
        return;
    }
    x->resp_interim = 0;
    x->resp_keepalive = llhttp_should_keep_alive(&c->rparser);
    /* Response rules see the upstream's status. */
    if (x->rules && rules_has_phase(x->rules, RULES_RESPONSE)) {
        struct rules_exchange rx;
        fill_rules_exchange(c, &rx, status);
        x->has_resp_v = rules_match(x->rules, RULES_RESPONSE, &rx, &x->resp_v);
    }
    if (x->has_resp_v && x->resp_v.actions->abort_code) {
        /* The upstream's answer is replaced; its connection is not reusable. */
        const struct rule_actions *a = x->resp_v.actions;
        detach_upstream(c, 0);
        timer_stop(&c->xtimer);
        x->abort_code = a->abort_code;
        x->abort_actions = a;
        x->delay_ms = x->resp_v.delay_ms;
        x->resp = RESP_HOLD;
        if (x->req != REQ_DONE)
            c->close_after = 1;
        uv_timer_start(&c->ptimer, on_ptimer_abort, x->delay_ms, 0);
        return;
    }
    send_response_head(c);
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
    size_t cl_len = 0;
    const char *cl = http_head_get(h, "Content-Length", &cl_len);
    char clbuf[24];
    if (cl) {
        snprintf(clbuf, sizeof clbuf, "%.*s", (int)(cl_len < 23 ? cl_len : 23), cl);
        cl = clbuf;
    }
    int up_chunked = (c->rparser.flags & F_CHUNKED) != 0;
    drop_hop_by_hop(h, upgrade);
    if (x->has_req_v)
        apply_actions(c, x->req_v.actions, x->req_v.delay_ms, &status, &reason, &delay);
    if (x->has_resp_v)
        apply_actions(c, x->resp_v.actions, x->resp_v.delay_ms, &status, &reason, &delay);
    x->final_code = status;

    /* Framing towards the client. */
    int up_has_body = !x->is_head && catalog_body(h->status) == CATALOG_BODY_ALLOWED;
    enum catalog_body kind = catalog_body(status);
    struct sbuf out = {0};
    if (status == h->status && !reason) {
        sbuf_printf(&out, "HTTP/1.1 %d ", status);
        sbuf_append(&out, h->buf + h->reason, h->reason_len);
        sbuf_puts(&out, "\r\n");
    } else {
        sbuf_printf(&out, "HTTP/1.1 %d %s\r\n", status, reason ? reason : catalog_reason(status));
    }
    write_fields(&out, h);
    sbuf_printf(&out, "Via: %s\r\n", c->w->via_value);
    const struct rule *rule = x->has_resp_v ? x->resp_v.rule : x->has_req_v ? x->req_v.rule : NULL;
    if (c->w->opts->mark_faults && (rule || x->fault_rule))
        sbuf_printf(&out, "X-Statusproxy-Rule: %s\r\n", rule ? rule_name(rule) : x->fault_rule);
    if (upgrade) {
        sbuf_puts(&out, "Connection: Upgrade\r\n\r\n");
        x->out_mode = OUT_NONE;
    } else {
        if (x->is_head || kind == CATALOG_BODY_NONE) {
            /* No body to this client. HEAD keeps the representation's
             * length; 304 may too; 204 and 1xx carry none (RFC 9110 §8.6). */
            x->out_mode = OUT_NONE;
            x->resp_discard = 1;
            if (cl && (x->is_head || status == 304) && status == h->status)
                sbuf_printf(&out, "Content-Length: %s\r\n", cl);
            else if (x->is_head && up_chunked && c->req.minor == 1 && status == h->status)
                sbuf_puts(&out, "Transfer-Encoding: chunked\r\n");
        } else if (kind == CATALOG_BODY_EMPTY || !up_has_body) {
            /* 205, or a status that needs a body where the upstream sent
             * none (set-status 200 on a 204): an empty one. */
            x->out_mode = OUT_NONE;
            x->resp_discard = 1;
            sbuf_puts(&out, "Content-Length: 0\r\n");
        } else if (cl && !up_chunked) {
            x->out_mode = OUT_LENGTH;
            sbuf_printf(&out, "Content-Length: %s\r\n", cl);
        } else if (c->req.minor == 1) {
            x->out_mode = OUT_CHUNKED;
            sbuf_puts(&out, "Transfer-Encoding: chunked\r\n");
        } else {
            x->out_mode = OUT_CLOSE;
            c->close_after = 1;
        }
        if (x->req != REQ_DONE) {
            /* The upstream answered before the request ended: what is left
             * of the request body is dropped and the connection closed. */
            c->close_after = 1;
            x->sink = SINK_DISCARD;
        }
        put_connection_header(c, &out);
        sbuf_puts(&out, "\r\n");
    }
    x->held_head = out;
    if (delay == 0 && !x->do_reset) {
        release_response_head(c);
        return;
    }
    /* Held for a delay, or until the reset: the parser stays paused and the
     * upstream is not read meanwhile. */
    x->resp = RESP_HOLD;
    timer_stop(&c->xtimer);
    uv_timer_start(&c->ptimer, on_ptimer_release, delay, 0);
}

/* Send the prepared head; the body follows as it is parsed. */
static void release_response_head(struct conn *c)
{
    struct exchange *x = &c->x;
    if (x->do_reset) {
        sbuf_free(&x->held_head);
        set_error(c, "reset");
        x->final_code = -1;
        conn_close(c, CLOSE_RESET);
        return;
    }
    sender_copy(&c->out, x->held_head.data, x->held_head.len);
    sbuf_free(&x->held_head);
    x->resp_head_sent = 1;
    x->resp = RESP_BODY;
    if (c->resp.status == 101)
        start_tunnel(c);
}

static void on_ptimer_release(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->phase != PH_EXCHANGE)
        return;
    release_response_head(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (c->x.done_pending) {
        c->x.done_pending = 0;
        on_response_done(c);
        return;
    }
    arm_response_timeout(c);
    upstream_parse(c);
}

/* The upstream's message is complete (or its body, when close-delimited, ended). */
static void on_response_done(struct conn *c)
{
    struct exchange *x = &c->x;
    timer_stop(&c->xtimer);
    x->resp_complete = 1;
    if (x->pace.n) {
        x->resp = RESP_DONE;
        return; /* the pace timer finishes the answer */
    }
    if (x->out_mode == OUT_CHUNKED)
        sender_static(&c->out, "0\r\n\r\n", 5);
    x->resp = RESP_DONE;
    client_flush(c);
    if (c->phase != PH_EXCHANGE)
        return;
    if (x->out_mode == OUT_CLOSE)
        c->close_after = 1;
    exchange_maybe_finish(c);
}

static int can_parse_response(struct conn *c)
{
    struct exchange *x = &c->x;
    return c->phase == PH_EXCHANGE && x->up && x->resp != RESP_HOLD && x->resp != RESP_DONE &&
           !c->hold_upstream && x->pace.bytes < PACE_QUEUE_MAX && x->truncate_left != 0;
}

/* Feed pending upstream bytes to the response parser. */
static void upstream_parse(struct conn *c)
{
    struct exchange *x = &c->x;
    for (;;) {
        size_t len = c->up_in ? c->up_in->len - c->up_pos : 0;
        if ((len == 0 && !c->up_kick) || !can_parse_response(c))
            break;
        const char *data = c->up_in ? c->up_in->data + c->up_pos : "";
        if (c->resp_crlf && check_chunk_crlf(data, data + len, &c->resp_crlf) != 0) {
            fail_exchange(c, 502, "bad_response");
            return;
        }
        c->up_kick = 0;
        c->revent = 0;
        llhttp_errno_t err = llhttp_execute(&c->rparser, data, len);
        size_t used = len;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&c->rparser) - data);
            c->up_kick = 1;
            if (err == HPE_PAUSED)
                llhttp_resume(&c->rparser);
        } else if (err != HPE_OK) {
            LOG(LOG_DEBUG, "c%llu bad response from %s:%d: %s", (unsigned long long)c->id,
                x->up_host, x->up_port, llhttp_get_error_reason(&c->rparser));
            fail_exchange(c, 502, "bad_response");
            return;
        }
        c->up_pos += used;
        if (c->revent & EV_HEAD) {
            on_response_head(c);
            if (c->phase != PH_EXCHANGE)
                return;
        }
        if (c->revent & EV_DONE) {
            if (x->resp_interim) {
                x->resp_interim = 0;
                continue;
            }
            if (x->resp == RESP_HOLD) {
                x->done_pending = 1; /* finished once the held head is out */
                break;
            }
            if (c->resp.status == 101)
                return; /* the tunnel has taken over */
            on_response_done(c);
            if (c->phase != PH_EXCHANGE || x->resp == RESP_DONE)
                break;
        }
        if (x->truncate_left == 0 && !x->pace.n) {
            client_flush(c);
            if (c->phase == PH_EXCHANGE)
                truncate_reached(c);
            return;
        }
    }
    if (c->phase != PH_EXCHANGE)
        return;
    client_flush(c);
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
        }
    }
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
    if (!x->up_seen && retry_on_fresh_connection(c))
        return;
    const char *error = status == UV_EOF ? "upstream_closed" : "upstream_reset";
    if (x->resp_head_sent) {
        /* Mid-body: the client must see an incomplete answer, never a
         * clean short one: close without the terminating chunk. */
        set_error(c, error);
        x->resp = RESP_DONE;
        detach_upstream(c, 0);
        client_flush(c);
        if (c->phase == PH_CLOSED)
            return;
        record_exchange(c);
        close_gracefully(c);
        return;
    }
    fail_exchange(c, 502, x->up_seen ? "bad_response" : error);
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
    exchange_maybe_finish(c);
}

/* A request that llhttp refused: answer and close. */
static void request_parse_error(struct conn *c, llhttp_errno_t err)
{
    int status = c->parse_status ? c->parse_status : 400;
    LOG(LOG_DEBUG, "c%llu bad request: %s", (unsigned long long)c->id,
        llhttp_get_error_reason(&c->parser));
    if (c->phase == PH_EXCHANGE) {
        /* The body was malformed (e.g. a bad chunk size): the exchange
         * cannot be completed; cut it. */
        set_error(c, "bad_request");
        if (!c->x.resp_head_sent && c->x.resp != RESP_HOLD) {
            detach_upstream(c, 0);
            c->close_after = 1;
            c->x.sink = SINK_DISCARD;
            c->x.req = REQ_DONE;
            answer(c, status, NULL, NULL, NULL);
            exchange_maybe_finish(c);
            return;
        }
        conn_close(c, CLOSE_NOW);
        return;
    }
    UNUSED(err);
    /* No exchange yet: record one for the refused request. */
    exchange_begin(c);
    c->phase = PH_EXCHANGE;
    snprintf(c->x.method_name, sizeof c->x.method_name, "%s",
             c->req.target_len ? http_method_str(llhttp_get_method(&c->parser)) : "");
    c->x.req = REQ_DONE;
    c->x.sink = SINK_DISCARD;
    c->close_after = 1;
    set_error(c, "bad_request");
    answer(c, status, NULL, NULL, NULL);
    exchange_maybe_finish(c);
}

/* Feed pending client bytes to the request parser while the state allows.
 * After a pause llhttp may have more to do without any new byte (a request
 * without a body completes right after its head), hence the "kick". */
static void client_parse(struct conn *c)
{
    for (;;) {
        size_t len = c->in ? c->in->len - c->in_pos : 0;
        if ((len == 0 && !c->kick) || !can_parse_request(c))
            break;
        const char *data = c->in ? c->in->data + c->in_pos : "";
        if (c->req_crlf && check_chunk_crlf(data, data + len, &c->req_crlf) != 0) {
            c->parse_status = 400;
            request_parse_error(c, HPE_USER);
            return;
        }
        c->kick = 0;
        c->event = EV_NONE;
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
        upstream_flush(c);
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->in && c->in_pos >= c->in->len)
        release_input(c);
    update_reading(c);
}

/* ---------- timers and accepting ---------- */

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
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
        exchange_begin(c);
        c->phase = PH_EXCHANGE;
        c->x.req = REQ_DONE;
        c->x.sink = SINK_DISCARD;
        c->close_after = 1;
        set_error(c, "header_timeout");
        answer(c, 408, NULL, NULL, NULL);
        exchange_maybe_finish(c);
        break;
    case PH_LINGER:
        conn_close(c, CLOSE_NOW);
        break;
    default:
        break;
    }
}

int conn_accept(struct worker *w, uv_stream_t *server)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->id = ++w->next_conn_id;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    uv_timer_init(&w->loop, &c->xtimer);
    uv_timer_init(&w->loop, &c->ptimer);
    c->tcp.data = c->timer.data = c->xtimer.data = c->ptimer.data = c;
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    /* From here on the connection is on the worker's list and closes
     * through conn_close, even when accepting failed. */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    http_head_init(&c->req, REQ_HEAD_LIMIT);
    http_head_init(&c->resp, RESP_HEAD_LIMIT);
    sender_init(&c->out, (uv_stream_t *)&c->tcp, on_client_written);
    llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
    c->parser.data = c;
    c->x.upstream_code = c->x.final_code = -1;
    if (rc != 0) {
        conn_close(c, CLOSE_NOW);
        return rc;
    }
    int len = sizeof c->peer;
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
    if (c->peer.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&c->peer, c->peer_ip, sizeof c->peer_ip);
    else
        uv_ip4_name((struct sockaddr_in *)&c->peer, c->peer_ip, sizeof c->peer_ip);
    uv_tcp_nodelay(&c->tcp, 1);
    c->phase = PH_IDLE;
    arm_timer(c, w->opts->header_timeout_ms);
    if ((int)w->nconns > (w->opts->max_connections + w->nworkers - 1) / w->nworkers) {
        /* Over the limit: a short answer instead of silence. */
        exchange_begin(c);
        c->phase = PH_EXCHANGE;
        c->x.req = REQ_DONE;
        c->x.sink = SINK_DISCARD;
        c->close_after = 1;
        set_error(c, "max_connections");
        answer(c, 503, NULL, "Retry-After: 1\r\n", NULL);
        exchange_maybe_finish(c);
        return 0;
    }
    update_reading(c);
    return 0;
}
