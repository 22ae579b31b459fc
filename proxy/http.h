/*
 * http — the parsed head of one HTTP/1.x message (request line or status
 * line, and header fields), stored in one arena so that llhttp's callbacks,
 * which point into the read buffer, can be copied piece by piece; plus
 * lookups and the token grammar the proxy checks by itself.
 * No event loop here: the module is pure and unit-tested on its own.
 */
#ifndef STATUSPROXY_HTTP_H
#define STATUSPROXY_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* The fields the proxy itself looks up or drops, recognized once when a
 * field's name is stored: lookups of these compare a byte per field instead
 * of names, and skip a head that has none. */
enum http_known {
    HTTP_F_OTHER = 0,
    HTTP_F_AUTHORIZATION,
    HTTP_F_CONNECTION,
    HTTP_F_CONTENT_LENGTH,
    HTTP_F_COOKIE,
    HTTP_F_EXPECT,
    HTTP_F_HOST,
    HTTP_F_KEEP_ALIVE,
    HTTP_F_MAX_FORWARDS,
    HTTP_F_PROXY_AUTHORIZATION,
    HTTP_F_PROXY_CONNECTION,
    HTTP_F_TE,
    HTTP_F_TRAILER,
    HTTP_F_TRANSFER_ENCODING,
    HTTP_F_UPGRADE,
    HTTP_F_VIA,
    HTTP_F_X_STATUSPROXY_ABORT,
    HTTP_F_X_STATUSPROXY_DELAY,
    HTTP_F_X_STATUSPROXY_FAULT,
};

struct http_field {
    uint32_t name, name_len;   /* offsets into the arena */
    uint32_t value, value_len;
    uint8_t removed;           /* dropped from what is forwarded */
    uint8_t known;             /* enum http_known of the name */
};

struct http_head {
    char *buf;                 /* arena; owned */
    uint32_t len, cap, limit;  /* limit: most bytes the arena may hold */
    struct http_field *fields; /* owned */
    uint32_t nfields, fields_cap;
    /* start line */
    uint32_t target, target_len; /* request-target, as received */
    uint32_t reason, reason_len; /* reason phrase, as received */
    int method;                  /* llhttp_method_t of a request */
    int status;                  /* status code of a response */
    uint8_t major, minor;        /* HTTP version */
    uint8_t in_value;            /* parser glue: last piece was a value */
    uint8_t overflow;            /* a piece did not fit under limit */
    uint32_t known_seen;         /* bit 1 << k: a field of known kind k was added */
};

/* Prepare an empty head whose arena may grow to LIMIT bytes. */
void http_head_init(struct http_head *h, uint32_t limit);
/* Forget the contents, keep the memory (for the next message). */
void http_head_reset(struct http_head *h);
/* Free the arena (and shrink memory held by idle connections). */
void http_head_free(struct http_head *h);

/* Parser glue: append pieces as llhttp hands them over. Each returns 0, or -1
 * when the arena would pass its limit (h->overflow is then set). */
int http_head_add_target(struct http_head *h, const char *at, size_t len);
int http_head_add_reason(struct http_head *h, const char *at, size_t len);
int http_head_add_name(struct http_head *h, const char *at, size_t len);
int http_head_add_value(struct http_head *h, const char *at, size_t len);
/* The current field is complete: trim optional whitespace around the value. */
void http_head_end_value(struct http_head *h);

/* Append a whole field (used for set-header and synthesized heads). 0 or -1. */
int http_head_add_field(struct http_head *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);

/* Accessors. Pointers are into the arena and stay valid until the next add. */
static inline const char *http_head_str(const struct http_head *h, uint32_t off)
{
    return h->buf + off;
}
/* Index of the first field named NAME (case-insensitive) at or after FROM
 * that is not removed, or -1. */
int http_head_find(const struct http_head *h, const char *name, int from);
/* Value of the first field named NAME, or NULL; *len gets its length. */
const char *http_head_get(const struct http_head *h, const char *name, size_t *len);
/* The same for a field of known kind K (not HTTP_F_OTHER), without
 * classifying a name first: for the hot paths (Host, Content-Length). */
int http_head_find_known(const struct http_head *h, enum http_known k);
const char *http_head_get_known(const struct http_head *h, enum http_known k, size_t *len);
/* Mark every field named NAME removed; returns how many were. */
int http_head_remove(struct http_head *h, const char *name);
/* Does any field named NAME contain TOKEN in its comma-separated list? */
int http_head_has_token(const struct http_head *h, const char *name, const char *token);

/* What a proxy forwards (RFC 9110 §7.6.1): mark removed Connection, every
 * field Connection names, Keep-Alive, Proxy-Connection, TE, Trailer and
 * Upgrade (unless KEEP_UPGRADE), and the fields the proxy writes itself:
 * Transfer-Encoding and Content-Length (it re-frames bodies) and the
 * X-Statusproxy-Abort / -Delay fault headers (never forwarded). */
void http_head_drop_hop_by_hop(struct http_head *h, int keep_upgrade);
/* Append every field not removed as "Name: value\r\n" lines to OUT. */
void http_head_write(const struct http_head *h, struct sbuf *out);
/* Does a Via field carry TOKEN as a received-by (this proxy's own)? */
int http_head_has_via(const struct http_head *h, const char *token);
/* What a proxy must refuse in a request head llhttp accepted: a version
 * other than 1.0/1.1 (505), bad field names or values, zero or several Host
 * in HTTP/1.1, Transfer-Encoding in 1.0 or without chunked last (400).
 * CHUNKED: llhttp saw chunked framing. Returns 0, or the status with a
 * short reason in *why. */
int http_check_request(const struct http_head *h, int chunked, const char **why);

/* llhttp 8.1 does not check the CRLF that must end each chunk's data
 * (RFC 9112 §7.1); accepting any two bytes there would let a message be
 * read differently by the next hop. *PENDING counts the CRLF bytes still
 * expected; P..END are the bytes that follow. Returns 0, or -1 on a mismatch. */
int http_chunk_crlf(const char *p, const char *end, int *pending);
/* After a body piece of a CHUNKED message, with CHUNK_LEFT bytes of the
 * chunk still to come: when the piece ended its chunk, expect its CRLF in
 * AFTER..END (and beyond, through *PENDING). Returns 0 or -1. */
int http_chunk_piece_done(int chunked, uint64_t chunk_left, const char *after, const char *end,
                          int *pending);

/* A chunk-size line for LEN bytes of data ("HEX\r\n") into LINE (at
 * least HTTP_CHUNK_LINE_MAX bytes); returns its length. */
#define HTTP_CHUNK_LINE_MAX 24
size_t http_chunk_line(char *line, size_t len);
/* The last chunk with no trailer: the end of a chunked body. */
#define HTTP_LAST_CHUNK "0\r\n\r\n"

/* One step of feeding bytes to an llhttp parser whose callbacks pause it
 * at the events its owner handles (request parser, response parser, admin
 * API). The caller decides what to do after a pause (resume now, or stay
 * paused until its answer is out). */
enum http_pump_step {
    HTTP_PUMP_ALL,     /* every byte parsed, no pause */
    HTTP_PUMP_PAUSED,  /* a callback paused the parser after *USED bytes */
    HTTP_PUMP_UPGRADE, /* the parser stopped at an upgrade after *USED bytes */
    HTTP_PUMP_ERROR,   /* malformed input: llhttp_get_error_reason says why */
};
/* Feed DATA[0..LEN) to P; *USED: the bytes consumed. Inline: it runs for
 * every read on both sides of every exchange. */
static inline enum http_pump_step http_pump(llhttp_t *p, const char *data, size_t len,
                                            size_t *used)
{
    llhttp_errno_t err = llhttp_execute(p, data, len);
    *used = len;
    switch (err) {
    case HPE_OK:
        return HTTP_PUMP_ALL;
    case HPE_PAUSED:
    case HPE_PAUSED_UPGRADE:
        *used = (size_t)(llhttp_get_error_pos(p) - data);
        return err == HPE_PAUSED ? HTTP_PUMP_PAUSED : HTTP_PUMP_UPGRADE;
    default:
        *used = 0;
        return HTTP_PUMP_ERROR;
    }
}

/* The Retry-After of a serialized answer head HEAD[0..len) ("Name: value"
 * lines), in ms, when it is delay-seconds (RFC 9110 §10.2.3); 0 when absent
 * or an HTTP-date (not interpreted). */
int64_t http_retry_after_ms(const char *head, size_t len);

/* Token grammar (RFC 9110 §5.6.2). */
int http_is_tchar(unsigned char c);
int http_is_token(const char *s, size_t len);
/* Field-value characters allowed in what is forwarded: VCHAR, obs-text, SP, HTAB. */
int http_is_field_value(const char *s, size_t len);

#endif
