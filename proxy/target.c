/*
 * target — request-target parsing. Strict: userinfo, fragments, non-http
 * schemes and malformed authorities are refused rather than guessed at.
 */
#include "target.h"
#include "units.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int is_reg_name_char(unsigned char c)
{
    /* unreserved / sub-delims / pct-encoded of RFC 3986 reg-name */
    return isalnum(c) || (c && strchr("-._~!$&'()*+,;=%", c) != NULL);
}

int target_parse_authority(const char *s, size_t len, char *host, size_t hostlen, int *port,
                           int default_port)
{
    const char *host_start = s, *host_end, *port_start = NULL, *end = s + len;
    if (len == 0)
        return -1;
    if (s[0] == '[') {
        host_start = s + 1;
        host_end = memchr(s, ']', len);
        if (!host_end)
            return -1;
        if (host_end + 1 < end) {
            if (host_end[1] != ':')
                return -1;
            port_start = host_end + 2;
        }
        for (const char *p = host_start; p < host_end; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return -1;
    } else {
        host_end = memchr(s, ':', len);
        if (host_end)
            port_start = host_end + 1;
        else
            host_end = end;
        for (const char *p = host_start; p < host_end; p++)
            if (!is_reg_name_char((unsigned char)*p))
                return -1;
    }
    size_t hlen = (size_t)(host_end - host_start);
    if (hlen == 0 || hlen >= hostlen)
        return -1;
    for (size_t i = 0; i < hlen; i++)
        host[i] = (char)tolower((unsigned char)host_start[i]);
    host[hlen] = '\0';
    *port = default_port;
    if (port_start) {
        size_t plen = (size_t)(end - port_start);
        if (plen == 0) /* "host:" means the default port (RFC 3986 §3.2.3) */
            return 0;
        uint64_t v;
        if (plen > 5 || units_parse_u64(port_start, plen, 65535, &v) != 0 || v == 0)
            return -1;
        *port = (int)v;
    }
    return 0;
}

static int valid_path_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return 0;
    }
    return 1;
}

int target_parse(const char *s, size_t len, int is_connect, struct target *t, const char **why)
{
    memset(t, 0, sizeof *t);
    *why = "malformed request-target";
    if (len == 0)
        return -1;
    if (is_connect) {
        t->form = TARGET_AUTHORITY;
        *why = "CONNECT needs a host:port target";
        if (target_parse_authority(s, len, t->host, sizeof t->host, &t->port, 0) != 0 ||
            t->port == 0)
            return -1;
        return 0;
    }
    if (len == 1 && s[0] == '*') {
        t->form = TARGET_ASTERISK;
        t->path = s;
        t->path_len = t->path_only_len = 1;
        return 0;
    }
    if (s[0] == '/') {
        if (!valid_path_chars(s, len))
            return -1;
        t->form = TARGET_ORIGIN;
        t->path = s;
        t->path_len = len;
        const char *q = memchr(s, '?', len);
        t->path_only_len = q ? (size_t)(q - s) : len;
        return 0;
    }
    /* absolute-form: scheme "://" authority [path-abempty] ["?" query] */
    const char *colon = memchr(s, ':', len);
    if (!colon || (size_t)(colon - s) + 3 > len || memcmp(colon, "://", 3) != 0)
        return -1;
    size_t slen = (size_t)(colon - s);
    if (!(slen == 4 && strncasecmp(s, "http", 4) == 0)) {
        *why = slen == 5 && strncasecmp(s, "https", 5) == 0
                   ? "https:// targets need a CONNECT tunnel (use the proxy for https with CONNECT)"
                   : "only http:// absolute targets are supported";
        return -1;
    }
    const char *auth = colon + 3, *end = s + len;
    const char *auth_end = auth;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?')
        auth_end++;
    if (memchr(auth, '@', (size_t)(auth_end - auth))) {
        *why = "userinfo in the target is not allowed";
        return -1;
    }
    if (target_parse_authority(auth, (size_t)(auth_end - auth), t->host, sizeof t->host, &t->port,
                               80) != 0) {
        *why = "malformed authority in the target";
        return -1;
    }
    if (!valid_path_chars(auth_end, (size_t)(end - auth_end)))
        return -1;
    t->form = TARGET_ABSOLUTE;
    if (auth_end == end || *auth_end == '?') {
        /* An empty path is sent as "/" (RFC 9112 §3.2.1); the caller sees
         * path == NULL and writes "/" before any query. */
        t->path = auth_end;
        t->path_len = (size_t)(end - auth_end);
        t->path_only_len = 0;
        return 0;
    }
    t->path = auth_end;
    t->path_len = (size_t)(end - auth_end);
    const char *q = memchr(auth_end, '?', t->path_len);
    t->path_only_len = q ? (size_t)(q - auth_end) : t->path_len;
    return 0;
}

void target_format_authority(const char *host, int port, int omit_80, char *buf, size_t len)
{
    int v6 = strchr(host, ':') != NULL;
    if (omit_80 && port == 80)
        snprintf(buf, len, v6 ? "[%s]" : "%s", host);
    else
        snprintf(buf, len, v6 ? "[%s]:%d" : "%s:%d", host, port);
}
