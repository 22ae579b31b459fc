/*
 * resp_head — the heads the proxy writes (see resp_head.h).
 */
#include "resp_head.h"

#include <string.h>

#include "catalog.h"

/* "NAME: VALUE\r\n" where NAME_COLON is "Name: " of length N: the field
 * name of a literal goes in as one constant copy, without a strlen. */
static inline void put_field_n(struct sbuf *out, const char *name_colon, size_t n,
                               const char *value)
{
    sbuf_append(out, name_colon, n);
    sbuf_puts(out, value);
    sbuf_append(out, "\r\n", 2);
}
#define PUT_FIELD(out, lit, value) put_field_n(out, lit ": ", sizeof lit ": " - 1, value)

void resp_head_put_field(struct sbuf *out, const char *name, const char *value)
{
    sbuf_puts(out, name);
    put_field_n(out, ": ", 2, value);
}

void resp_head_put_length(struct sbuf *out, uint64_t n)
{
    sbuf_puts(out, "Content-Length: ");
    sbuf_putu(out, n);
    sbuf_append(out, "\r\n", 2);
}

void resp_head_put_status_line(struct sbuf *out, int status, const char *reason, size_t len)
{
    if (status >= 100 && status <= 999) {
        /* Every status the proxy writes has three digits: one copy. */
        char line[] = "HTTP/1.1 000 ";
        line[9] = (char)('0' + status / 100);
        line[10] = (char)('0' + status / 10 % 10);
        line[11] = (char)('0' + status % 10);
        sbuf_append(out, line, sizeof line - 1);
    } else {
        sbuf_puts(out, "HTTP/1.1 ");
        sbuf_putu(out, (uint64_t)status);
        sbuf_putc(out, ' ');
    }
    sbuf_append(out, reason, len);
    sbuf_append(out, "\r\n", 2);
}

void resp_head_put_connection(struct sbuf *out, int close, int keepalive, int minor)
{
    if (close)
        sbuf_puts(out, "Connection: close\r\n");
    else if (keepalive && minor == 0)
        sbuf_puts(out, "Connection: keep-alive\r\n");
}

const char *resp_head_prepare(struct http_head *h, int upgrade, char *buf, size_t size)
{
    /* Copied first: dropping hop-by-hop fields removes Content-Length
     * (the proxy re-frames), but the answer may keep its value. */
    size_t cl_len = 0;
    const char *cl = http_head_get_known(h, HTTP_F_CONTENT_LENGTH, &cl_len);
    if (cl) {
        size_t n = cl_len < size - 1 ? cl_len : size - 1;
        memcpy(buf, cl, n);
        buf[n] = '\0';
    }
    http_head_drop_hop_by_hop(h, upgrade);
    return cl ? buf : NULL;
}

void resp_head_interim(struct http_head *h, const char *via, struct sbuf *out)
{
    resp_head_put_status_line(out, h->status, h->buf + h->reason, h->reason_len);
    http_head_drop_hop_by_hop(h, 0);
    http_head_write(h, out);
    PUT_FIELD(out, "Via", via);
    sbuf_puts(out, "\r\n");
}

void resp_head_put_fields(const struct resp_head_fields *f, struct sbuf *out)
{
    const struct http_head *h = f->up;
    if (f->status == h->status && !f->reason) {
        resp_head_put_status_line(out, f->status, h->buf + h->reason, h->reason_len);
    } else {
        const char *r = f->reason ? f->reason : catalog_reason(f->status);
        resp_head_put_status_line(out, f->status, r, strlen(r));
    }
    http_head_write(h, out);
    PUT_FIELD(out, "Via", f->via);
    if (f->mark_faults && f->mark)
        PUT_FIELD(out, "X-Statusproxy-Rule", f->mark);
}

/* Framing of an answer without a body to this client (HEAD, 1xx, 204, 304).
 * A HEAD answer says what a GET would have got, also when a rule rewrote the
 * status (set-status keeps the body); 304 may keep its length; 204 and 1xx
 * carry none (RFC 9110 §8.6). */
static void put_bodiless(const struct resp_head_framing_in *in, struct sbuf *out)
{
    int head_len = in->is_head && catalog_body(in->status) == CATALOG_BODY_ALLOWED;
    int up_body = catalog_body(in->up_status) == CATALOG_BODY_ALLOWED;
    if (head_len && !up_body)
        sbuf_puts(out, "Content-Length: 0\r\n");
    else if (in->cl && (head_len || (in->status == 304 && in->status == in->up_status)))
        PUT_FIELD(out, "Content-Length", in->cl);
    else if (head_len && in->up_chunked && in->client_minor == 1)
        sbuf_puts(out, "Transfer-Encoding: chunked\r\n");
}

/* Choose how the body goes to this client and write its framing field. */
static void choose_framing(const struct resp_head_framing_in *in, struct sbuf *out,
                           struct resp_head_framing_out *r)
{
    int up_has_body = !in->is_head && catalog_body(in->up_status) == CATALOG_BODY_ALLOWED;
    enum catalog_body kind = catalog_body(in->status);
    if (in->is_head || kind == CATALOG_BODY_NONE) {
        r->framing = RESP_FRAMING_NONE;
        r->discard = 1;
        put_bodiless(in, out);
    } else if (kind == CATALOG_BODY_EMPTY || !up_has_body) {
        /* 205, or a status that needs a body where the upstream sent
         * none (set-status 200 on a 204): an empty one. */
        r->framing = RESP_FRAMING_NONE;
        r->discard = 1;
        sbuf_puts(out, "Content-Length: 0\r\n");
    } else if (in->cl && !in->up_chunked) {
        r->framing = RESP_FRAMING_LENGTH;
        PUT_FIELD(out, "Content-Length", in->cl);
    } else if (in->client_minor == 1) {
        r->framing = RESP_FRAMING_CHUNKED;
        sbuf_puts(out, "Transfer-Encoding: chunked\r\n");
    } else {
        r->framing = RESP_FRAMING_CLOSE;
        r->close = 1;
    }
}

void resp_head_put_framing(const struct resp_head_framing_in *in, struct sbuf *out,
                           struct resp_head_framing_out *r)
{
    memset(r, 0, sizeof *r);
    if (in->upgrade) {
        /* The connection becomes a tunnel: no body, no close. */
        r->framing = RESP_FRAMING_NONE;
        sbuf_puts(out, "Connection: Upgrade\r\n\r\n");
        return;
    }
    choose_framing(in, out, r);
    if (!in->req_done) {
        /* The upstream answered before the request ended: what is left
         * of the request body is dropped and the connection closed. */
        r->close = 1;
        r->drop_request = 1;
    }
    resp_head_put_connection(out, in->close || r->close, in->client_keepalive, in->client_minor);
    sbuf_puts(out, "\r\n");
}

void resp_head_build_request(const struct resp_head_request *q, struct http_head *h,
                             struct sbuf *out)
{
    const struct target *t = q->target;
    sbuf_puts(out, q->method);
    sbuf_putc(out, ' ');
    if (t->form == TARGET_ABSOLUTE && t->path_only_len == 0)
        sbuf_putc(out, '/');
    sbuf_append(out, t->path, t->path_len);
    sbuf_puts(out, " HTTP/1.1\r\n");
    if (q->forward_mode || http_head_find_known(h, HTTP_F_HOST) < 0) {
        /* Forward mode: Host names the target. An HTTP/1.0 request without
         * Host gets the upstream's, since HTTP/1.1 requires one. */
        char auth[300];
        target_format_authority(q->up_host, q->up_port, 1, auth, sizeof auth);
        PUT_FIELD(out, "Host", auth);
        http_head_remove(h, "Host");
    }
    http_head_drop_hop_by_hop(h, q->is_upgrade);
    http_head_write(h, out);
    PUT_FIELD(out, "Via", q->via);
    if (q->max_forwards > 0) {
        sbuf_puts(out, "Max-Forwards: ");
        sbuf_putu(out, (uint64_t)(q->max_forwards - 1));
        sbuf_puts(out, "\r\n");
    }
    if (q->chunked)
        sbuf_puts(out, "Transfer-Encoding: chunked\r\n");
    else if (q->has_length)
        resp_head_put_length(out, q->length);
    if (q->is_upgrade)
        sbuf_puts(out, "Connection: Upgrade\r\n");
    sbuf_puts(out, "\r\n");
}
