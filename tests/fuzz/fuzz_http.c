/*
 * libFuzzer target for the HTTP/1.1 message grammar as the proxy reads it:
 * llhttp fed through the http.c head arena (request-target, reason phrase,
 * field names and values arriving in pieces), the proxy's own request checks
 * (http_check_request), the chunk CRLF checks llhttp 8.1 lacks, the
 * hop-by-hop stripping and the head writer, for requests and responses.
 *
 * Input: byte 0 chooses request (even) or response (odd) and byte 1..2 the
 * points where the rest is split; each piece is parsed from its own
 * allocation of exactly its size, so reading past a piece is an ASan error
 * (in the proxy a piece sits in a 64 KiB buffer that would hide it).
 * The glue mirrors conn.c / relay.c, which need sockets; tests/fuzz/
 * fuzz_wire.c drives that real glue through a running proxy.
 *
 *   make fuzz   (or: make build/fuzz/fuzz_http && build/fuzz/fuzz_http)
 */
#include <llhttp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct state {
    struct http_head head;
    int request;
    int in_body;               /* past the head: trailer fields are dropped */
    const char *end;           /* end of the piece being parsed */
    int crlf;                  /* chunk CRLF bytes still expected */
    int bad;                   /* a check refused the message */
    size_t body;
};

static int on_begin(llhttp_t *p)
{
    struct state *st = p->data;
    http_head_reset(&st->head);
    st->in_body = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct state *st = p->data;
    return http_head_add_target(&st->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct state *st = p->data;
    return http_head_add_reason(&st->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    struct state *st = p->data;
    if (st->in_body)
        return 0;
    return http_head_add_name(&st->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    struct state *st = p->data;
    if (st->in_body)
        return 0;
    return http_head_add_value(&st->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_value_done(llhttp_t *p)
{
    struct state *st = p->data;
    if (!st->in_body)
        http_head_end_value(&st->head);
    return 0;
}

/* What the proxy does with a complete head before forwarding it. */
static void use_head(struct state *st, llhttp_t *p)
{
    struct http_head *h = &st->head;
    if (h->len > h->limit || h->nfields > h->fields_cap)
        abort();
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if ((uint64_t)f->name + f->name_len > h->len || (uint64_t)f->value + f->value_len > h->len)
            abort(); /* a field must lie inside the arena */
    }
    size_t n;
    (void)http_head_get(h, "content-length", &n);
    (void)http_head_has_token(h, "connection", "close");
    (void)http_head_has_via(h, "127.0.0.1:8080");
    if (st->request) {
        const char *why = NULL;
        int status = http_check_request(h, (p->flags & F_CHUNKED) != 0, &why);
        if (status != 0 && (status < 400 || status > 599 || !why))
            abort(); /* a refusal is a 4xx/5xx with a reason */
        if (status != 0)
            st->bad = 1;
    }
    http_head_drop_hop_by_hop(h, p->upgrade);
    struct sbuf out = {0};
    http_head_write(h, &out);
    if (out.len && (out.len < 2 || memcmp(out.data + out.len - 2, "\r\n", 2) != 0))
        abort(); /* every written field line ends with CRLF */
    sbuf_free(&out);
}

static int on_headers_done(llhttp_t *p)
{
    struct state *st = p->data;
    use_head(st, p);
    st->in_body = 1;
    if (st->bad)
        return HPE_USER;
    int status = llhttp_get_status_code(p);
    if (!st->request && ((status / 100 == 1 && status != 101) || status == 204 || status == 304))
        return 1; /* no body, as relay.c says */
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct state *st = p->data;
    if (at + len > st->end)
        abort(); /* the body piece lies inside the piece read */
    st->body += len;
    return http_chunk_piece_done((p->flags & F_CHUNKED) != 0, p->content_length, at + len,
                                 st->end, &st->crlf) == 0 ? 0 : HPE_USER;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_done,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
};

/* Parse one piece from an allocation of exactly its size. 0, or -1 once refused. */
static int feed(llhttp_t *p, struct state *st, const uint8_t *at, size_t len)
{
    char *piece = malloc(len ? len : 1);
    memcpy(piece, at, len);
    st->end = piece + len;
    int rc = 0;
    if (st->crlf && http_chunk_crlf(piece, piece + len, &st->crlf) != 0) {
        rc = -1;
    } else {
        llhttp_errno_t err = llhttp_execute(p, piece, len);
        if (err == HPE_PAUSED_UPGRADE) {
            llhttp_resume_after_upgrade(p);
        } else if (err != HPE_OK) {
            rc = -1;
        }
    }
    free(piece);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    struct state st = {0};
    st.request = (data[0] & 1) == 0;
    http_head_init(&st.head, 64 * 1024);
    llhttp_t p;
    llhttp_init(&p, st.request ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    p.data = &st;
    const uint8_t *msg = data + 3;
    size_t len = size - 3;
    size_t cut1 = len ? data[1] % (len + 1) : 0;
    size_t cut2 = len ? data[2] % (len + 1) : 0;
    if (cut2 < cut1) {
        size_t t = cut1;
        cut1 = cut2;
        cut2 = t;
    }
    if (feed(&p, &st, msg, cut1) == 0 && feed(&p, &st, msg + cut1, cut2 - cut1) == 0)
        (void)feed(&p, &st, msg + cut2, len - cut2);
    (void)llhttp_finish(&p);
    http_head_free(&st.head);
    return 0;
}
