/*
 * route — an exchange's route: its path with the id-like segments replaced
 * (DESIGN §11), so that /users/123 and /users/456 count as /users/{n}.
 * Decimal numbers become {n}, UUIDs {uuid}, hex strings of 8+ characters
 * with a digit {hex}, other segments of 16+ characters mixing letters and
 * digits {token}; a user pattern (run --route) that matches the whole path
 * wins and is the route as written. A cap (route_cap) bounds the distinct
 * routes per host, the rest counting as {other}. Pure: no SQLite, no loop.
 */
#ifndef STATUSPROXY_ROUTE_H
#define STATUSPROXY_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#define ROUTE_MAX 1023          /* longer routes are cut, like paths */
#define ROUTE_OTHER "{other}"
#define ROUTE_DEFAULT_MAX 1000  /* --max-routes */
/* (host, route) pairs kept in all: hosts come from clients (any name in
 * forward mode), so the table is bounded whatever they send. */
#define ROUTE_DEFAULT_TOTAL 50000

/* User patterns, in the order given; the first that matches wins. */
struct route_patterns;

struct route_patterns *route_patterns_new(void);
/* Add PATTERN (e.g. "/users/{id}/orders", or "/static/" then "*"). Returns 0, or -1 with a
 * message in ERR (it must start with '/', '*' only as the last segment). */
int route_patterns_add(struct route_patterns *p, const char *pattern, char *err, size_t errlen);
size_t route_patterns_count(const struct route_patterns *p);
void route_patterns_free(struct route_patterns *p);

/* Write the route of PATH[0..len) (without the query) to OUT, NUL-terminated
 * and cut to CAP - 1 bytes; P may be NULL. Returns the route's length. */
size_t route_template(const struct route_patterns *p, const char *path, size_t len, char *out,
                      size_t cap);

/* Distinct routes seen per host, at most MAX each and TOTAL in all, with the
 * exchanges each counted (those beyond a cap under ROUTE_OTHER; once TOTAL
 * pairs exist, a new host's exchanges are verdicts only, not counted). */
struct route_cap;

/* MAX 0: ROUTE_DEFAULT_MAX; TOTAL 0: ROUTE_DEFAULT_TOTAL. */
struct route_cap *route_cap_new(size_t max, size_t total);
/* Count N exchanges of ROUTE of HOST (N may be 0: only the verdict, for
 * exchanges counted before). 1 when the route is kept (seen before, or a
 * new one under the cap), 0 when it counts as {other}. */
int route_cap_admit(struct route_cap *c, const char *host, size_t hlen, const char *route,
                    size_t rlen, uint64_t n);

/* One counted route; host and route point into the cap (valid until its
 * next change). */
struct route_count {
    const char *host, *route;   /* NUL-terminated */
    uint64_t count;
};
/* The N routes with the most exchanges (fewer when fewer exist), most
 * first, into OUT[0..n). Returns how many. */
size_t route_cap_top(const struct route_cap *c, struct route_count *out, size_t n);
void route_cap_free(struct route_cap *c);

#endif
