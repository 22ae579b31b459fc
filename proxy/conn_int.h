/*
 * conn_int.h — what conn.c (the client connection), exchange.c (the life of
 * an exchange) and relay.c (its upstream side) share: the connection and
 * exchange structs, the exchange's states with their transitions, the
 * callback structs through which the lower files reach the upper ones, and
 * relay.c's functions. Private to those three files; everyone else uses
 * conn.h. Calls go down only: conn -> exchange -> relay.
 */
#ifndef STATUSPROXY_CONN_INT_H
#define STATUSPROXY_CONN_INT_H

#include <llhttp.h>
#include <uv.h>

#include "chunk.h"
#include "deadline.h"
#include "conn.h"
#include "http.h"
#include "rules.h"
#include "sender.h"
#include "target.h"
#include "transport.h"
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

enum phase { PH_IDLE, PH_HEAD, PH_EXCHANGE, PH_TUNNEL, PH_HANDSHAKE, PH_LINGER, PH_CLOSED };
/* CONNECT interception on a client connection (DESIGN §9):
 *   ICPT_NONE -> ICPT_HANDSHAKE  conn.c, a CONNECT to an intercepted host
 *                                was answered 200 and TLS wraps the client
 *   ICPT_HANDSHAKE -> ICPT_OPEN  the client's handshake completed; every
 *                                request after goes to c->icpt_host */
enum icpt_state { ICPT_NONE, ICPT_HANDSHAKE, ICPT_OPEN };
enum close_how { CLOSE_NOW, CLOSE_RESET };
/* The client side's TLS: none (plain), the handshake under way, done. */
enum client_tls { CTLS_NONE, CTLS_HANDSHAKE, CTLS_OPEN };

/*
 * The states of one exchange, one enum per direction (the connection's own
 * is enum phase above, see conn.c). Every transition is a named function;
 * each callback checks the state it expects and ignores one it does not (or
 * fails the exchange with 502 "internal" where going on would be wrong).
 *
 *   from             -> to               by (file)                  when
 * Life, x->life:
 *   EX_NONE/RECORDED -> EX_OPEN          exchange_begin (exchange)  a request head, or an
 *                                                                   answer without one
 *   EX_OPEN          -> EX_RECORDED      exchange_record (exchange) finished, cut or closed
 * Request, x->req and x->sink:
 *   REQ_BODY         -> REQ_DONE         on_request_done (conn)     llhttp: message complete
 *                                        answer_and_close, request_parse_error (conn)
 *   SINK_UPSTREAM    -> SINK_DISCARD     on_request_head, refuse_request, answer_and_close,
 *                                        request_parse_error (conn); abort_request,
 *                                        break_answer, exchange_fail (exchange);
 *                                        put_client_framing (relay: answered before
 *                                        the request ended)
 * Upstream connection, x->upc (x->up_origin: UPC_FRESH, UPC_POOLED, UPC_RETRIED):
 *   UPC_NONE         -> UPC_CONNECTING   relay_start (relay)        upstream chosen
 *   UPC_CONNECTING   -> UPC_SENT         send_request (relay)       connected, or reused
 *   UPC_SENT         -> UPC_ANSWERING    on_up_read (relay)         first response byte
 *   UPC_CONNECTING/SENT -> UPC_CONNECTING retry_on_fresh_connection a pooled connection
 *                                        (relay)                    failed: once, UPC_RETRIED
 * Upstream message, x->msg (the response parser, relay):
 *   MSG_HEAD         -> MSG_INTERIM      on_response_head           a 1xx; its end is owed
 *   MSG_INTERIM      -> MSG_HEAD         relay_parse_responses      the 1xx ended
 *   MSG_HEAD         -> MSG_BODY         on_response_head           a final head, or 101
 *   MSG_BODY         -> MSG_COMPLETE     on_response_done; relay_parse_responses while
 *                                        the answer is held (finished when released)
 *   any              -> MSG_CUT          truncate_reached           cut: not reusable
 * Answer to the client, x->resp:
 *   RESP_WAIT        -> RESP_HOLD        abort_request, replace_answer (exchange);
 *                                        release_or_hold_head (relay) a delay or reset
 *   RESP_WAIT/HOLD   -> RESP_SLOW        exchange_answer (exchange); release_response_head
 *                                        (relay)                    slow-head trickles
 *   RESP_WAIT/HOLD/SLOW -> RESP_BODY     release_response_head (relay) head out, body next
 *   RESP_WAIT/HOLD   -> RESP_DONE        exchange_answer (exchange) our own answer, whole
 *   RESP_SLOW        -> RESP_DONE        on_slow_answer_done (exchange)
 *   RESP_WAIT/BODY   -> RESP_DONE        on_response_done, truncate_reached,
 *                                        handle_upstream_eof, start_tunnel (relay)
 *   The head is (partly) on the wire in RESP_SLOW, RESP_BODY and RESP_DONE:
 *   exchange_head_sent.
 * Backpressure, one per direction (c->req_flow, c->resp_flow):
 *   req_flow  FLOW_OPEN -> FLOW_HELD     relay_flush_upstream       upstream queue > WRITE_HIGH
 *             FLOW_HELD -> FLOW_OPEN     on_up_written              ... < WRITE_LOW
 *   resp_flow FLOW_OPEN -> FLOW_HELD     conn_flush                 client queue > WRITE_HIGH
 *             FLOW_HELD -> FLOW_OPEN     on_client_written          ... < WRITE_LOW
 */
enum exchange_life { EX_NONE, EX_OPEN, EX_RECORDED };
enum req_state { REQ_BODY, REQ_DONE };
enum req_sink { SINK_UPSTREAM, SINK_DISCARD };
enum upc_state { UPC_NONE, UPC_CONNECTING, UPC_SENT, UPC_ANSWERING };
enum upc_origin { UPC_FRESH, UPC_POOLED, UPC_RETRIED };
enum msg_state { MSG_HEAD, MSG_INTERIM, MSG_BODY, MSG_COMPLETE, MSG_CUT };
enum resp_state { RESP_WAIT, RESP_HOLD, RESP_SLOW, RESP_BODY, RESP_DONE };
enum flow { FLOW_OPEN, FLOW_HELD };
enum body_out { OUT_NONE, OUT_LENGTH, OUT_CHUNKED, OUT_CLOSE };

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
    enum exchange_life life;
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
    /* DESIGN §10 faults, from a rule of either phase or a fault header */
    enum rules_break brk;        /* hang, empty or garbage instead of the answer */
    uint64_t brk_arg;            /* hang: ms (0: until the client leaves); garbage: bytes */
    int bad_chunk;               /* break the chunked framing after the first chunk */
    uint64_t slow_head_ms;       /* spread the answer's head over this */
    uint64_t slow_start_ms;      /* when the slow head began */
    size_t slow_len, slow_sent;  /* head bytes to spread, and sent so far */
    uv_timer_cb slow_done;       /* sends what is left once the time is up */
    uint64_t retry_after_s;      /* for set-header Retry-After auto */
    int fault_slot;              /* holds one of --max-active-faults */

    /* upstream and response */
    struct upstream *up;
    enum upc_state upc;
    enum upc_origin up_origin;
    int up_eof;                  /* an EOF/error status held until the pending bytes are parsed (0: none) */
    struct sbuf req_head;        /* the forwarded head, kept for one retry */
    int upstream_code;           /* -1: none */
    int final_code;              /* -1: none */
    enum msg_state msg;
    enum resp_state resp;
    int resp_discard;            /* upstream body is dropped (framing chose so) */
    int resp_keepalive;          /* upstream connection reusable afterwards */
    enum body_out out_mode;
    int64_t truncate_left;       /* -1: no truncate */
    int truncated;               /* truncate dropped body bytes */
    int do_reset;                /* a reset action: close with RST instead of the head */
    struct pace pace;
    struct sbuf held_head;       /* the answer's head, while held by a delay */
    const char *answer_ctype;    /* Content-Type of a synthesized body; NULL: text/plain */
    char error[32];
    int64_t retry_after_ms;      /* the answer's Retry-After (429, 5xx); 0: none */
};

struct conn;

/* What the client connection does for the layers below it (conn.c fills it
 * in at accept time): the exchange and the relay reach conn.c only through
 * these. */
struct exchange_client_ops {
    /* Submit what is queued to the client; closes the connection on failure. */
    void (*flush)(struct conn *c);
    void (*close)(struct conn *c, enum close_how how);
    /* Close once everything queued to the client is written. */
    void (*close_gracefully)(struct conn *c);
    /* Start or stop reading from the client as the state asks. */
    void (*update_reading)(struct conn *c);
    /* Feed pending client bytes to the request parser while the state allows. */
    void (*parse_requests)(struct conn *c);
    void (*release_input)(struct conn *c);
    /* A byte went through the tunnel: push its idle deadline back. */
    void (*tunnel_active)(struct conn *c);
    /* The exchange is over and the connection stays: wait for the next request. */
    void (*next_request)(struct conn *c);
};

/* What the relay reports to the exchange that owns it (exchange.c fills it
 * in): relay.c reaches exchange.c only through these. */
struct relay_events {
    /* The exchange cannot go on: answer CODE, or cut the answer already begun. */
    void (*fail)(struct conn *c, int code, const char *error);
    /* The answer may be complete: finish the exchange if both sides are done. */
    void (*maybe_finish)(struct conn *c);
    /* Hand the finished (or cut) exchange to the recorder, once. */
    void (*record)(struct conn *c);
    /* A response rule replaces the answer: send x.abort_* after DELAY ms. */
    void (*replace_answer)(struct conn *c, uint64_t delay_ms);
    /* See exchange_take_faults. */
    int (*take_faults)(struct conn *c, const struct rules_verdict *v);
    /* See exchange_slow_head. */
    void (*slow_head)(struct conn *c, uv_timer_cb done);
    /* What the rule matchers see of the exchange (STATUS: upstream's). */
    void (*rules_exchange)(struct conn *c, struct rules_exchange *rx, int status);
};

struct conn {
    struct tcp_transport tcp;    /* the client socket */
    struct transport *tr;        /* client bytes go through it: &tcp.base (TLS: a wrapper) */
    struct deadline timer;       /* idle / header timeout, linger */
    struct deadline xtimer;      /* upstream connect and response timeout */
    uv_timer_t ptimer;           /* delay and throttle pacing */
    struct conn_env *env;        /* the worker's, handed over at accept */
    const struct exchange_client_ops *client; /* up into conn.c */
    const struct relay_events *events;        /* up from relay.c into exchange.c */
    struct conn *prev, *next;    /* worker's list */
    uint64_t id;
    struct sockaddr_storage peer;
    char peer_ip[48];
    enum phase phase;
    enum client_tls client_tls;  /* a --tls-listen client: TLS from accept on */
    int over_limit;              /* over --max-connections: answer 503 once TLS is up */
    int pending_closes;
    int reading;
    int close_after;             /* close once the current answer is written */
    int client_eof;              /* the client half-closed */
    int stop_requested;          /* the worker is stopping */
    int nrequests;
    enum flow req_flow;          /* client parsing held by upstream backpressure */
    enum flow resp_flow;         /* upstream reading held by client backpressure */

    llhttp_t parser;             /* requests */
    llhttp_t rparser;            /* responses of the current exchange */
    int event, revent;
    int kick, up_kick;           /* run the parser once more, even without bytes */
    int req_crlf, resp_crlf;     /* CRLF bytes still expected after chunk data */
    int parse_status;            /* status for a failed request parse (400, 414, 431) */
    uint32_t head_bytes;         /* wire bytes of the request head so far */
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
    enum icpt_state icpt;        /* interception of this connection's CONNECT */
    char icpt_host[256];         /* the CONNECT authority requests inside go to */
    int icpt_port;
    struct exchange x;
};

/* Record ERROR for the exchange unless one is recorded already. */
static inline void exchange_set_error(struct exchange *x, const char *error)
{
    if (!x->error[0])
        str_copy(x->error, sizeof x->error, error);
}

/* The rule an exchange is recorded and marked under: the response rule,
 * else the request rule; NULL when no rule acted (a fault header may have:
 * x->fault_rule). */
static inline const struct rule *exchange_rule(const struct exchange *x)
{
    return x->has_resp_v ? x->resp_v.rule : x->has_req_v ? x->req_v.rule : NULL;
}

/* Its name, for the record and X-Statusproxy-Rule; NULL when none acted. */
static inline const char *exchange_rule_name(const struct exchange *x)
{
    const struct rule *r = exchange_rule(x);
    return r ? rule_name(r) : x->fault_rule;
}

/* Does the answer being written end the connection? HTTP/1.0 clients keep
 * it only when they asked. */
static inline int exchange_must_close(const struct conn *c)
{
    return c->close_after || !c->x.client_keepalive || c->env->stopping || c->client_eof;
}

/* Is the answer's head (or part of it) on the wire? */
static inline int exchange_head_sent(const struct exchange *x)
{
    return x->resp == RESP_SLOW || x->resp == RESP_BODY || x->resp == RESP_DONE;
}

/* ---- relay.c: the upstream side ---- */

/* Acquire an upstream connection and forward the request head. */
void relay_start(struct conn *c);
/* Queue a request body piece (in c->in) for the upstream, re-framed. */
void relay_forward_body(struct conn *c, const char *at, size_t len);
/* The chunked request body ended: its last chunk for the upstream. */
void relay_end_body(struct conn *c);
/* Submit what is queued to the upstream. */
void relay_flush_upstream(struct conn *c);
/* Feed pending upstream bytes to the response parser while the state allows. */
void relay_parse_responses(struct conn *c);
/* Pause or resume reading from the upstream as the state asks. */
void relay_update_reading(struct conn *c);
/* The connect or response timeout expired (c->xtimer). */
void relay_on_timeout(struct deadline *d);
/* Let go of the upstream connection: to the pool when REUSABLE. */
void relay_detach(struct conn *c, int reusable);
/* Drop body bytes held by throttle. */
void relay_pace_clear(struct pace *pc);

#endif
