/*
 * conn_int.h — what conn.c (the client side of a connection) and relay.c
 * (the upstream side of its exchanges) share: the connection and exchange
 * structs and the functions each half calls in the other. Private to those
 * two files; everyone else uses conn.h.
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
    int truncated;               /* truncate dropped body bytes */
    int do_reset;
    struct pace pace;
    struct sbuf held_head;       /* the answer's head, while held by a delay */
    const char *answer_ctype;    /* Content-Type of a synthesized body; NULL: text/plain */
    char error[32];
    int64_t retry_after_ms;      /* the answer's Retry-After (429, 5xx); 0: none */
};

struct conn {
    struct tcp_transport tcp;    /* the client socket */
    struct transport *tr;        /* client bytes go through it: &tcp.base (TLS: a wrapper) */
    struct deadline timer;       /* idle / header timeout, linger */
    struct deadline xtimer;      /* upstream connect and response timeout */
    uv_timer_t ptimer;           /* delay and throttle pacing */
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
    struct exchange x;
};

/* ---- conn.c: the client side ---- */

/* Record ERROR for the exchange unless one is recorded already. */
void conn_set_error(struct conn *c, const char *error);
/* Submit what is queued to the client; closes the connection on failure. */
void conn_flush(struct conn *c);
void conn_close(struct conn *c, enum close_how how);
/* Close once everything queued to the client is written (lingering close). */
void conn_close_gracefully(struct conn *c);
/* A byte went through the tunnel: push its idle deadline back. */
void conn_tunnel_active(struct conn *c);
/* Start or stop reading from the client as the state asks. */
void conn_update_reading(struct conn *c);
void conn_release_input(struct conn *c);
/* Feed pending client bytes to the request parser while the state allows. */
void conn_parse_requests(struct conn *c);
/* Answer CODE ourselves (see conn.c); A: the rule's actions or NULL. */
void conn_answer(struct conn *c, int code, const struct rule_actions *a, const char *extra_headers,
                 const char *body);
/* Does the answer being written end the connection? HTTP/1.0 clients keep
 * it only when they asked. */
int conn_must_close(const struct conn *c);
/* "Connection: close" / "keep-alive" for the answer being written, if any. */
void conn_put_connection_header(struct conn *c, struct sbuf *h);
/* The exchange cannot go on: answer CODE, or cut the answer already begun. */
void conn_fail(struct conn *c, int code, const char *error);
/* Finish the exchange if both sides are done; go on with the next request. */
void conn_maybe_finish(struct conn *c);
/* Hand the finished exchange to the worker's recorder (once). */
void conn_record(struct conn *c);
/* What the rule matchers see of the current exchange (STATUS: upstream's). */
void conn_rules_exchange(struct conn *c, struct rules_exchange *rx, int status);
/* Timer callback: send the held abort answer (or the reset) of x.abort_*. */
void conn_on_abort_timer(uv_timer_t *t);
/* Take the DESIGN §10 faults of verdict V into the exchange; 0 when the
 * blast-radius cap says skip it (the caller then goes on with the rules
 * after V, as if V had not matched), else 1. */
int conn_take_faults(struct conn *c, const struct rules_verdict *v);
/* Send x.held_head[0..x.slow_len) spread over x.slow_head_ms, using the
 * pacing timer; then DONE runs (on the timer) and sends what is left. */
void conn_slow_head(struct conn *c, uv_timer_cb done);

/* ---- relay.c: the upstream side ---- */

/* Acquire an upstream connection and forward the request head. */
void relay_start(struct conn *c);
/* Queue a request body piece (in c->in) for the upstream, re-framed. */
void relay_forward_body(struct conn *c, const char *at, size_t len);
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
