/*
 * glob — compilation sorts a pattern into the shape it has, so that the
 * common shapes (a literal, "prefix*", "*suffix", "*") are matched with one
 * comparison; anything else goes through the general matcher, which
 * backtracks only to the last `*` seen and so runs in O(pattern * subject)
 * at worst, with no recursion and no allocation.
 */
#include "glob.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

enum shape {
    SHAPE_LITERAL, /* no wildcard: whole-string comparison */
    SHAPE_PREFIX,  /* "lit*" */
    SHAPE_SUFFIX,  /* "*lit" */
    SHAPE_ANY,     /* "*" (or "**"...) */
    SHAPE_GENERAL,
};

struct glob {
    char *pattern;     /* as given, for display */
    size_t pattern_len;
    char *prog;        /* runs of `*` collapsed; lower-cased when ICASE */
    size_t prog_len;
    const char *lit;   /* the literal part for LITERAL, PREFIX and SUFFIX */
    size_t lit_len;
    enum shape shape;
    int icase;
};

static unsigned char fold(unsigned char c, int icase)
{
    return (icase && c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

int glob_has_wildcard(const char *pattern, size_t len)
{
    return memchr(pattern, '*', len) != NULL || memchr(pattern, '?', len) != NULL;
}

struct glob *glob_compile(const char *pattern, size_t len, unsigned flags)
{
    struct glob *g = xcalloc(1, sizeof *g);
    g->icase = (flags & GLOB_ICASE) != 0;
    g->pattern = xstrndup(pattern, len);
    g->pattern_len = len;
    g->prog = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (pattern[i] == '*' && n > 0 && g->prog[n - 1] == '*')
            continue; /* "**" means the same as "*" */
        g->prog[n++] = (char)fold((unsigned char)pattern[i], g->icase);
    }
    g->prog[n] = '\0';
    g->prog_len = n;

    size_t stars = 0, qmarks = 0;
    for (size_t i = 0; i < n; i++) {
        stars += g->prog[i] == '*';
        qmarks += g->prog[i] == '?';
    }
    g->shape = SHAPE_GENERAL;
    if (qmarks == 0 && stars == 0) {
        g->shape = SHAPE_LITERAL;
        g->lit = g->prog;
        g->lit_len = n;
    } else if (qmarks == 0 && stars == 1 && n == 1) {
        g->shape = SHAPE_ANY;
    } else if (qmarks == 0 && stars == 1 && g->prog[n - 1] == '*') {
        g->shape = SHAPE_PREFIX;
        g->lit = g->prog;
        g->lit_len = n - 1;
    } else if (qmarks == 0 && stars == 1 && g->prog[0] == '*') {
        g->shape = SHAPE_SUFFIX;
        g->lit = g->prog + 1;
        g->lit_len = n - 1;
    }
    return g;
}

/* Compare S[0..n) with the (already folded) literal LIT[0..n). */
static int lit_eq(const char *s, const char *lit, size_t n, int icase)
{
    if (n == 0)
        return 1;
    if (!icase)
        return memcmp(s, lit, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (fold((unsigned char)s[i], 1) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* The general case. On a mismatch after a `*`, let that star swallow one
 * more byte and retry from just after it; earlier stars never need to be
 * revisited, because the later star can absorb whatever they would have. */
static int match_general(const struct glob *g, const char *s, size_t len)
{
    const char *p = g->prog;
    size_t plen = g->prog_len, pi = 0, si = 0;
    size_t star = (size_t)-1, mark = 0;
    while (si < len) {
        if (pi < plen && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < plen &&
                   (p[pi] == '?' || (unsigned char)p[pi] == fold((unsigned char)s[si], g->icase))) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < plen && p[pi] == '*')
        pi++;
    return pi == plen;
}

int glob_match(const struct glob *g, const char *s, size_t len)
{
    switch (g->shape) {
    case SHAPE_LITERAL:
        return len == g->lit_len && lit_eq(s, g->lit, len, g->icase);
    case SHAPE_ANY:
        return 1;
    case SHAPE_PREFIX:
        return len >= g->lit_len && lit_eq(s, g->lit, g->lit_len, g->icase);
    case SHAPE_SUFFIX:
        return len >= g->lit_len && lit_eq(s + len - g->lit_len, g->lit, g->lit_len, g->icase);
    case SHAPE_GENERAL:
        break;
    }
    return match_general(g, s, len);
}

const char *glob_pattern(const struct glob *g, size_t *len)
{
    if (len)
        *len = g->pattern_len;
    return g->pattern;
}

void glob_free(struct glob *g)
{
    if (!g)
        return;
    free(g->pattern);
    free(g->prog);
    free(g);
}
