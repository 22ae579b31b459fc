/*
 * glob — shell-style patterns compiled once and matched many times without
 * allocating: `*` matches any run of bytes (including `/`), `?` exactly one
 * byte, every other byte stands for itself. There is no escape character
 * and no bracket expression: the rule language has no use for them, and
 * every pattern is therefore valid.
 * Not a filename matcher: `/` and leading dots are not special.
 */
#ifndef STATUSPROXY_GLOB_H
#define STATUSPROXY_GLOB_H

#include <stddef.h>

enum {
    GLOB_ICASE = 1 << 0, /* compare ASCII letters case-insensitively */
};

struct glob; /* opaque, immutable once compiled: share it between threads freely */

/* Compile PATTERN[0..len) with GLOB_* FLAGS. Never returns NULL; the caller
 * owns the result and frees it with glob_free. An empty pattern matches only
 * the empty string. */
struct glob *glob_compile(const char *pattern, size_t len, unsigned flags);

/* 1 when S[0..len) matches the whole pattern, else 0. Allocates nothing. */
int glob_match(const struct glob *g, const char *s, size_t len);

/* The pattern as given to glob_compile (NUL-terminated, owned by G);
 * *len (may be NULL) receives its length. */
const char *glob_pattern(const struct glob *g, size_t *len);

/* Does PATTERN[0..len) contain a wildcard? */
int glob_has_wildcard(const char *pattern, size_t len);

void glob_free(struct glob *g); /* NULL is fine */

#endif
