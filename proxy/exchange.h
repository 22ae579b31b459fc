/*
 * exchange.h — the exchange's life as conn.c (the client connection) drives
 * it: conn.c hands over the parsed request events; exchange.c owns the rest
 * (rules, answers, failing, finishing, recording) and drives relay.c. The
 * structs and the state table are in conn_int.h.
 */
#ifndef STATUSPROXY_EXCHANGE_H
#define STATUSPROXY_EXCHANGE_H

#include "conn_int.h"

/* A connection was accepted: the relay's events and the upstream timer. */
void exchange_init(struct conn *c, uv_loop_t *loop);
/* A new exchange starts (EX_NONE/EX_RECORDED -> EX_OPEN). */
void exchange_begin(struct conn *c);
/* After the request passed policy: fault headers and request rules; 1 when
 * they answer instead of the upstream. */
int exchange_request_rules(struct conn *c);
/* End the open exchange without recording it: an intercepted CONNECT
 * whose handshake completed (the exchanges inside are recorded instead). */
void exchange_drop(struct conn *c);
/* Finish the exchange if both sides are done; go on with the next request. */
void exchange_maybe_finish(struct conn *c);

/* The request's events as conn.c parses them, passed on to the relay.
 * Inline: they run for every exchange and only forward. */

/* Choose the upstream and send the request there. */
static inline void exchange_forward(struct conn *c)
{
    relay_start(c);
}

/* A request body piece (in c->in) was parsed. */
static inline void exchange_request_body(struct conn *c, const char *at, size_t len)
{
    if (c->x.sink == SINK_UPSTREAM && c->x.up)
        relay_forward_body(c, at, len);
}

/* The request ended (after x.req became REQ_DONE). */
static inline void exchange_request_end(struct conn *c)
{
    if (c->x.sink == SINK_UPSTREAM && c->x.up && c->x.req_chunked)
        relay_end_body(c);
    exchange_maybe_finish(c);
}

/* Parsing paused: send what it queued for the upstream. */
static inline void exchange_push_request(struct conn *c)
{
    if (c->x.up && c->x.sink == SINK_UPSTREAM)
        relay_flush_upstream(c);
}

/* The client's queue went over / under its marks (c->resp_flow changed). */
static inline void exchange_client_held(struct conn *c)
{
    if (c->x.up)
        relay_update_reading(c);
}

static inline void exchange_client_drained(struct conn *c)
{
    relay_parse_responses(c);
}

/* Answer CODE ourselves: DESIGN §3's body unless BODY or the rule's body
 * says otherwise. A: the rule's actions or NULL. EXTRA_HEADERS: complete
 * "Name: value\r\n" lines or NULL. */
void exchange_answer(struct conn *c, int code, const struct rule_actions *a,
                     const char *extra_headers, const char *body);
/* The exchange cannot go on: answer CODE, or cut the answer already begun. */
void exchange_fail(struct conn *c, int code, const char *error);
/* Hand the finished exchange to the worker's recorder (once). */
void exchange_record(struct conn *c);
/* What the rule matchers see of the current exchange (STATUS: upstream's). */
void exchange_rules_exchange(struct conn *c, struct rules_exchange *rx, int status);
/* Take the DESIGN §10 faults of verdict V into the exchange; 0 when the
 * blast-radius cap says skip it (the caller then goes on with the rules
 * after V, as if V had not matched), else 1. */
int exchange_take_faults(struct conn *c, const struct rules_verdict *v);
/* Send x.held_head[0..x.slow_len) spread over x.slow_head_ms, using the
 * pacing timer; then DONE runs (on the timer) and sends what is left. The
 * caller has set x.resp to RESP_SLOW. */
void exchange_slow_head(struct conn *c, uv_timer_cb done);

/* The connection closes: record an open exchange as cut (client_closed). */
void exchange_close(struct conn *c);
/* ... then let go of the upstream, the throttle queue and the rules. */
void exchange_release(struct conn *c);
/* The connection's memory goes: the exchange's buffers too. */
void exchange_free(struct conn *c);

#endif
