/*
 * target — request-target forms (RFC 9112 §3.2) and authorities: which host,
 * port and path a request names. Pure string handling, unit-tested.
 */
#ifndef STATUSPROXY_TARGET_H
#define STATUSPROXY_TARGET_H

#include <stddef.h>

enum target_form { TARGET_ORIGIN, TARGET_ABSOLUTE, TARGET_AUTHORITY, TARGET_ASTERISK };

struct target {
    enum target_form form;
    char host[256];      /* lowercase; IPv6 without brackets; "" for origin/asterisk */
    int port;            /* explicit, or 80 for http:// */
    const char *path;    /* origin-form part to send upstream (points into the input) */
    size_t path_len;     /* including the query */
    size_t path_only_len; /* without the query */
};

/* Parse a request-target. CONNECT requests take the authority form only.
 * Returns 0, or -1 with a short reason in *why (for the 400 body). */
int target_parse(const char *s, size_t len, int is_connect, struct target *t, const char **why);

/* Parse "host[:port]" or "[v6][:port]" (a Host header or CONNECT target).
 * HOST gets the lowercase name without brackets; PORT the port or
 * DEFAULT_PORT. Returns 0 or -1. */
int target_parse_authority(const char *s, size_t len, char *host, size_t hostlen, int *port,
                           int default_port);

/* Write "host:port" (brackets for IPv6), omitting :80 when OMIT_80. */
void target_format_authority(const char *host, int port, int omit_80, char *buf, size_t len);

#endif
