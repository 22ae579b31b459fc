/*
 * rules_parse — turns rule-file text into rules (DESIGN §4): checks every
 * matcher and action, the combinations that cannot work, and the headers
 * the standard asks for; builds each rule's normalized text; reports every
 * problem it finds with its line and column rather than stopping at the
 * first. Matching and the set's lifetime live in rules.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog.h"
#include "dist.h"
#include "hash.h"
#include "http.h"
#include "rules_int.h"
#include "units.h"

/* ---- diagnostics ---- */

/* Order diagnostics by position, keeping the order of those at one place.
 * Checks that look at a whole rule find problems after the per-token ones,
 * but a reader wants them in file order. Insertion sort: lists are short. */
static void sort_diags(struct rules_diags *d)
{
    for (size_t i = 1; i < d->n; i++) {
        struct rules_diag g = d->items[i];
        size_t j = i;
        while (j > 0 && (d->items[j - 1].line > g.line ||
                         (d->items[j - 1].line == g.line && d->items[j - 1].col > g.col))) {
            d->items[j] = d->items[j - 1];
            j--;
        }
        d->items[j] = g;
    }
}

/* ---- words of the language ---- */

static const char *const matcher_words[RM_COUNT] = {
    [RM_METHOD] = "method", [RM_HOST] = "host",     [RM_PATH] = "path",
    [RM_HEADER] = "header", [RM_CLIENT] = "client", [RM_STATUS] = "status",
    [RM_CHANCE] = "chance", [RM_EVERY] = "every",   [RM_AFTER] = "after",
    [RM_LIMIT] = "limit",   [RM_DURING] = "during", [RM_CYCLE] = "cycle",
    [RM_RATE_LIMIT] = "rate-limit", [RM_SCHEME] = "scheme",
};

/* What each matcher's value looks like, for "missing value" messages. */
static const char *const matcher_expects[RM_COUNT] = {
    [RM_METHOD] = "a comma list of methods, e.g. GET,POST",
    [RM_HOST] = "a host glob, e.g. *.example.com",
    [RM_PATH] = "a path glob, e.g. /api/*",
    [RM_HEADER] = "a header name, or NAME=GLOB",
    [RM_CLIENT] = "an address or CIDR block, e.g. 10.0.0.0/8",
    [RM_STATUS] = "a status spec, e.g. 503, 5xx, 500-504 or a comma list of those",
    [RM_CHANCE] = "a percentage, e.g. 10% or 0.5%",
    [RM_EVERY] = "a count N >= 1",
    [RM_AFTER] = "a count N >= 0",
    [RM_LIMIT] = "a count N >= 1",
    [RM_DURING] = "START..END or START.., e.g. 0s..30s",
    [RM_CYCLE] = "PERIOD on ON, e.g. 60s on 10s",
    [RM_RATE_LIMIT] = "N/DURATION, e.g. 10/1s, optionally followed by per-client",
    [RM_SCHEME] = "http or https",
};

enum rule_action {
    RA_ABORT, RA_SET_STATUS, RA_REASON, RA_BODY, RA_SET_HEADER, RA_DEL_HEADER,
    RA_DELAY, RA_THROTTLE, RA_RESET, RA_TRUNCATE,
    RA_HANG, RA_EMPTY, RA_GARBAGE, RA_BAD_CHUNK, RA_SLOW_HEAD,
    RA_COUNT
};

static const char *const action_words[RA_COUNT] = {
    [RA_ABORT] = "abort",          [RA_SET_STATUS] = "set-status", [RA_REASON] = "reason",
    [RA_BODY] = "body",            [RA_SET_HEADER] = "set-header", [RA_DEL_HEADER] = "del-header",
    [RA_DELAY] = "delay",          [RA_THROTTLE] = "throttle",     [RA_RESET] = "reset",
    [RA_TRUNCATE] = "truncate",    [RA_HANG] = "hang",             [RA_EMPTY] = "empty",
    [RA_GARBAGE] = "garbage",      [RA_BAD_CHUNK] = "bad-chunk",   [RA_SLOW_HEAD] = "slow-head",
};

static const char *const action_expects[RA_COUNT] = {
    [RA_ABORT] = "a status code 200-599",
    [RA_SET_STATUS] = "a status code 200-599",
    [RA_REASON] = "a quoted reason phrase",
    [RA_BODY] = "a quoted body text",
    [RA_SET_HEADER] = "a header name and a quoted value",
    [RA_DEL_HEADER] = "a header name",
    [RA_DELAY] = "a duration, MIN..MAX, normal MEAN SD or lognormal P50 P99, e.g. 2s, "
                 "100ms..400ms or lognormal 100ms 2s",
    [RA_THROTTLE] = "a rate, e.g. 64KB/s",
    [RA_RESET] = "nothing",
    [RA_TRUNCATE] = "a byte count, e.g. 1024 or 4KB",
    [RA_HANG] = "an optional duration, e.g. 30s",
    [RA_EMPTY] = "nothing",
    [RA_GARBAGE] = "an optional byte count, e.g. 64",
    [RA_BAD_CHUNK] = "nothing",
    [RA_SLOW_HEAD] = "a duration, e.g. 5s",
};

static int word_index(const char *const *words, size_t n, const struct rules_token *t)
{
    if (t->quoted)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(words[i], t->text) == 0)
            return (int)i;
    return -1;
}

static int is_arrow(const struct rules_token *t)
{
    return !t->quoted && strcmp(t->text, "=>") == 0;
}

/* A token that cannot be a value: `=>` or any matcher or action word. */
static int is_keyword(const struct rules_token *t)
{
    return is_arrow(t) || word_index(matcher_words, RM_COUNT, t) >= 0 ||
           word_index(action_words, RA_COUNT, t) >= 0;
}

/* Optimal string alignment distance (edits, with adjacent swaps counted as
 * one), case-insensitive; words longer than 31 bytes count as far away. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 31 || lb > 31)
        return (size_t)-1;
    size_t m[32][32];
    for (size_t i = 0; i <= la; i++)
        m[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        m[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ca = a[i - 1] | 0x20, cb = b[j - 1] | 0x20;
            size_t best = m[i - 1][j - 1] + (ca != cb);
            if (m[i - 1][j] + 1 < best)
                best = m[i - 1][j] + 1;
            if (m[i][j - 1] + 1 < best)
                best = m[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == (b[j - 2] | 0x20) && (a[i - 2] | 0x20) == cb &&
                m[i - 2][j - 2] + 1 < best)
                best = m[i - 2][j - 2] + 1;
            m[i][j] = best;
        }
    }
    return m[la][lb];
}

/* The word of WORDS nearest to WORD, if near enough to be a likely typo. */
static const char *nearest(const char *word, const char *const *words, size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, len = strlen(word);
    for (size_t i = 0; i < n; i++) {
        size_t dist = edit_distance(word, words[i]);
        if (dist < best_d) {
            best_d = dist;
            best = words[i];
        }
    }
    if (best_d > 2 || best_d * 2 > len) /* 0 happens: words differ in case only */
        return NULL;
    return best;
}

/* ---- building one rule ---- */

struct pos {
    int line, col; /* line 0: not written */
};

static struct pos pos_of(const struct rules_token *t)
{
    return (struct pos){t->line, t->col};
}

static int pos_before(struct pos a, struct pos b)
{
    return a.line < b.line || (a.line == b.line && a.col < b.col);
}

/* Everything known about the rule being parsed. */
struct draft {
    struct rule *r;
    struct pos matcher_at[RM_COUNT];
    struct pos action_at[RA_COUNT];
    struct pos abort_code_at, set_status_code_at; /* their values */
    struct pos retry_auto_at;      /* set-header Retry-After auto */
    const struct rules_token *extra; /* cycle's ON, rate-limit's per-client */
    struct sbuf matchers, actions; /* normalized text, each piece led by a space */
    size_t cap_set, cap_del; /* the counts are in r->actions */
};

struct parser {
    struct rules_diags *d;
    struct rule **rules;
    size_t n_rules, cap_rules;
    struct named {
        char *name;
        int line;
    } *names;
    size_t n_names, cap_names;
    /* Open-addressing index into names (slot = index + 1, 0 = empty), so
     * that the duplicate check stays linear for a 1 MiB PUT /rules. */
    size_t *name_slots;
    size_t n_slots;
};

#define ERR(ps, t, ...) rules_diag_add((ps)->d, 1, (t)->line, (t)->col, __VA_ARGS__)
#define WARN(ps, t, ...) rules_diag_add((ps)->d, 0, (t)->line, (t)->col, __VA_ARGS__)

/* Would S need quotes to read back as one token with the same text? */
static int needs_quotes(const char *s, size_t len)
{
    if (len == 0)
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f || c == '#' || c == '"' || c == '\\')
            return 1;
    }
    struct rules_token t = {.text = (char *)s, .len = len};
    return is_keyword(&t);
}

static void put_quoted(struct sbuf *b, const char *s, size_t len)
{
    sbuf_putc(b, '"');
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '"': sbuf_puts(b, "\\\""); break;
        case '\\': sbuf_puts(b, "\\\\"); break;
        case '\n': sbuf_puts(b, "\\n"); break;
        case '\t': sbuf_puts(b, "\\t"); break;
        default: sbuf_putc(b, s[i]);
        }
    }
    sbuf_putc(b, '"');
}

static void put_value(struct sbuf *b, const char *s, size_t len)
{
    if (needs_quotes(s, len))
        put_quoted(b, s, len);
    else
        sbuf_append(b, s, len);
}

/* Parse all of T as a decimal count; 0, or -1 if it is not one. */
static int parse_count(const struct rules_token *t, uint64_t *out)
{
    return units_parse_u64(t->text, t->len, UINT64_MAX, out);
}

/* The status code written in S[0..len), or -1 if it is not all digits.
 * More than 3 digits give a value above 999, so callers report it as out
 * of range whatever the digits are (0503 is not 503). */
static int parse_code(const char *s, size_t len)
{
    if (len == 0)
        return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (i < 6)
            v = v * 10 + (s[i] - '0');
    }
    return len > 3 ? 1000 + v % 1000 : v; /* beyond 599 either way */
}

/* ---- matchers ---- */

static const char *const known_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
};

static void parse_method(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule *r = dr->r;
    size_t count = 1;
    for (size_t i = 0; i < v->len; i++)
        count += v->text[i] == ',';
    r->methods_text = xstrndup(v->text, v->len);
    r->methods = xcalloc(count, sizeof *r->methods);
    int ok = 1;
    const char *p = r->methods_text, *end = p + v->len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t len = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (len == 0) {
            ERR(ps, v, "empty method in list '%s' (expected e.g. GET,POST)", v->text);
            ok = 0;
        } else if (!http_is_token(p, len)) {
            ERR(ps, v, "'%.*s' is not a valid method token (expected e.g. GET,POST)", (int)len, p);
            ok = 0;
        } else {
            /* Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET. */
            char upper[16];
            if (len < sizeof upper) {
                for (size_t i = 0; i < len; i++)
                    upper[i] = (p[i] >= 'a' && p[i] <= 'z') ? (char)(p[i] - 32) : p[i];
                upper[len] = '\0';
                for (size_t k = 0; k < ARRAY_LEN(known_methods); k++)
                    if (strcmp(upper, known_methods[k]) == 0 && memcmp(upper, p, len) != 0)
                        WARN(ps, v,
                             "methods are case-sensitive: '%.*s' does not match %s requests "
                             "(did you mean '%s'?)",
                             (int)len, p, upper, upper);
            }
            r->methods[r->n_methods++] = (struct rule_method){p, len};
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    if (ok)
        sbuf_printf(&dr->matchers, " method %s", v->text);
}

static void parse_host(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    if (v->len == 0) {
        ERR(ps, v, "empty host glob (expected e.g. *.example.com)");
        return;
    }
    const char *colon = memchr(v->text, ':', v->len);
    if (colon && !memchr(colon + 1, ':', v->len - (size_t)(colon + 1 - v->text))) {
        ERR(ps, v, "host is matched without its port: remove '%s' from '%s'", colon, v->text);
        return;
    }
    dr->r->host = glob_compile(v->text, v->len, GLOB_ICASE);
    /* Hosts compare case-insensitively, so the normal form is lower case. */
    char *lower = xstrndup(v->text, v->len);
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    sbuf_puts(&dr->matchers, " host ");
    put_value(&dr->matchers, lower, v->len);
    free(lower);
}

static void parse_path(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    if (v->len == 0) {
        ERR(ps, v, "empty path glob (expected e.g. /api/*)");
        return;
    }
    if (v->text[0] != '/' && v->text[0] != '*' && v->text[0] != '?')
        WARN(ps, v, "path '%s' does not start with '/', so it matches no request path", v->text);
    if (memchr(v->text, '?', v->len) && memchr(v->text, '=', v->len))
        WARN(ps, v, "path '%s' looks like it has a query: paths are matched without the query, "
             "and '?' matches any one character", v->text);
    dr->r->path = glob_compile(v->text, v->len, 0);
    sbuf_puts(&dr->matchers, " path ");
    put_value(&dr->matchers, v->text, v->len);
}

static void parse_header(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule *r = dr->r;
    const char *eq = memchr(v->text, '=', v->len);
    size_t nlen = eq ? (size_t)(eq - v->text) : v->len;
    if (!http_is_token(v->text, nlen)) {
        ERR(ps, v, "'%.*s' is not a valid header name (expected a token like X-Request-Id)",
            (int)nlen, v->text);
        return;
    }
    if (eq && v->len - nlen - 1 == 0) {
        ERR(ps, v, "empty value glob after '%.*s=' (write 'header %.*s' to test presence)",
            (int)nlen, v->text, (int)nlen, v->text);
        return;
    }
    r->headers = xrealloc(r->headers, (r->n_headers + 1) * sizeof *r->headers);
    struct rule_header_match *h = &r->headers[r->n_headers++];
    h->name = xstrndup(v->text, nlen);
    h->name_len = nlen;
    h->value = eq ? glob_compile(eq + 1, v->len - nlen - 1, 0) : NULL;
    sbuf_printf(&dr->matchers, " header %s", h->name);
    if (eq) {
        sbuf_putc(&dr->matchers, '=');
        put_value(&dr->matchers, eq + 1, v->len - nlen - 1);
    }
}

static void parse_client(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    char text[CIDR_STRLEN];
    int rc = cidr_parse(v->text, v->len, &dr->r->client);
    if (rc == CIDR_EHOSTBITS) {
        cidr_format(&dr->r->client, text, sizeof text);
        ERR(ps, v, "CIDR '%s' has host bits set (did you mean %s?)", v->text, text);
        return;
    }
    if (rc != 0) {
        ERR(ps, v, "invalid address or CIDR block '%s' (expected e.g. 10.0.0.0/8, ::1 or "
            "2001:db8::/32)", v->text);
        return;
    }
    cidr_format(&dr->r->client, text, sizeof text);
    sbuf_printf(&dr->matchers, " client %s", text);
}

/* `scheme http|https` (DESIGN §9). Schemes are case-insensitive (RFC 3986
 * §3.1): the normal form is lower case. A blind tunnel is refused: its
 * bytes are never read, so only its CONNECT request could match, and
 * `method CONNECT` says that already. */
static void parse_scheme(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    if (strcasecmp(v->text, "http") == 0) {
        dr->r->scheme = AUDIT_SCHEME_HTTP;
    } else if (strcasecmp(v->text, "https") == 0) {
        dr->r->scheme = AUDIT_SCHEME_HTTPS;
    } else if (strcasecmp(v->text, "tunnel") == 0) {
        ERR(ps, v, "'scheme tunnel' cannot be matched: a blind tunnel's bytes are never read "
            "(match its CONNECT request with 'method CONNECT')");
        return;
    } else {
        ERR(ps, v, "invalid scheme '%s' (expected http or https)", v->text);
        return;
    }
    sbuf_printf(&dr->matchers, " scheme %s", dr->r->scheme == AUDIT_SCHEME_HTTPS ? "https" : "http");
}

static void set_bits(uint64_t *bits, int lo, int hi)
{
    for (int c = lo; c <= hi; c++)
        bits[c / 64] |= (uint64_t)1 << (c % 64);
}

static int status_in_range(struct parser *ps, const struct rules_token *v, int code,
                           const char *s, size_t len)
{
    if (code < 0) {
        ERR(ps, v, "invalid status '%.*s' in '%s' (expected a code like 503, a class like 5xx "
            "or a range like 500-504)", (int)len, s, v->text);
        return 0;
    }
    if (code < 100 || code > 599) {
        ERR(ps, v, "status %.*s is outside 100-599", (int)len, s);
        return 0;
    }
    return 1;
}

static void parse_status(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    uint64_t *bits = dr->r->status_bits;
    struct sbuf norm = {0};
    int ok = 1;
    const char *p = v->text, *end = p + v->len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t len = comma ? (size_t)(comma - p) : (size_t)(end - p);
        const char *dash = memchr(p, '-', len);
        if (len == 0) {
            ERR(ps, v, "empty item in status list '%s'", v->text);
            ok = 0;
        } else if (len == 3 && p[0] >= '1' && p[0] <= '5' && (p[1] | 0x20) == 'x' &&
                   (p[2] | 0x20) == 'x') {
            set_bits(bits, (p[0] - '0') * 100, (p[0] - '0') * 100 + 99);
            sbuf_printf(&norm, "%s%cxx", norm.len ? "," : "", p[0]);
        } else if (len == 3 && (p[1] | 0x20) == 'x' && (p[2] | 0x20) == 'x') {
            ERR(ps, v, "status class '%.*s' is outside 1xx-5xx", (int)len, p);
            ok = 0;
        } else if (dash) {
            size_t l1 = (size_t)(dash - p), l2 = len - l1 - 1;
            int lo = parse_code(p, l1), hi = parse_code(dash + 1, l2);
            if (!status_in_range(ps, v, lo, p, l1) || !status_in_range(ps, v, hi, dash + 1, l2)) {
                ok = 0;
            } else if (lo > hi) {
                ERR(ps, v, "status range %d-%d is reversed (write %d-%d)", lo, hi, hi, lo);
                ok = 0;
            } else {
                set_bits(bits, lo, hi);
                sbuf_printf(&norm, "%s%d-%d", norm.len ? "," : "", lo, hi);
            }
        } else {
            int code = parse_code(p, len);
            if (!status_in_range(ps, v, code, p, len)) {
                ok = 0;
            } else {
                set_bits(bits, code, code);
                sbuf_printf(&norm, "%s%d", norm.len ? "," : "", code);
            }
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    if (ok)
        sbuf_printf(&dr->matchers, " status %s", norm.data);
    sbuf_free(&norm);
}

/* "P%" with P in 0-100 and at most 6 decimals, as millionths of a percent. */
#define CHANCE_DECIMALS 6

static void parse_chance(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    const char *s = v->text;
    size_t len = v->len;
    if (len == 0 || s[len - 1] != '%') {
        ERR(ps, v, "chance needs a percentage with '%%', e.g. %s%%", len ? s : "10");
        return;
    }
    len--;
    int negative = len > 0 && s[0] == '-';
    size_t i = negative, int_digits = 0, frac_digits = 0;
    uint64_t whole = 0, frac = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, int_digits++)
        if (whole <= 1000) /* saturate: anything past 100 is out of range anyway */
            whole = whole * 10 + (uint64_t)(s[i] - '0');
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, frac_digits++)
            if (frac_digits < CHANCE_DECIMALS)
                frac = frac * 10 + (uint64_t)(s[i] - '0');
        if (frac_digits == 0)
            int_digits = 0; /* "5." is malformed */
    }
    if (int_digits == 0 || i != len) {
        ERR(ps, v, "invalid percentage '%s' (expected 0-100%%, e.g. 10%% or 0.5%%)", s);
        return;
    }
    if (frac_digits > CHANCE_DECIMALS) {
        ERR(ps, v, "chance '%s' has more than %d decimals", s, CHANCE_DECIMALS);
        return;
    }
    for (size_t k = frac_digits; k < CHANCE_DECIMALS; k++)
        frac *= 10;
    uint64_t micro = whole * 1000000 + frac; /* millionths of a percent */
    if (negative || micro > 100 * (uint64_t)1000000) {
        ERR(ps, v, "chance %s is outside 0-100%%", s);
        return;
    }
    dr->r->chance = (double)micro / 1e8;
    sbuf_printf(&dr->matchers, " chance %llu", (unsigned long long)(micro / 1000000));
    if (micro % 1000000) {
        char digits[CHANCE_DECIMALS + 2];
        snprintf(digits, sizeof digits, ".%06llu", (unsigned long long)(micro % 1000000));
        size_t n = strlen(digits);
        while (digits[n - 1] == '0')
            digits[--n] = '\0';
        sbuf_puts(&dr->matchers, digits);
    }
    sbuf_putc(&dr->matchers, '%');
}

static void parse_counter(struct parser *ps, struct draft *dr, enum rule_matcher m,
                          const struct rules_token *v)
{
    uint64_t n;
    uint64_t min = m == RM_AFTER ? 0 : 1;
    if (parse_count(v, &n) != 0) {
        ERR(ps, v, "invalid count '%s' for '%s' (expected %s)", v->text, matcher_words[m],
            matcher_expects[m]);
        return;
    }
    if (n < min) {
        ERR(ps, v, "'%s %s' can never hold (expected %s)", matcher_words[m], v->text,
            matcher_expects[m]);
        return;
    }
    if (m == RM_EVERY)
        dr->r->every = n;
    else if (m == RM_AFTER)
        dr->r->after = n;
    else
        dr->r->limit = n;
    sbuf_printf(&dr->matchers, " %s %llu", matcher_words[m], (unsigned long long)n);
}

/* One duration token piece S[0..len) for matcher or action KW; 0 or -1. */
static int parse_dur(struct parser *ps, const struct rules_token *v, const char *kw, const char *s,
                     size_t len, uint64_t *out)
{
    if (units_parse_duration(s, len, out) == 0)
        return 0;
    ERR(ps, v, "invalid duration '%.*s' for '%s' (expected e.g. 250ms, 5s, 2m or 1h)", (int)len,
        s, kw);
    return -1;
}

static void parse_during(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule *r = dr->r;
    const char *dots = strstr(v->text, "..");
    if (!dots) {
        ERR(ps, v, "'during' needs START..END or START.., got '%s' (e.g. during 0s..30s)",
            v->text);
        return;
    }
    size_t l1 = (size_t)(dots - v->text), l2 = v->len - l1 - 2;
    uint64_t lo, hi = UINT64_MAX;
    if (parse_dur(ps, v, "during", v->text, l1, &lo) != 0 ||
        (l2 && parse_dur(ps, v, "during", dots + 2, l2, &hi) != 0))
        return;
    if (hi <= lo) {
        ERR(ps, v, "'during %s' can never hold: END must be after START", v->text);
        return;
    }
    r->during_start = lo;
    r->during_end = hi;
    char a[32] = "0s", b[32] = ""; /* "0s" reads better than "0ms" as a start */
    if (lo)
        units_format_duration(lo, a, sizeof a);
    if (hi != UINT64_MAX)
        units_format_duration(hi, b, sizeof b);
    sbuf_printf(&dr->matchers, " during %s..%s", a, b);
}

static void parse_cycle(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule *r = dr->r;
    const struct rules_token *on = dr->extra;
    uint64_t period, on_ms;
    if (parse_dur(ps, v, "cycle", v->text, v->len, &period) != 0 ||
        parse_dur(ps, on, "cycle", on->text, on->len, &on_ms) != 0)
        return;
    if (period == 0) {
        ERR(ps, v, "'cycle' needs a PERIOD above 0");
        return;
    }
    if (on_ms == 0) {
        ERR(ps, on, "'cycle %s on 0' can never hold", v->text);
        return;
    }
    if (on_ms >= period)
        WARN(ps, on, "'cycle %s on %s' always holds: ON is not shorter than PERIOD", v->text,
             on->text);
    r->cycle_period = period;
    r->cycle_on = on_ms < period ? on_ms : period;
    char a[32], b[32];
    units_format_duration(period, a, sizeof a);
    units_format_duration(on_ms, b, sizeof b);
    sbuf_printf(&dr->matchers, " cycle %s on %s", a, b);
}

/* Rate-limit counts fit in the window's 32-bit slot counters. */
#define RATE_MAX_N 1000000000ULL

static void parse_rate(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule *r = dr->r;
    const char *slash = memchr(v->text, '/', v->len);
    uint64_t n, ms;
    struct rules_token count = *v;
    if (slash)
        count.len = (size_t)(slash - v->text);
    if (!slash || parse_count(&count, &n) != 0) {
        ERR(ps, v, "invalid rate '%s' for 'rate-limit' (expected N/DURATION, e.g. 10/1s)", v->text);
        return;
    }
    if (parse_dur(ps, v, "rate-limit", slash + 1, v->len - count.len - 1, &ms) != 0)
        return;
    if (n == 0 || n > RATE_MAX_N) {
        ERR(ps, v, "'rate-limit %s': N must be 1 to %llu", v->text, RATE_MAX_N);
        return;
    }
    if (ms == 0) {
        ERR(ps, v, "'rate-limit %s': the window must be longer than 0", v->text);
        return;
    }
    r->rate_n = n;
    r->rate_ms = ms;
    r->rate_per_client = dr->extra != NULL;
    char d[32];
    units_format_duration(ms, d, sizeof d);
    sbuf_printf(&dr->matchers, " rate-limit %llu/%s%s", (unsigned long long)n, d,
                r->rate_per_client ? " per-client" : "");
}

static void parse_matcher(struct parser *ps, struct draft *dr, enum rule_matcher m,
                          const struct rules_token *v)
{
    size_t errors0 = ps->d->errors;
    switch (m) {
    case RM_METHOD: parse_method(ps, dr, v); break;
    case RM_HOST: parse_host(ps, dr, v); break;
    case RM_PATH: parse_path(ps, dr, v); break;
    case RM_HEADER: parse_header(ps, dr, v); break;
    case RM_CLIENT: parse_client(ps, dr, v); break;
    case RM_STATUS: parse_status(ps, dr, v); break;
    case RM_CHANCE: parse_chance(ps, dr, v); break;
    case RM_EVERY:
    case RM_AFTER:
    case RM_LIMIT: parse_counter(ps, dr, m, v); break;
    case RM_DURING: parse_during(ps, dr, v); break;
    case RM_CYCLE: parse_cycle(ps, dr, v); break;
    case RM_RATE_LIMIT: parse_rate(ps, dr, v); break;
    case RM_SCHEME: parse_scheme(ps, dr, v); break;
    case RM_COUNT: break;
    }
    /* Only a matcher that parsed counts, so that whole-rule checks never
     * read a half-filled one. */
    if (ps->d->errors == errors0)
        dr->r->has |= 1u << m;
}

/* ---- actions ---- */

/* Headers whose framing the proxy computes itself (RFC 9112 §6): a rule
 * that set or removed them would desynchronise the connection. */
static const char *const framing_headers[] = {"Content-Length", "Transfer-Encoding", "Connection"};

/* Check a header name for set-header/del-header; 1 if usable. */
static int check_header_name(struct parser *ps, const struct rules_token *kw,
                             const struct rules_token *v)
{
    if (!http_is_token(v->text, v->len)) {
        ERR(ps, v, "'%s' is not a valid header name (expected a token like X-Request-Id)",
            v->text);
        return 0;
    }
    for (size_t i = 0; i < ARRAY_LEN(framing_headers); i++) {
        if (str_ieq(v->text, v->len, framing_headers[i])) {
            ERR(ps, v, "'%s %s': the proxy owns the framing header %s and sets it itself",
                kw->text, v->text, framing_headers[i]);
            return 0;
        }
    }
    return 1;
}

/* Does the rule already name header NAME in set-header or del-header? */
static const char *header_named(const struct draft *dr, const char *name, size_t len)
{
    for (size_t i = 0; i < dr->r->actions.n_set_headers; i++)
        if (str_ieq(name, len, dr->r->set_headers[i].name))
            return "set-header";
    for (size_t i = 0; i < dr->r->actions.n_del_headers; i++)
        if (str_ieq(name, len, dr->r->del_headers[i].name))
            return "del-header";
    if (dr->r->actions.retry_after_auto && str_ieq(name, len, "Retry-After"))
        return "set-header";
    return NULL;
}

/* Text that becomes part of a response head (reason phrase, field value)
 * must not carry line breaks or other control characters (RFC 9112 §4,
 * RFC 9110 §5.5); obs-text (bytes >= 0x80) is allowed through. */
static int check_head_text(struct parser *ps, const struct rules_token *v, const char *what)
{
    for (size_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->text[i];
        if (c < 0x20 || c == 0x7f) {
            ERR(ps, v, "%s may not contain %s", what,
                c == '\n' || c == '\r' ? "a line break" : "control characters");
            return 0;
        }
    }
    return 1;
}

static int need_quoted(struct parser *ps, const struct rules_token *kw, const struct rules_token *v)
{
    if (v->quoted)
        return 1;
    ERR(ps, v, "'%s' needs a quoted string here: write \"%s\"", kw->text, v->text);
    return 0;
}

static void parse_code_action(struct parser *ps, struct draft *dr, enum rule_action a,
                              const struct rules_token *v)
{
    int code = parse_code(v->text, v->len);
    if (code < 0) {
        ERR(ps, v, "'%s' needs a status code 200-599, got '%s'", action_words[a], v->text);
        return;
    }
    if (code >= 100 && code <= 199) {
        ERR(ps, v, "'%s %d': informational statuses (1xx, 101 included) can never be the "
            "target of a rule; expected 200-599", action_words[a], code);
        return;
    }
    if (code < 200 || code > 599) {
        ERR(ps, v, "'%s %s': status is outside 200-599", action_words[a], v->text);
        return;
    }
    if (a == RA_ABORT) {
        dr->r->actions.abort_code = code;
        dr->abort_code_at = pos_of(v);
    } else {
        dr->r->actions.set_status = code;
        dr->set_status_code_at = pos_of(v);
    }
    sbuf_printf(&dr->actions, " %s %d", action_words[a], code);
}

static void parse_delay(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    struct rule_actions *ac = &dr->r->actions;
    const char *dots = strstr(v->text, "..");
    uint64_t lo, hi;
    if (!dots) {
        static const char *const dists[] = {"normal", "lognormal"};
        const char *near = v->quoted ? NULL : nearest(v->text, dists, ARRAY_LEN(dists));
        if (units_parse_duration(v->text, v->len, &lo) != 0) {
            if (near)
                ERR(ps, v, "unknown delay distribution '%s' (did you mean '%s'?)", v->text, near);
            else
                ERR(ps, v, "invalid duration '%s' (expected e.g. 250ms, 5s, 2m, or MIN..MAX)",
                    v->text);
            return;
        }
        hi = lo;
    } else {
        size_t l1 = (size_t)(dots - v->text);
        const char *s2 = dots + 2;
        size_t l2 = v->len - l1 - 2;
        int bad1 = units_parse_duration(v->text, l1, &lo) != 0;
        int bad2 = units_parse_duration(s2, l2, &hi) != 0;
        if (bad1 || bad2) {
            ERR(ps, v, "invalid duration '%.*s' in delay range '%s' (expected e.g. 100ms..400ms)",
                bad1 ? (int)l1 : (int)l2, bad1 ? v->text : s2, v->text);
            return;
        }
        if (lo > hi) {
            ERR(ps, v, "delay range '%s' has MIN greater than MAX", v->text);
            return;
        }
    }
    ac->has_delay = 1;
    ac->delay_min_ms = lo;
    ac->delay_max_ms = hi;
    char a[32], b[32];
    units_format_duration(lo, a, sizeof a);
    units_format_duration(hi, b, sizeof b);
    if (lo == hi)
        sbuf_printf(&dr->actions, " delay %s", a);
    else
        sbuf_printf(&dr->actions, " delay %s..%s", a, b);
}

/* `delay normal MEAN SD` or `delay lognormal P50 P99` (KIND, A, B). */
static void parse_delay_dist(struct parser *ps, struct draft *dr, const struct rules_token *kind,
                             const struct rules_token *va, const struct rules_token *vb)
{
    struct rule_actions *ac = &dr->r->actions;
    int lognormal = kind->text[0] == 'l';
    uint64_t a, b;
    if (parse_dur(ps, va, "delay", va->text, va->len, &a) != 0 ||
        parse_dur(ps, vb, "delay", vb->text, vb->len, &b) != 0)
        return;
    if (lognormal && (a == 0 || b < a)) {
        ERR(ps, a == 0 ? va : vb, "'delay lognormal %s %s': needs 0 < P50 <= P99", va->text,
            vb->text);
        return;
    }
    if (a > DIST_MAX_MS || b > DIST_MAX_MS) {
        ERR(ps, a > DIST_MAX_MS ? va : vb, "'delay %s': values above 1h are cut to 1h anyway",
            kind->text);
        return;
    }
    ac->has_delay = 1;
    ac->delay_kind = lognormal ? RULES_DELAY_LOGNORMAL : RULES_DELAY_NORMAL;
    ac->delay_a = (double)a;
    ac->delay_b = (double)b;
    char x[32], y[32];
    units_format_duration(a, x, sizeof x);
    units_format_duration(b, y, sizeof y);
    sbuf_printf(&dr->actions, " delay %s %s %s", lognormal ? "lognormal" : "normal", x, y);
}

/* hang [DURATION], garbage [BYTES], slow-head DURATION. */
static void parse_broken(struct parser *ps, struct draft *dr, enum rule_action a,
                         const struct rules_token *v)
{
    struct rule_actions *ac = &dr->r->actions;
    uint64_t n = 0;
    char buf[32];
    if (a == RA_GARBAGE) {
        n = 64;
        if (v && (units_parse_bytes(v->text, v->len, &n) != 0 || n == 0 || n > 1048576)) {
            ERR(ps, v, "invalid byte count '%s' for 'garbage' (expected 1 to 1MB, e.g. 64)",
                v->text);
            return;
        }
        ac->brk = RULES_BREAK_GARBAGE;
        ac->garbage_bytes = n;
        units_format_bytes(n, buf, sizeof buf);
        sbuf_printf(&dr->actions, " garbage %s", buf);
        return;
    }
    if (v && parse_dur(ps, v, action_words[a], v->text, v->len, &n) != 0)
        return;
    if (a == RA_SLOW_HEAD && n == 0) {
        ERR(ps, v, "'slow-head' needs a duration above 0");
        return;
    }
    units_format_duration(n, buf, sizeof buf);
    if (a == RA_SLOW_HEAD) {
        ac->slow_head_ms = n;
        sbuf_printf(&dr->actions, " slow-head %s", buf);
    } else {
        ac->brk = RULES_BREAK_HANG;
        ac->hang_ms = n;
        sbuf_printf(&dr->actions, n ? " hang %s" : " hang", buf);
    }
}

/* set-header NAME "VALUE" (or Retry-After auto) and del-header NAME. */
static void parse_header_action(struct parser *ps, struct draft *dr, enum rule_action a,
                                const struct rules_token *kw, const struct rules_token *v,
                                const struct rules_token *v2)
{
    struct rule *r = dr->r;
    struct rule_actions *ac = &r->actions;
    if (!check_header_name(ps, kw, v))
        return;
    const char *other = header_named(dr, v->text, v->len);
    if (other) {
        ERR(ps, v, "header %s is already changed by '%s' in this rule", v->text, other);
        return;
    }
    if (a == RA_SET_HEADER && v2 && !v2->quoted && strcmp(v2->text, "auto") == 0) {
        if (!str_ieq(v->text, v->len, "Retry-After")) {
            ERR(ps, v2, "'auto' is known only for Retry-After: write a quoted value for %s",
                v->text);
            return;
        }
        ac->retry_after_auto = 1;
        dr->retry_auto_at = pos_of(v2);
        sbuf_puts(&dr->actions, " set-header Retry-After auto");
        return;
    }
    if (a == RA_SET_HEADER) {
        if (!v2 || !need_quoted(ps, kw, v2) || v2->bad ||
            !check_head_text(ps, v2, "a header value"))
            return;
        if (ac->n_set_headers == dr->cap_set) {
            dr->cap_set = dr->cap_set ? dr->cap_set * 2 : 4;
            r->set_headers = xrealloc(r->set_headers, dr->cap_set * sizeof *r->set_headers);
        }
        r->set_headers[ac->n_set_headers++] = (struct rules_header_op){
            xstrndup(v->text, v->len), xstrndup(v2->text, v2->len)};
        sbuf_printf(&dr->actions, " set-header %s ", v->text);
        put_quoted(&dr->actions, v2->text, v2->len);
    } else {
        if (ac->n_del_headers == dr->cap_del) {
            dr->cap_del = dr->cap_del ? dr->cap_del * 2 : 4;
            r->del_headers = xrealloc(r->del_headers, dr->cap_del * sizeof *r->del_headers);
        }
        r->del_headers[ac->n_del_headers++] =
            (struct rules_header_op){xstrndup(v->text, v->len), NULL};
        sbuf_printf(&dr->actions, " del-header %s", v->text);
    }
}

/* `body "TEXT"`: kept as written; a body whose first non-space character
 * opens an object or array is sent as JSON. */
static void parse_body(struct parser *ps, struct draft *dr, const struct rules_token *kw,
                       const struct rules_token *v)
{
    struct rule_actions *ac = &dr->r->actions;
    if (!need_quoted(ps, kw, v) || v->bad)
        return;
    ac->body = xstrndup(v->text, v->len);
    ac->body_len = v->len;
    for (size_t i = 0; i < v->len; i++) {
        char c = v->text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        ac->body_is_json = c == '{' || c == '[';
        break;
    }
    sbuf_puts(&dr->actions, " body ");
    put_quoted(&dr->actions, v->text, v->len);
}

/* `throttle RATE`, e.g. 64KB/s; normalized as the shortest exact byte text. */
static void parse_throttle(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    uint64_t n;
    char buf[32];
    if (units_parse_rate(v->text, v->len, &n) != 0) {
        ERR(ps, v, "invalid rate '%s' (expected bytes per second, e.g. 64KB/s)", v->text);
        return;
    }
    dr->r->actions.throttle_bps = n;
    units_format_bytes(n, buf, sizeof buf);
    sbuf_printf(&dr->actions, " throttle %s/s", buf);
}

/* `truncate BYTES`: the count must fit the signed field it is stored in. */
static void parse_truncate(struct parser *ps, struct draft *dr, const struct rules_token *v)
{
    uint64_t n;
    char buf[32];
    if (units_parse_bytes(v->text, v->len, &n) != 0 || n > (uint64_t)INT64_MAX) {
        ERR(ps, v, "invalid byte count '%s' (expected e.g. 1024, 4KB or 1MB)", v->text);
        return;
    }
    dr->r->actions.truncate = (int64_t)n;
    units_format_bytes(n, buf, sizeof buf);
    sbuf_printf(&dr->actions, " truncate %s", buf);
}

/* Parse one action whose keyword is KW and whose values are V and V2 (a
 * second value only some actions take); the matching helper checks them and
 * appends the action's normalized text. */
static void parse_action(struct parser *ps, struct draft *dr, enum rule_action a,
                         const struct rules_token *kw, const struct rules_token *v,
                         const struct rules_token *v2)
{
    struct rule_actions *ac = &dr->r->actions;
    switch (a) {
    case RA_ABORT:
    case RA_SET_STATUS:
        parse_code_action(ps, dr, a, v);
        break;
    case RA_REASON:
        if (!need_quoted(ps, kw, v) || v->bad || !check_head_text(ps, v, "a reason phrase"))
            break;
        ac->reason = xstrndup(v->text, v->len);
        sbuf_puts(&dr->actions, " reason ");
        put_quoted(&dr->actions, v->text, v->len);
        break;
    case RA_BODY:
        parse_body(ps, dr, kw, v);
        break;
    case RA_SET_HEADER:
    case RA_DEL_HEADER:
        parse_header_action(ps, dr, a, kw, v, v2);
        break;
    case RA_DELAY:
        if (dr->extra)
            parse_delay_dist(ps, dr, v, v2, dr->extra);
        else
            parse_delay(ps, dr, v);
        break;
    case RA_HANG:
    case RA_GARBAGE:
    case RA_SLOW_HEAD:
        parse_broken(ps, dr, a, v);
        break;
    case RA_EMPTY:
        ac->brk = RULES_BREAK_EMPTY;
        sbuf_puts(&dr->actions, " empty");
        break;
    case RA_BAD_CHUNK:
        ac->bad_chunk = 1;
        sbuf_puts(&dr->actions, " bad-chunk");
        break;
    case RA_THROTTLE:
        parse_throttle(ps, dr, v);
        break;
    case RA_RESET:
        ac->reset = 1;
        sbuf_puts(&dr->actions, " reset");
        break;
    case RA_TRUNCATE:
        parse_truncate(ps, dr, v);
        break;
    case RA_COUNT:
        break;
    }
}

/* ---- whole-rule checks ---- */

/* Report at whichever of the two actions was written second. */
static void conflict(struct parser *ps, const struct draft *dr, enum rule_action a,
                     enum rule_action b, const char *why)
{
    struct pos pa = dr->action_at[a], pb = dr->action_at[b];
    if (!pa.line || !pb.line)
        return;
    struct pos at = pos_before(pa, pb) ? pb : pa;
    rules_diag_add(ps->d, 1, at.line, at.col, "'%s' cannot be combined with '%s': %s",
                   action_words[pos_before(pa, pb) ? b : a], action_words[pos_before(pa, pb) ? a : b],
                   why);
}

/* `reset` sends no answer, so nothing that writes one can go with it. The
 * writers before it are named in one error at `reset`; each writer after
 * it gets its own error. */
static void check_reset(struct parser *ps, const struct draft *dr)
{
    static const enum rule_action writers[] = {RA_ABORT,      RA_SET_STATUS, RA_REASON,
                                               RA_BODY,       RA_SET_HEADER, RA_DEL_HEADER,
                                               RA_THROTTLE,   RA_TRUNCATE,   RA_HANG,
                                               RA_EMPTY,      RA_GARBAGE,    RA_BAD_CHUNK,
                                               RA_SLOW_HEAD};
    struct pos reset = dr->action_at[RA_RESET];
    if (!reset.line)
        return;
    struct sbuf before = {0};
    struct pos last = {0, 0};
    for (;;) {
        /* The writers before reset, in written order: the next after LAST. */
        int next = -1;
        for (size_t i = 0; i < ARRAY_LEN(writers); i++) {
            struct pos w = dr->action_at[writers[i]];
            if (w.line && pos_before(w, reset) && pos_before(last, w) &&
                (next < 0 || pos_before(w, dr->action_at[next])))
                next = (int)writers[i];
        }
        if (next < 0)
            break;
        sbuf_printf(&before, "%s'%s'", before.len ? ", " : "", action_words[next]);
        last = dr->action_at[next];
    }
    for (size_t i = 0; i < ARRAY_LEN(writers); i++)
        if (dr->action_at[writers[i]].line && pos_before(reset, dr->action_at[writers[i]]))
            conflict(ps, dr, RA_RESET, writers[i], "reset closes the connection without an answer");
    if (before.len)
        rules_diag_add(ps->d, 1, reset.line, reset.col,
                       "'reset' cannot be combined with %s: reset closes the connection without "
                       "an answer", before.data);
    sbuf_free(&before);
}

/* Does the status spec hold only codes that never carry a body? */
static int spec_bodiless(const struct rule *r)
{
    for (int c = 100; c <= 599; c++)
        if ((r->status_bits[c / 64] >> (c % 64) & 1) && catalog_body(c) == CATALOG_BODY_ALLOWED)
            return 0;
    return 1;
}

/* Headers the standard requires with a status (RFC 9110 §10.2.2, §11.6.1,
 * §15.5.6, §11.7.1, §15.5.22) that a rule writing that status should set. */
static const struct {
    int code;
    const char *header;
} required_headers[] = {
    {301, "Location"}, {302, "Location"},         {303, "Location"},
    {307, "Location"}, {308, "Location"},         {401, "WWW-Authenticate"},
    {405, "Allow"},    {407, "Proxy-Authenticate"}, {426, "Upgrade"},
};

/* Warnings about a status the rule writes, reported at its value. */
static void check_target(struct parser *ps, const struct rule *r, int code, struct pos at)
{
    if (!catalog_lookup(code))
        rules_diag_add(ps->d, 0, at.line, at.col, "status %d is not in the catalogue (non-standard)",
                       code);
    for (size_t i = 0; i < ARRAY_LEN(required_headers); i++) {
        if (required_headers[i].code != code)
            continue;
        const char *h = required_headers[i].header;
        int set = 0;
        for (size_t k = 0; k < r->actions.n_set_headers; k++)
            set |= str_ieq(r->set_headers[k].name, strlen(r->set_headers[k].name), h);
        if (!set)
            rules_diag_add(ps->d, 0, at.line, at.col,
                           "a %d answer should carry %s: add set-header %s \"...\"", code, h, h);
    }
}

/* hang, empty and garbage replace the answer: nothing that shapes an answer
 * can go with them, nor can two of them go together (reset is check_reset's). */
static void check_broken(struct parser *ps, const struct draft *dr)
{
    static const struct {
        enum rule_action a;
        const char *why;
    } broken[] = {
        {RA_HANG, "hang sends no answer"},
        {RA_EMPTY, "empty closes the connection without an answer"},
        {RA_GARBAGE, "garbage sends random bytes instead of an answer"},
    };
    static const enum rule_action shapers[] = {RA_ABORT,    RA_SET_STATUS, RA_REASON,
                                               RA_BODY,     RA_SET_HEADER, RA_DEL_HEADER,
                                               RA_THROTTLE, RA_TRUNCATE,   RA_BAD_CHUNK,
                                               RA_SLOW_HEAD};
    for (size_t i = 0; i < ARRAY_LEN(broken); i++) {
        for (size_t k = 0; k < ARRAY_LEN(shapers); k++)
            conflict(ps, dr, broken[i].a, shapers[k], broken[i].why);
        for (size_t k = i + 1; k < ARRAY_LEN(broken); k++)
            conflict(ps, dr, broken[i].a, broken[k].a, broken[i].why);
    }
    conflict(ps, dr, RA_BAD_CHUNK, RA_TRUNCATE, "both cut the body; bad-chunk breaks it after one chunk");
    conflict(ps, dr, RA_BAD_CHUNK, RA_THROTTLE, "bad-chunk sends one chunk and closes: there is "
             "nothing to pace");
    if (dr->r->actions.retry_after_auto && !(dr->r->has & (1u << RM_RATE_LIMIT)))
        rules_diag_add(ps->d, 1, dr->retry_auto_at.line, dr->retry_auto_at.col,
                       "'Retry-After auto' needs a 'rate-limit' matcher in the rule: it is the "
                       "time until that window has room");
}

static void check_rule(struct parser *ps, struct draft *dr)
{
    struct rule *r = dr->r;
    const struct rule_actions *ac = &r->actions;
    const struct pos *at = dr->action_at;

    conflict(ps, dr, RA_ABORT, RA_SET_STATUS, "abort already chooses the status");
    conflict(ps, dr, RA_ABORT, RA_TRUNCATE, "an abort answer is written whole");
    check_reset(ps, dr);
    check_broken(ps, dr);

    if (at[RA_BODY].line && !at[RA_ABORT].line)
        rules_diag_add(ps->d, 1, at[RA_BODY].line, at[RA_BODY].col,
                       "'body' needs 'abort': it is the body of the answer abort writes");
    else if (at[RA_BODY].line && ac->abort_code && catalog_body(ac->abort_code) != CATALOG_BODY_ALLOWED)
        rules_diag_add(ps->d, 1, at[RA_BODY].line, at[RA_BODY].col,
                       "'body' cannot apply: a %d answer carries no body", ac->abort_code);

    /* truncate and throttle act on a body: is there one? */
    int no_body_code = 0;
    if (ac->abort_code && catalog_body(ac->abort_code) != CATALOG_BODY_ALLOWED)
        no_body_code = ac->abort_code;
    else if (!ac->abort_code && ac->set_status &&
             catalog_body(ac->set_status) != CATALOG_BODY_ALLOWED)
        no_body_code = ac->set_status;
    int spec_empty = !ac->abort_code && !no_body_code && (r->has & (1u << RM_STATUS)) &&
                     spec_bodiless(r);
    static const enum rule_action body_actions[] = {RA_TRUNCATE, RA_THROTTLE, RA_BAD_CHUNK};
    for (size_t i = 0; i < ARRAY_LEN(body_actions); i++) {
        struct pos p = at[body_actions[i]];
        if (!p.line)
            continue;
        if (no_body_code)
            rules_diag_add(ps->d, 1, p.line, p.col, "'%s' cannot apply: a %d answer carries no body",
                           action_words[body_actions[i]], no_body_code);
        else if (spec_empty)
            rules_diag_add(ps->d, 1, p.line, p.col,
                           "'%s' cannot apply: the statuses this rule matches carry no body",
                           action_words[body_actions[i]]);
    }

    if (ac->abort_code)
        check_target(ps, r, ac->abort_code, dr->abort_code_at);
    if (ac->set_status)
        check_target(ps, r, ac->set_status, dr->set_status_code_at);
}

/* ---- one line ---- */

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* The slot of NAME in the index: its entry, or the empty slot where it
 * goes. Grows the index first so that it stays at most half full. */
static size_t name_lookup(struct parser *ps, const char *name)
{
    if (2 * (ps->n_names + 1) > ps->n_slots) {
        size_t n = ps->n_slots ? ps->n_slots * 2 : 64;
        size_t *slots = xcalloc(n, sizeof *slots);
        for (size_t i = 0; i < ps->n_names; i++) {
            size_t j = hash_fnv64_str(ps->names[i].name) & (n - 1);
            while (slots[j])
                j = (j + 1) & (n - 1);
            slots[j] = i + 1;
        }
        free(ps->name_slots);
        ps->name_slots = slots;
        ps->n_slots = n;
    }
    size_t j = hash_fnv64_str(name) & (ps->n_slots - 1);
    while (ps->name_slots[j] && strcmp(ps->names[ps->name_slots[j] - 1].name, name) != 0)
        j = (j + 1) & (ps->n_slots - 1);
    return j;
}

static void check_name(struct parser *ps, const struct rules_token *t)
{
    if (t->quoted || !valid_name(t->text)) {
        ERR(ps, t, "invalid rule name '%s' (use letters, digits, '_', '-' and '.')", t->text);
        return;
    }
    size_t at = name_lookup(ps, t->text);
    if (ps->name_slots[at]) {
        ERR(ps, t, "duplicate rule name '%s' (first defined at line %d)", t->text,
            ps->names[ps->name_slots[at] - 1].line);
        return;
    }
    if (ps->n_names == ps->cap_names) {
        ps->cap_names = ps->cap_names ? ps->cap_names * 2 : 16;
        ps->names = xrealloc(ps->names, ps->cap_names * sizeof *ps->names);
    }
    ps->names[ps->n_names++] = (struct named){xstrdup(t->text), t->line};
    ps->name_slots[at] = ps->n_names;
}

/* Report an unknown word of SECTION (matchers or actions) with a hint. */
static void unknown_word(struct parser *ps, const struct rules_token *t, int in_actions)
{
    const char *const *own = in_actions ? action_words : matcher_words;
    const char *const *other = in_actions ? matcher_words : action_words;
    size_t n_own = in_actions ? RA_COUNT : RM_COUNT, n_other = in_actions ? RM_COUNT : RA_COUNT;
    const char *what = in_actions ? "action" : "matcher";
    const char *near = nearest(t->text, own, n_own);
    if (strcmp(t->text, "\\") == 0) {
        ERR(ps, t, "'\\' continues a line only as its very last character");
    } else if (near) {
        ERR(ps, t, "unknown %s '%s' (did you mean '%s'?)", what, t->text, near);
    } else if ((near = nearest(t->text, other, n_other)) != NULL) {
        ERR(ps, t, "unknown %s '%s' (did you mean the %s '%s'? %s)", what, t->text,
            in_actions ? "matcher" : "action", near,
            in_actions ? "matchers go before '=>'" : "actions go after '=>'");
    } else if (t->quoted) {
        ERR(ps, t, "expected a %s, got the string \"%s\"", what, t->text);
    } else {
        ERR(ps, t, "unknown %s '%s'", what, t->text);
    }
}

/* The value after keyword KW at LN->tok[*I], consumed; NULL (and an error)
 * when the line ends or a keyword follows instead. */
static const struct rules_token *take_value(struct parser *ps, const struct rules_line *ln,
                                            size_t *i, const struct rules_token *kw,
                                            const char *expects)
{
    if (*i >= ln->n || is_keyword(&ln->tok[*i])) {
        ERR(ps, kw, "missing value after '%s' (expected %s)", kw->text, expects);
        return NULL;
    }
    return &ln->tok[(*i)++];
}

/* Skip the tokens after an unknown word up to the next keyword. */
static void skip_unknown(const struct rules_line *ln, size_t *i)
{
    while (*i < ln->n && !is_keyword(&ln->tok[*i]))
        (*i)++;
}

/* The words after the value of `cycle` (`on ON`) and `rate-limit`
 * (`per-client`), consumed into DR->extra. 0 (and an error) when they are
 * missing or misspelt. */
static int take_extra(struct parser *ps, struct draft *dr, enum rule_matcher m,
                      const struct rules_line *ln, size_t *i, const struct rules_token *v)
{
    const struct rules_token *t = *i < ln->n ? &ln->tok[*i] : NULL;
    const char *word = m == RM_CYCLE ? "on" : "per-client";
    int is_word = t && !t->quoted && strcmp(t->text, word) == 0;
    if (m == RM_CYCLE) {
        if (!is_word) {
            ERR(ps, t ? t : v, "expected 'on ON' after 'cycle %s' (e.g. cycle 60s on 10s)",
                v->text);
            skip_unknown(ln, i);
            return 0;
        }
        (*i)++;
        dr->extra = take_value(ps, ln, i, t, "the time on in each period, e.g. 10s");
        return dr->extra != NULL;
    }
    if (is_word) {
        dr->extra = t;
        (*i)++;
    } else if (t && !t->quoted && !is_keyword(t) && nearest(t->text, &word, 1)) {
        ERR(ps, t, "unknown word '%s' after 'rate-limit %s' (did you mean 'per-client'?)",
            t->text, v->text);
        (*i)++;
        return 0;
    }
    return 1;
}

static void parse_matchers(struct parser *ps, struct draft *dr, const struct rules_line *ln,
                           size_t *i)
{
    while (*i < ln->n) {
        const struct rules_token *t = &ln->tok[*i];
        if (is_arrow(t) || word_index(action_words, RA_COUNT, t) >= 0)
            return;
        (*i)++;
        int m = word_index(matcher_words, RM_COUNT, t);
        if (m < 0) {
            unknown_word(ps, t, 0);
            skip_unknown(ln, i);
            continue;
        }
        const struct rules_token *v = take_value(ps, ln, i, t, matcher_expects[m]);
        dr->extra = NULL;
        if (v && (m == RM_CYCLE || m == RM_RATE_LIMIT) && !take_extra(ps, dr, m, ln, i, v))
            v = NULL;
        if (m != RM_HEADER && dr->matcher_at[m].line) {
            ERR(ps, t, "duplicate matcher '%s' (first at column %d; only 'header' may repeat)",
                t->text, dr->matcher_at[m].col);
            continue;
        }
        if (!dr->matcher_at[m].line)
            dr->matcher_at[m] = pos_of(t);
        if (v)
            parse_matcher(ps, dr, (enum rule_matcher)m, v);
    }
}

static void parse_actions(struct parser *ps, struct draft *dr, const struct rules_line *ln,
                          size_t *i)
{
    while (*i < ln->n) {
        const struct rules_token *t = &ln->tok[(*i)++];
        int a = word_index(action_words, RA_COUNT, t);
        if (a < 0) {
            if (is_arrow(t))
                ERR(ps, t, "a rule has only one '=>'");
            else if (word_index(matcher_words, RM_COUNT, t) >= 0)
                ERR(ps, t, "'%s' is a matcher: matchers go before '=>'", t->text);
            else
                unknown_word(ps, t, 1);
            skip_unknown(ln, i);
            continue;
        }
        const struct rules_token *v = NULL, *v2 = NULL;
        int bare = a == RA_RESET || a == RA_EMPTY || a == RA_BAD_CHUNK;
        int optional = a == RA_HANG || a == RA_GARBAGE;
        if (optional && *i < ln->n && !is_keyword(&ln->tok[*i]))
            v = &ln->tok[(*i)++];
        else if (!bare && !optional)
            v = take_value(ps, ln, i, t, action_expects[a]);
        if (v && a == RA_SET_HEADER) {
            v2 = take_value(ps, ln, i, v, "a quoted header value");
            if (!v2)
                v = NULL;
        }
        dr->extra = NULL;
        if (v && a == RA_DELAY && !v->quoted &&
            (strcmp(v->text, "normal") == 0 || strcmp(v->text, "lognormal") == 0)) {
            const char *what = v->text[0] == 'n' ? "MEAN SD" : "P50 P99";
            v2 = take_value(ps, ln, i, v, what);
            dr->extra = v2 ? take_value(ps, ln, i, v, what) : NULL;
            if (!dr->extra)
                v = NULL;
        } else if (v && a == RA_DELAY && !v->quoted && strlen(v->text) > 4 &&
                   (edit_distance(v->text, "normal") <= 2 || edit_distance(v->text, "lognormal") <= 2)) {
            skip_unknown(ln, i); /* a misspelt distribution: its values are not actions */
        }
        int repeats = a == RA_SET_HEADER || a == RA_DEL_HEADER;
        if (!repeats && dr->action_at[a].line) {
            ERR(ps, t, "duplicate action '%s' (first at column %d)", t->text,
                dr->action_at[a].col);
            continue;
        }
        if (!dr->action_at[a].line)
            dr->action_at[a] = pos_of(t);
        if (v || bare || optional)
            parse_action(ps, dr, (enum rule_action)a, t, v, v2);
    }
}

static void draft_free(struct draft *dr)
{
    rules_rule_free(dr->r);
    sbuf_free(&dr->matchers);
    sbuf_free(&dr->actions);
}

/* Parse one logical line. ERRORS0 is the error count before the line was
 * read, so that a string the tokenizer rejected also discards the rule. */
static void parse_line(struct parser *ps, const struct rules_line *ln, size_t errors0)
{
    const struct rules_token *t = ln->tok;
    if (t[0].quoted || strcmp(t[0].text, "rule") != 0) {
        const char *rule_word = "rule";
        if (!t[0].quoted && nearest(t[0].text, &rule_word, 1))
            ERR(ps, &t[0], "unknown word '%s' at the start of a line (did you mean 'rule'?)",
                t[0].text);
        else
            ERR(ps, &t[0], "expected 'rule NAME MATCHERS... => ACTIONS...', got '%s'",
                t[0].text);
        return;
    }
    /* The word after `rule` is the name, even a keyword (`rule reset =>
     * reset`); but a keyword followed by what looks like its value
     * (`rule path /x => ...`) means the name was forgotten. */
    if (ln->n < 2 || is_arrow(&t[1]) ||
        (is_keyword(&t[1]) && ln->n > 2 && !is_keyword(&t[2]))) {
        ERR(ps, &t[0], "missing rule name after 'rule'");
        return;
    }
    check_name(ps, &t[1]);

    struct draft dr = {0};
    dr.r = xcalloc(1, sizeof *dr.r);
    dr.r->name = xstrdup(t[1].text);
    dr.r->line = t[0].line;
    dr.r->source = xstrdup(ln->source);
    dr.r->actions.truncate = -1;

    size_t i = 2;
    parse_matchers(ps, &dr, ln, &i);
    if (i >= ln->n) {
        rules_diag_add(ps->d, 1, ln->end_line, ln->end_col,
                       "missing '=>' and actions after the matchers of rule '%s'", t[1].text);
    } else {
        const struct rules_token *arrow = &ln->tok[i];
        if (is_arrow(arrow))
            i++;
        else
            ERR(ps, arrow, "missing '=>' before '%s' (matchers go before '=>', actions after)",
                arrow->text);
        if (i >= ln->n)
            ERR(ps, arrow, "rule '%s' has no action after '=>'", t[1].text);
        parse_actions(ps, &dr, ln, &i);
    }
    check_rule(ps, &dr);
    if (ps->d->errors != errors0) {
        draft_free(&dr);
        return;
    }

    struct rule *r = dr.r;
    r->phase = (r->has & (1u << RM_STATUS)) ? RULES_RESPONSE : RULES_REQUEST;
    r->actions.set_headers = r->set_headers;
    r->actions.del_headers = r->del_headers;
    struct sbuf norm = {0};
    sbuf_printf(&norm, "rule %s%s =>", r->name, dr.matchers.data ? dr.matchers.data : "");
    r->actions_off = norm.len + 1;
    sbuf_puts(&norm, dr.actions.data ? dr.actions.data : "");
    r->normalized = sbuf_steal(&norm);
    sbuf_free(&dr.matchers);
    sbuf_free(&dr.actions);

    if (ps->n_rules == ps->cap_rules) {
        ps->cap_rules = ps->cap_rules ? ps->cap_rules * 2 : 16;
        ps->rules = xrealloc(ps->rules, ps->cap_rules * sizeof *ps->rules);
    }
    ps->rules[ps->n_rules++] = r;
}

struct rules *rules_parse(const char *text, size_t len, const char *filename, uint64_t seed,
                          struct rules_diags *diags)
{
    UNUSED(filename); /* messages carry positions; the caller adds the file name */
    struct rules_diags local = {0};
    struct parser ps = {.d = &local};
    struct rules_lexer lx;
    struct rules_line ln;
    rules_lex_init(&lx, text, len);
    for (;;) {
        size_t errors0 = local.errors;
        if (!rules_lex_line(&lx, &ln, &local))
            break;
        if (ln.n > 0)
            parse_line(&ps, &ln, errors0);
        rules_line_free(&ln);
    }
    for (size_t i = 0; i < ps.n_names; i++)
        free(ps.names[i].name);
    free(ps.names);
    free(ps.name_slots);

    struct rules *rs = NULL;
    if (local.errors == 0) {
        rs = rules_set_build(ps.rules, ps.n_rules, seed);
    } else {
        for (size_t i = 0; i < ps.n_rules; i++)
            rules_rule_free(ps.rules[i]);
        free(ps.rules);
    }
    sort_diags(&local);
    if (diags)
        *diags = local;
    else
        rules_diags_free(&local);
    return rs;
}

struct rules *rules_load_file(const char *path, uint64_t seed, struct rules_diags *diags)
{
    struct rules_diags local = {0};
    FILE *f = fopen(path, "rb");
    struct sbuf text = {0};
    int err = f ? 0 : errno;
    if (f) {
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            sbuf_append(&text, buf, n);
        if (ferror(f))
            err = errno ? errno : EIO;
        fclose(f);
    }
    if (err) {
        rules_diag_add(&local, 1, 0, 0, "cannot read the rule file: %s", strerror(err));
        sbuf_free(&text);
        if (diags)
            *diags = local;
        else
            rules_diags_free(&local);
        return NULL;
    }
    struct rules *rs = rules_parse(text.data ? text.data : "", text.len, path, seed, diags);
    sbuf_free(&text);
    return rs;
}
