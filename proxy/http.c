/*
 * http — head storage and the token grammar. Every piece llhttp hands over
 * is copied into one arena, because its pointers are into a read buffer that
 * the next read may overwrite.
 */
#include "http.h"
#include "hash.h"
#include "units.h"

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
    /* An empty piece (llhttp hands over empty targets and values) still
     * makes the arena exist: memcpy and pointer arithmetic on a NULL arena
     * are undefined even for zero bytes. */
    if (h->len + n <= h->cap && h->buf)
        return 0;
    uint32_t cap = h->cap ? h->cap : 512;
    while (cap < h->len + n)
        cap *= 2;
    if (cap > h->limit)
        cap = h->limit;
    if (cap == 0)
        cap = 1;
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

/* ---------- well-known field names ---------- */

/* Is S (N bytes) the name LOWER (lower case), ignoring the case of letters? */
static int name_is(const char *s, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i], k = (unsigned char)lower[i];
        if (c != k && (k < 'a' || k > 'z' || (c | 0x20) != k))
            return 0;
    }
    return 1;
}

#define IS(lower) name_is(name, lower, sizeof lower - 1)

/* The kind of a field name, compared as lookups compare names (ASCII
 * case-insensitive). Runs for every field and every lookup by name: the
 * length and one letter pick the only candidate. */
static enum http_known classify(const char *name, size_t len)
{
    int first = len ? (unsigned char)name[0] | 0x20 : 0;
    switch (len) {
    case 2: return IS("te") ? HTTP_F_TE : HTTP_F_OTHER;
    case 3: return IS("via") ? HTTP_F_VIA : HTTP_F_OTHER;
    case 4: return IS("host") ? HTTP_F_HOST : HTTP_F_OTHER;
    case 6:
        if (first == 'c')
            return IS("cookie") ? HTTP_F_COOKIE : HTTP_F_OTHER;
        return IS("expect") ? HTTP_F_EXPECT : HTTP_F_OTHER;
    case 7:
        if (first == 't')
            return IS("trailer") ? HTTP_F_TRAILER : HTTP_F_OTHER;
        return IS("upgrade") ? HTTP_F_UPGRADE : HTTP_F_OTHER;
    case 10:
        if (first == 'c')
            return IS("connection") ? HTTP_F_CONNECTION : HTTP_F_OTHER;
        return IS("keep-alive") ? HTTP_F_KEEP_ALIVE : HTTP_F_OTHER;
    case 12: return IS("max-forwards") ? HTTP_F_MAX_FORWARDS : HTTP_F_OTHER;
    case 13: return IS("authorization") ? HTTP_F_AUTHORIZATION : HTTP_F_OTHER;
    case 14: return IS("content-length") ? HTTP_F_CONTENT_LENGTH : HTTP_F_OTHER;
    case 16: return IS("proxy-connection") ? HTTP_F_PROXY_CONNECTION : HTTP_F_OTHER;
    case 17: return IS("transfer-encoding") ? HTTP_F_TRANSFER_ENCODING : HTTP_F_OTHER;
    case 19:
        if (first == 'p')
            return IS("proxy-authorization") ? HTTP_F_PROXY_AUTHORIZATION : HTTP_F_OTHER;
        if (((unsigned char)name[14] | 0x20) == 'a')
            return IS("x-statusproxy-abort") ? HTTP_F_X_STATUSPROXY_ABORT : HTTP_F_OTHER;
        if (((unsigned char)name[14] | 0x20) == 'f')
            return IS("x-statusproxy-fault") ? HTTP_F_X_STATUSPROXY_FAULT : HTTP_F_OTHER;
        return IS("x-statusproxy-delay") ? HTTP_F_X_STATUSPROXY_DELAY : HTTP_F_OTHER;
    default: return HTTP_F_OTHER;
    }
}

#undef IS

static uint32_t bit(enum http_known k)
{
    return (uint32_t)1 << k;
}

/* Name F's kind from its (possibly still growing) name. */
static void classify_field(struct http_head *h, struct http_field *f)
{
    f->known = (uint8_t)classify(h->buf + f->name, f->name_len);
    h->known_seen |= bit((enum http_known)f->known);
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
    classify_field(h, f);
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
    classify_field(h, f);
    f->value = h->len;
    append(h, value, vlen);
    f->value_len = (uint32_t)vlen;
    return 0;
}

/* The first field of kind K (not HTTP_F_OTHER) at or after FROM that is not
 * removed, or -1. */
static int find_known(const struct http_head *h, enum http_known k, int from)
{
    if (!(h->known_seen & bit(k)))
        return -1;
    for (uint32_t i = from < 0 ? 0 : (uint32_t)from; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (f->known == k && !f->removed)
            return (int)i;
    }
    return -1;
}

/* Mark every field of kind K removed; returns how many were. */
static int remove_known(struct http_head *h, enum http_known k)
{
    int n = 0;
    for (int i = find_known(h, k, 0); i >= 0; i = find_known(h, k, i + 1)) {
        h->fields[i].removed = 1;
        n++;
    }
    return n;
}

static int find_name(const struct http_head *h, const char *name, size_t nlen, int from)
{
    enum http_known k = classify(name, nlen);
    if (k != HTTP_F_OTHER)
        return find_known(h, k, from);
    /* A name of no known kind can only equal a field of no known kind. */
    for (uint32_t i = from < 0 ? 0 : (uint32_t)from; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (f->known == HTTP_F_OTHER && !f->removed &&
            str_ieq2(h->buf + f->name, f->name_len, name, nlen))
            return (int)i;
    }
    return -1;
}

int http_head_find(const struct http_head *h, const char *name, int from)
{
    return find_name(h, name, strlen(name), from);
}

const char *http_head_get(const struct http_head *h, const char *name, size_t *len)
{
    int i = http_head_find(h, name, 0);
    if (i < 0)
        return NULL;
    *len = h->fields[i].value_len;
    return h->buf + h->fields[i].value;
}

int http_head_find_known(const struct http_head *h, enum http_known k)
{
    return find_known(h, k, 0);
}

const char *http_head_get_known(const struct http_head *h, enum http_known k, size_t *len)
{
    int i = find_known(h, k, 0);
    if (i < 0)
        return NULL;
    *len = h->fields[i].value_len;
    return h->buf + h->fields[i].value;
}

static int remove_name(struct http_head *h, const char *name, size_t nlen)
{
    enum http_known k = classify(name, nlen);
    if (k != HTTP_F_OTHER)
        return remove_known(h, k);
    int n = 0;
    for (int i = find_name(h, name, nlen, 0); i >= 0; i = find_name(h, name, nlen, i + 1)) {
        h->fields[i].removed = 1;
        n++;
    }
    return n;
}

int http_head_remove(struct http_head *h, const char *name)
{
    return remove_name(h, name, strlen(name));
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

/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
 *       / "`" / "|" / "~" / DIGIT / ALPHA, as a table: names are checked byte by
 * byte on every request. */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

int http_is_tchar(unsigned char c)
{
    return tchar[c];
}

int http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(unsigned char)s[i]])
            return 0;
    return 1;
}

int http_is_field_value(const char *s, size_t len)
{
    size_t i = 0;
    /* Eight bytes at a time while a word holds no control byte (< 0x20) and
     * no DEL; obs-text (>= 0x80) passes. A word with one, even an allowed
     * tab, sends the rest to the byte loop. */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    for (; i + 8 <= len; i += 8) {
        uint64_t w, del;
        memcpy(&w, s + i, 8);
        del = w ^ (ones * 0x7f);
        if (((w - ones * 0x20) & ~w & highs) | ((del - ones) & ~del & highs))
            break;
    }
    for (; i < len; i++) {
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

/* The names listed in Connection fields, as a set: known kinds as bits,
 * other names in an open-addressing table of arena offsets, so that
 * dropping them costs one pass over the fields however many are named. */
struct name_set {
    uint32_t known;
    uint32_t *slots; /* (arena offset << 6 | length) + 1; 0: empty. Names
                      * are under 64 bytes, offsets under 2^26 (heads are
                      * limited far below). */
    uint32_t cap, n;
};

/* Slot for NAME: where it is, or the empty slot where it would go. */
static uint32_t *set_slot(const struct name_set *ns, const char *buf, const char *name, size_t len)
{
    uint32_t i = hash_fnv32_nocase(name, len) & (ns->cap - 1);
    for (;; i = (i + 1) & (ns->cap - 1)) {
        uint32_t e = ns->slots[i];
        if (e == 0 || str_ieq2(buf + ((e - 1) >> 6), (e - 1) & 63, name, len))
            return &ns->slots[i];
    }
}

static void set_add(struct name_set *ns, const char *buf, uint32_t off, size_t len)
{
    if (2 * (ns->n + 1) > ns->cap) {
        struct name_set bigger = {ns->known, NULL, ns->cap ? ns->cap * 2 : 64, 0};
        bigger.slots = xcalloc(bigger.cap, sizeof *bigger.slots);
        for (uint32_t i = 0; i < ns->cap; i++) {
            uint32_t e = ns->slots[i];
            if (e)
                *set_slot(&bigger, buf, buf + ((e - 1) >> 6), (e - 1) & 63) = e, bigger.n++;
        }
        free(ns->slots);
        *ns = bigger;
    }
    uint32_t *slot = set_slot(ns, buf, buf + off, len);
    if (*slot == 0) {
        *slot = ((off << 6) | (uint32_t)len) + 1;
        ns->n++;
    }
}

static int set_has(const struct name_set *ns, const char *buf, const char *name, size_t len)
{
    return ns->cap && len < 64 && *set_slot(ns, buf, name, len) != 0;
}

/* Collect what the Connection fields name, in order: a later Connection
 * field that an earlier one named ("Connection: connection") is gone
 * before its own list is read. */
static void connection_names(const struct http_head *h, int keep_upgrade, struct name_set *ns)
{
    for (int i = find_known(h, HTTP_F_CONNECTION, 0); i >= 0;
         i = find_known(h, HTTP_F_CONNECTION, i + 1)) {
        const struct http_field *f = &h->fields[i];
        const char *v = h->buf + f->value;
        size_t n = f->value_len, pos = 0;
        while (pos < n) {
            while (pos < n && (v[pos] == ' ' || v[pos] == '\t' || v[pos] == ','))
                pos++;
            size_t start = pos;
            while (pos < n && v[pos] != ',' && v[pos] != ' ' && v[pos] != '\t')
                pos++;
            size_t len = pos - start;
            if (len == 0 || len >= 64)
                continue;
            if (keep_upgrade && str_ieq2(v + start, len, "upgrade", 7))
                continue;
            enum http_known k = classify(v + start, len);
            if (k != HTTP_F_OTHER)
                ns->known |= bit(k);
            else
                set_add(ns, h->buf, f->value + (uint32_t)start, len);
        }
        if (ns->known & bit(HTTP_F_CONNECTION))
            return;
    }
}

void http_head_drop_hop_by_hop(struct http_head *h, int keep_upgrade)
{
    struct name_set ns = {0, NULL, 0, 0};
    connection_names(h, keep_upgrade, &ns);
    uint32_t nfields = (ns.known || ns.n) ? h->nfields : 0;
    for (uint32_t i = 0; i < nfields; i++) {
        struct http_field *f = &h->fields[i];
        if (f->known != HTTP_F_OTHER ? (ns.known & bit((enum http_known)f->known)) != 0
                                     : set_has(&ns, h->buf, h->buf + f->name, f->name_len))
            f->removed = 1;
    }
    free(ns.slots);
    /* The rest in one pass. */
    uint32_t drop = bit(HTTP_F_CONNECTION) | bit(HTTP_F_KEEP_ALIVE) |
                    bit(HTTP_F_PROXY_CONNECTION) | bit(HTTP_F_TE) | bit(HTTP_F_TRAILER) |
                    bit(HTTP_F_TRANSFER_ENCODING) | bit(HTTP_F_CONTENT_LENGTH) |
                    bit(HTTP_F_X_STATUSPROXY_ABORT) | bit(HTTP_F_X_STATUSPROXY_DELAY) |
                    bit(HTTP_F_X_STATUSPROXY_FAULT);
    if (!keep_upgrade)
        drop |= bit(HTTP_F_UPGRADE);
    if (!(h->known_seen & drop))
        return;
    for (uint32_t i = 0; i < h->nfields; i++)
        if (drop & bit((enum http_known)h->fields[i].known))
            h->fields[i].removed = 1;
}

void http_head_write(const struct http_head *h, struct sbuf *out)
{
    char line[512];
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (f->removed)
            continue;
        size_t n = (size_t)f->name_len + f->value_len + 4;
        if (n > sizeof line) {
            sbuf_append(out, h->buf + f->name, f->name_len);
            sbuf_append(out, ": ", 2);
            sbuf_append(out, h->buf + f->value, f->value_len);
            sbuf_append(out, "\r\n", 2);
            continue;
        }
        /* One append per field: most lines are short. */
        char *p = line;
        memcpy(p, h->buf + f->name, f->name_len);
        p += f->name_len;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, h->buf + f->value, f->value_len);
        p += f->value_len;
        *p++ = '\r';
        *p++ = '\n';
        sbuf_append(out, line, n);
    }
}

int http_head_has_via(const struct http_head *h, const char *token)
{
    size_t tlen = strlen(token);
    for (int i = find_known(h, HTTP_F_VIA, 0); i >= 0; i = find_known(h, HTTP_F_VIA, i + 1)) {
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
    int hosts = 0, te = 0;
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
        if (!f->removed) {
            hosts += f->known == HTTP_F_HOST;
            te |= f->known == HTTP_F_TRANSFER_ENCODING;
        }
    }
    if (hosts > 1 || (hosts == 0 && h->minor == 1)) {
        /* RFC 9112 §3.2: exactly one Host in HTTP/1.1. */
        *why = hosts ? "more than one Host header" : "HTTP/1.1 requests need a Host header";
        return 400;
    }
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

int64_t http_retry_after_ms(const char *head, size_t len)
{
    static const char name[] = "\r\nretry-after:";
    const size_t nlen = sizeof name - 1;
    for (size_t i = 0; i + nlen <= len; i++) {
        if (head[i] != '\r' || strncasecmp(head + i, name, nlen) != 0)
            continue;
        size_t j = i + nlen;
        while (j < len && (head[j] == ' ' || head[j] == '\t'))
            j++;
        uint64_t secs;
        return units_scan_u64(head + j, len - j, 9, UINT64_MAX, &secs) ? (int64_t)secs * 1000 : 0;
    }
    return 0;
}

size_t http_chunk_line(char *line, size_t len)
{
    size_t n = str_hex(line, len);
    line[n++] = '\r';
    line[n++] = '\n';
    return n;
}
