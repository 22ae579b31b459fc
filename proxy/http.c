/*
 * http — head storage and the token grammar. Every piece llhttp hands over
 * is copied into one arena, because its pointers are into a read buffer that
 * the next read may overwrite.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

void http_head_init(struct http_head *h, uint32_t limit)
{
    memset(h, 0, sizeof *h);
    h->limit = limit;
}

void http_head_reset(struct http_head *h)
{
    char *buf = h->buf;
    struct http_field *fields = h->fields;
    uint32_t cap = h->cap, fcap = h->fields_cap, limit = h->limit;
    memset(h, 0, sizeof *h);
    h->buf = buf;
    h->cap = cap;
    h->fields = fields;
    h->fields_cap = fcap;
    h->limit = limit;
}

void http_head_free(struct http_head *h)
{
    uint32_t limit = h->limit;
    free(h->buf);
    free(h->fields);
    memset(h, 0, sizeof *h);
    h->limit = limit;
}

/* Reserve N more arena bytes; -1 past the limit. */
static int reserve(struct http_head *h, size_t n)
{
    if ((size_t)h->len + n > h->limit) {
        h->overflow = 1;
        return -1;
    }
    if (h->len + n <= h->cap)
        return 0;
    uint32_t cap = h->cap ? h->cap : 512;
    while (cap < h->len + n)
        cap *= 2;
    if (cap > h->limit)
        cap = h->limit;
    h->buf = xrealloc(h->buf, cap);
    h->cap = cap;
    return 0;
}

static int append(struct http_head *h, const char *at, size_t len)
{
    if (reserve(h, len) != 0)
        return -1;
    memcpy(h->buf + h->len, at, len);
    h->len += (uint32_t)len;
    return 0;
}

int http_head_add_target(struct http_head *h, const char *at, size_t len)
{
    if (h->target_len == 0)
        h->target = h->len;
    if (append(h, at, len) != 0)
        return -1;
    h->target_len += (uint32_t)len;
    return 0;
}

int http_head_add_reason(struct http_head *h, const char *at, size_t len)
{
    if (h->reason_len == 0)
        h->reason = h->len;
    if (append(h, at, len) != 0)
        return -1;
    h->reason_len += (uint32_t)len;
    return 0;
}

static struct http_field *new_field(struct http_head *h)
{
    if (h->nfields == h->fields_cap) {
        h->fields_cap = h->fields_cap ? h->fields_cap * 2 : 16;
        h->fields = xrealloc(h->fields, h->fields_cap * sizeof *h->fields);
    }
    struct http_field *f = &h->fields[h->nfields++];
    memset(f, 0, sizeof *f);
    f->name = h->len;
    return f;
}

int http_head_add_name(struct http_head *h, const char *at, size_t len)
{
    struct http_field *f;
    if (h->nfields == 0 || h->in_value) {
        f = new_field(h);
        h->in_value = 0;
    } else {
        f = &h->fields[h->nfields - 1];
    }
    if (append(h, at, len) != 0)
        return -1;
    f->name_len += (uint32_t)len;
    f->value = h->len;
    return 0;
}

int http_head_add_value(struct http_head *h, const char *at, size_t len)
{
    if (h->nfields == 0)
        return -1;
    struct http_field *f = &h->fields[h->nfields - 1];
    if (!h->in_value) {
        h->in_value = 1;
        f->value = h->len;
        f->value_len = 0;
    }
    if (append(h, at, len) != 0)
        return -1;
    f->value_len += (uint32_t)len;
    return 0;
}

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

void http_head_end_value(struct http_head *h)
{
    if (h->nfields == 0)
        return;
    struct http_field *f = &h->fields[h->nfields - 1];
    if (!h->in_value) {
        /* An empty value: llhttp may not call on_header_value at all. */
        h->in_value = 1;
        f->value = h->len;
        f->value_len = 0;
    }
    while (f->value_len && ows(h->buf[f->value]))
        f->value++, f->value_len--;
    while (f->value_len && ows(h->buf[f->value + f->value_len - 1]))
        f->value_len--;
}

int http_head_add_field(struct http_head *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    if (reserve(h, nlen + vlen) != 0)
        return -1;
    h->in_value = 1;
    struct http_field *f = new_field(h);
    append(h, name, nlen);
    f->name_len = (uint32_t)nlen;
    f->value = h->len;
    append(h, value, vlen);
    f->value_len = (uint32_t)vlen;
    return 0;
}

int http_head_find(const struct http_head *h, const char *name, int from)
{
    size_t nlen = strlen(name);
    for (uint32_t i = from < 0 ? 0 : (uint32_t)from; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (!f->removed && str_ieq2(h->buf + f->name, f->name_len, name, nlen))
            return (int)i;
    }
    return -1;
}

const char *http_head_get(const struct http_head *h, const char *name, size_t *len)
{
    int i = http_head_find(h, name, 0);
    if (i < 0)
        return NULL;
    *len = h->fields[i].value_len;
    return h->buf + h->fields[i].value;
}

int http_head_remove(struct http_head *h, const char *name)
{
    int n = 0;
    for (int i = http_head_find(h, name, 0); i >= 0; i = http_head_find(h, name, i + 1)) {
        h->fields[i].removed = 1;
        n++;
    }
    return n;
}

int http_head_has_token(const struct http_head *h, const char *name, const char *token)
{
    for (int i = http_head_find(h, name, 0); i >= 0; i = http_head_find(h, name, i + 1)) {
        const struct http_field *f = &h->fields[i];
        if (str_list_has_token(h->buf + f->value, f->value_len, token))
            return 1;
    }
    return 0;
}

int http_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!http_is_tchar((unsigned char)s[i]))
            return 0;
    return 1;
}

int http_is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 ? c != '\t' : c == 0x7f)
            return 0;
    }
    return 1;
}

int http_chunk_crlf(const char *p, const char *end, int *pending)
{
    for (; *pending && p < end; p++, (*pending)--)
        if (*p != (*pending == 2 ? '\r' : '\n'))
            return -1;
    return 0;
}

int http_chunk_piece_done(int chunked, uint64_t chunk_left, const char *after, const char *end,
                          int *pending)
{
    if (!chunked || chunk_left != 0)
        return 0;
    *pending = 2;
    return http_chunk_crlf(after, end, pending);
}

void http_head_drop_hop_by_hop(struct http_head *h, int keep_upgrade)
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

void http_head_write(const struct http_head *h, struct sbuf *out)
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

int http_head_has_via(const struct http_head *h, const char *token)
{
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

int http_check_request(const struct http_head *h, int chunked, const char **why)
{
    *why = NULL;
    if (h->major != 1 || h->minor > 1) {
        *why = "only HTTP/1.0 and HTTP/1.1 are spoken here";
        return 505;
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
        /* RFC 9112 §3.2: exactly one Host in HTTP/1.1. */
        *why = hosts ? "more than one Host header" : "HTTP/1.1 requests need a Host header";
        return 400;
    }
    size_t len;
    const char *te = http_head_get(h, "Transfer-Encoding", &len);
    if (te && h->minor == 0) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return 400;
    }
    if (te && !chunked) {
        /* RFC 9112 §6.3: chunked must be the final coding of a request. */
        *why = "Transfer-Encoding without chunked as the final coding";
        return 400;
    }
    return 0;
}
