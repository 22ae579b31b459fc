/*
 * resp_head — the heads the proxy writes, as pure functions over plain
 * values: the answer's head to the client (status rewrite, hop-by-hop
 * fields dropped, Via, X-Statusproxy-Rule, the framing chosen for this
 * client, Connection) and, its mirror, the request head to the upstream.
 * No libuv, no connection: each decision is unit-tested on its exact bytes.
 * Writers append to an sbuf the caller owns and reuses (no malloc per
 * exchange once it has grown), and never printf on the request path.
 */
#ifndef STATUSPROXY_RESP_HEAD_H
#define STATUSPROXY_RESP_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "target.h"
#include "util.h"

/* "Name: value\r\n". */
void resp_head_put_field(struct sbuf *out, const char *name, const char *value);
/* "Content-Length: N\r\n". */
void resp_head_put_length(struct sbuf *out, uint64_t n);
/* "HTTP/1.1 STATUS REASON\r\n" with REASON[0..len). */
void resp_head_put_status_line(struct sbuf *out, int status, const char *reason, size_t len);
/* "Connection: close" when CLOSE, else "Connection: keep-alive" for an
 * HTTP/1.0 client that asked to keep it (KEEPALIVE, MINOR 0); else nothing. */
void resp_head_put_connection(struct sbuf *out, int close, int keepalive, int minor);

/* Before the rules touch the upstream's head H: copy its Content-Length as
 * written into BUF (NULL when none; llhttp checked it is a number), then
 * drop the hop-by-hop fields (keeping Upgrade for a 101, UPGRADE).
 * Returns the copy or NULL. */
const char *resp_head_prepare(struct http_head *h, int upgrade, char *buf, size_t size);

/* A 1xx the client (HTTP/1.1 only) sees before the final answer: the
 * upstream's status line and fields minus hop-by-hop ones, and Via. */
void resp_head_interim(struct http_head *h, const char *via, struct sbuf *out);

/* The status line and fields of the answer. */
struct resp_head_fields {
    const struct http_head *up; /* the upstream's head, prepared and rewritten */
    int status;                 /* the answer's status (set-status applied) */
    const char *reason;         /* a rule's reason, or NULL */
    const char *via;            /* this proxy's Via value */
    int mark_faults;            /* --mark-faults */
    const char *mark;           /* the rule (or "fault-header") that acted, or NULL */
};

/* Status line (the upstream's reason when the status is its own and no
 * rule set one, else REASON or the catalog's), kept fields, Via, and
 * X-Statusproxy-Rule when marking and a rule acted. */
void resp_head_put_fields(const struct resp_head_fields *f, struct sbuf *out);

/* How the answer's body goes to this client. */
enum resp_head_framing {
    RESP_FRAMING_NONE,      /* no body bytes (bodiless, empty, or an Upgrade) */
    RESP_FRAMING_LENGTH,    /* the upstream's Content-Length */
    RESP_FRAMING_CHUNKED,   /* re-chunked (HTTP/1.1 client) */
    RESP_FRAMING_CLOSE,     /* close-delimited (HTTP/1.0 client, no length) */
};

/* What the framing depends on. */
struct resp_head_framing_in {
    int status;             /* the answer's status */
    int up_status;          /* the upstream's */
    int is_head;            /* the request was HEAD */
    int upgrade;            /* a 101 switching protocols */
    const char *cl;         /* the upstream's Content-Length (resp_head_prepare), or NULL */
    int up_chunked;         /* the upstream's body is chunked */
    int client_minor;       /* the client's HTTP/1.x */
    int client_keepalive;   /* the client wants the connection kept */
    int close;              /* the connection closes after this answer anyway */
    int req_done;           /* the request has ended (its body fully read) */
};

/* The decision. */
struct resp_head_framing_out {
    enum resp_head_framing framing;
    int discard;            /* the upstream's body is not relayed */
    int close;              /* the connection closes after this answer */
    int drop_request;       /* the rest of the request body is dropped */
};

/* Choose the framing, write its fields, Connection, and the final CRLF. */
void resp_head_put_framing(const struct resp_head_framing_in *in, struct sbuf *out,
                           struct resp_head_framing_out *r);

/* The request head to the upstream. */
struct resp_head_request {
    const char *method;         /* its name */
    const struct target *target;
    int forward_mode;           /* Host names the target */
    const char *up_host;
    int up_port;
    int is_upgrade;             /* keep Upgrade, send Connection: Upgrade */
    const char *via;
    int max_forwards;           /* > 0: forwarded decremented; else not sent */
    int chunked;                /* the request body is chunked */
    int has_length;             /* it has a Content-Length of LENGTH */
    uint64_t length;
};

/* Write the request line, H's fields (Host rewritten in forward mode or
 * added when missing; hop-by-hop dropped: H is changed), Via,
 * Max-Forwards, body framing, Connection: Upgrade, and the final CRLF. */
void resp_head_build_request(const struct resp_head_request *q, struct http_head *h,
                             struct sbuf *out);

#endif
