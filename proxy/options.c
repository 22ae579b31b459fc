/*
 * options — `statusproxy run` flags. Both "--flag VALUE" and "--flag=VALUE"
 * are accepted. Every message names the flag it is about.
 */
#include "options.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "log.h"
#include "target.h"
#include "units.h"
#include "util.h"

const char options_help[] =
    "usage: statusproxy run [options]\n"
    "  --listen ADDR:PORT        where clients connect [127.0.0.1:8080]\n"
    "  --upstream URL            backend for origin-form requests, http://HOST:PORT or\n"
    "                            https://HOST[:PORT] (TLS, port 443 by default) [none]\n"
    "  --upstream-ca FILE        CA certificates (PEM) an https upstream is verified\n"
    "                            against, instead of the system store\n"
    "  --upstream-insecure       do not verify an https upstream's certificate\n"
    "  --ca-dir DIR              the CA interception mints with [$HOME/.statusproxy]\n"
    "  --intercept               decrypt every CONNECT (TLS with the CA's certificates)\n"
    "  --intercept-hosts GLOBS   decrypt CONNECT only to these hosts, e.g. api.*,*.test\n"
    "  --tls-listen ADDR:PORT    also listen here for clients speaking TLS [off]\n"
    "  --tls-cert FILE           the TLS listener's certificate chain (PEM), with --tls-key\n"
    "  --tls-key FILE            its private key (PEM); without both, a certificate is\n"
    "                            minted from the CA\n"
    "  --tls-name NAME           a further name for the minted certificate (repeatable)\n"
    "  --rules FILE              rule file [none]\n"
    "  --db FILE                 SQLite audit database [statusproxy.db]\n"
    "  --admin ADDR:PORT|off     admin API and live page [127.0.0.1:9090]\n"
    "  --admin-token TOKEN       require 'Authorization: Bearer TOKEN' on the admin API\n"
    "  --seed N                  seed for `chance` and random delays [random]\n"
    "  --fault-headers           honour X-Statusproxy-Abort / X-Statusproxy-Delay\n"
    "  --mark-faults             add X-Statusproxy-Rule: NAME to answers a rule changed\n"
    "  --log-exchanges MODE      raw rows kept: all|errors|none [all]\n"
    "  --retain DURATION         keep raw rows this long [7d]\n"
    "  --workers N               event-loop threads [1]\n"
    "  --allow CIDR              clients allowed (repeatable) [loopback]\n"
    "  --proxy-auth USER:PASS    require Basic proxy authentication (forward mode)\n"
    "  --connect-ports LIST      ports CONNECT may reach, e.g. 443,8443 [443]\n"
    "  --deny-dest CIDR          destinations forward mode refuses, after DNS (repeatable)\n"
    "  --allow-trace             answer TRACE with Max-Forwards: 0 (echo); else 405\n"
    "  --header-timeout D        request head must arrive within D, else 408 [10s]\n"
    "  --connect-timeout D       upstream connect timeout [5s]\n"
    "  --response-timeout D      upstream response timeout, then 504 [60s]\n"
    "  --idle-timeout D          idle keep-alive connections are closed after D [60s]\n"
    "  --tunnel-idle-timeout D   CONNECT/101 tunnels silent both ways are closed after D [10m]\n"
    "  --max-connections N       client connections at most [10000]\n"
    "  --max-active-faults N     exchanges held by delay/hang/throttle/slow-head at once\n"
    "                            [unlimited]; further such faults are skipped\n"
    "  --route PATTERN           a route template, /users/{id} or /static/* (repeatable)\n"
    "  --max-routes N            distinct routes per host in the aggregates [1000]\n"
    "  --max-request-body SIZE   request bodies larger than SIZE get 413 [unlimited]\n"
    "  --log-level LEVEL         error|warn|info|debug [info]\n"
    "Durations: 250ms, 5s, 2m, 1h, 7d.\n";

void options_defaults(struct run_options *o)
{
    memset(o, 0, sizeof *o);
    options_parse_listen("127.0.0.1:8080", &o->listen);
    o->admin_enabled = 1;
    options_parse_listen("127.0.0.1:9090", &o->admin);
    o->db_path = "statusproxy.db";
    o->log_exchanges = AUDIT_LOG_ALL;
    o->retain_ms = 7ULL * 86400000ULL;
    o->workers = 1;
    o->header_timeout_ms = 10000;
    o->connect_timeout_ms = 5000;
    o->response_timeout_ms = 60000;
    o->idle_timeout_ms = 60000;
    o->tunnel_idle_timeout_ms = 600000;
    o->max_connections = 10000;
    o->max_routes = ROUTE_DEFAULT_MAX;
    o->log_level = LOG_INFO;
}

void options_free(struct run_options *o)
{
    for (size_t i = 0; i < o->n_allow; i++)
        free(o->allow[i]);
    free(o->allow);
    free(o->proxy_auth);
    free(o->admin_token);
    free(o->connect_ports);
    for (size_t i = 0; i < o->n_intercept_hosts; i++)
        glob_free(o->intercept_hosts[i]);
    free(o->intercept_hosts);
    o->intercept_hosts = NULL;
    o->n_intercept_hosts = 0;
    for (size_t i = 0; i < o->n_tls_names; i++)
        free(o->tls_names[i]);
    free(o->tls_names);
    o->tls_names = NULL;
    o->n_tls_names = 0;
    route_patterns_free(o->routes);
    o->routes = NULL;
    free(o->deny_dest);
    o->deny_dest = NULL;
    o->n_deny_dest = 0;
    o->allow = NULL;
    o->n_allow = 0;
    o->proxy_auth = o->admin_token = NULL;
    o->connect_ports = NULL;
}

static int parse_port(const char *s, int *port)
{
    size_t len = strlen(s);
    uint64_t v;
    if (len > 5 || units_parse_u64(s, len, 65535, &v) != 0)
        return -1;
    *port = (int)v;
    return 0;
}

int options_parse_listen(const char *text, struct listen_addr *a)
{
    char host[64];
    const char *colon;
    memset(a, 0, sizeof *a);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return -1;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host || memchr(text, ':', (size_t)(colon - text)))
            return -1;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    int port;
    if (parse_port(colon + 1, &port) != 0)
        return -1;
    if (strcmp(host, "localhost") == 0 || host[0] == '\0')
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        snprintf(a->text, sizeof a->text, "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        snprintf(a->text, sizeof a->text, "[%s]:%d", host, port);
    } else {
        return -1;
    }
    a->port = port;
    return 0;
}

int options_parse_upstream(const char *text, char *host, size_t hostlen, int *port, int *tls,
                           const char **why)
{
    *why = "expected http://HOST:PORT or https://HOST[:PORT]";
    *tls = strncmp(text, "https://", 8) == 0;
    if (!*tls && strncmp(text, "http://", 7) != 0)
        return -1;
    const char *auth = text + (*tls ? 8 : 7);
    const char *end = auth + strcspn(auth, "/?#");
    if (*end && strcmp(end, "/") != 0) {
        *why = "expected http://HOST:PORT or https://HOST[:PORT] without a path";
        return -1;
    }
    /* The same authority grammar as a request's (target.c). */
    if (target_parse_authority(auth, (size_t)(end - auth), host, hostlen, port,
                               *tls ? 443 : 80) != 0)
        return -1;
    return 0;
}

static int parse_count(const char *s, long min, long max, int *out)
{
    size_t len = strlen(s);
    uint64_t v;
    if (len > 9 || units_parse_u64(s, len, UINT64_MAX, &v) != 0 || (long)v < min || (long)v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    return len > 20 ? -1 : units_parse_u64(s, len, UINT64_MAX, out);
}

static int parse_port_list(const char *s, struct run_options *o)
{
    int *ports = NULL;
    size_t n = 0;
    char *copy = xstrdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int p;
        if (parse_port(tok, &p) != 0 || p == 0) {
            free(copy);
            free(ports);
            return -1;
        }
        ports = xrealloc(ports, (n + 1) * sizeof *ports);
        ports[n++] = p;
    }
    free(copy);
    if (n == 0)
        return -1;
    free(o->connect_ports);
    o->connect_ports = ports;
    o->n_connect_ports = n;
    return 0;
}

/* Flags that take no value. */
static int *bool_flag(struct run_options *o, const char *name)
{
    if (strcmp(name, "--fault-headers") == 0)
        return &o->fault_headers;
    if (strcmp(name, "--mark-faults") == 0)
        return &o->mark_faults;
    if (strcmp(name, "--allow-trace") == 0)
        return &o->allow_trace;
    if (strcmp(name, "--upstream-insecure") == 0)
        return &o->upstream_insecure;
    if (strcmp(name, "--intercept") == 0)
        return &o->intercept_all;
    return NULL;
}

static const char *const value_flags[] = {
    "--listen", "--upstream", "--upstream-ca", "--rules", "--db", "--admin", "--admin-token", "--seed",
    "--log-exchanges", "--retain", "--workers", "--allow", "--proxy-auth", "--connect-ports",
    "--header-timeout", "--connect-timeout", "--response-timeout", "--idle-timeout",
    "--tunnel-idle-timeout", "--max-connections", "--log-level", "--deny-dest",
    "--max-request-body", "--route", "--max-routes", "--max-active-faults",
    "--ca-dir", "--intercept-hosts",
    "--tls-listen", "--tls-cert", "--tls-key", "--tls-name",
};

static int duration_flag(const char *name, const char *value, uint64_t *out, int allow_zero,
                         char *err, size_t errlen)
{
    if (units_parse_duration(value, strlen(value), out) != 0 || (!allow_zero && *out == 0)) {
        snprintf(err, errlen, "%s: expected a duration like 250ms, 5s, 2m, 1h or 7d%s, got '%s'",
                 name, allow_zero ? "" : " (not 0)", value);
        return -1;
    }
    return 0;
}

/* The field a timeout flag sets, or NULL when NAME is not one. */
static uint64_t *timeout_field(struct run_options *o, const char *name)
{
    if (strcmp(name, "--header-timeout") == 0)
        return &o->header_timeout_ms;
    if (strcmp(name, "--connect-timeout") == 0)
        return &o->connect_timeout_ms;
    if (strcmp(name, "--response-timeout") == 0)
        return &o->response_timeout_ms;
    if (strcmp(name, "--idle-timeout") == 0)
        return &o->idle_timeout_ms;
    if (strcmp(name, "--tunnel-idle-timeout") == 0)
        return &o->tunnel_idle_timeout_ms;
    return NULL;
}

static int positive_flag(const char *name, const char *value, uint64_t *out, char *err,
                         size_t errlen)
{
    if (parse_u64(value, out) != 0 || *out == 0) {
        snprintf(err, errlen, "%s: expected a number of at least 1, got '%s'", name, value);
        return -1;
    }
    return 0;
}

static void set_upstream_authority(struct run_options *o)
{
    o->has_upstream = 1;
    if (strchr(o->upstream_host, ':'))
        snprintf(o->upstream_authority, sizeof o->upstream_authority, "[%s]:%d",
                 o->upstream_host, o->upstream_port);
    else
        snprintf(o->upstream_authority, sizeof o->upstream_authority, "%s:%d", o->upstream_host,
                 o->upstream_port);
}

/* --route and --max-routes (DESIGN §11). */
static int route_flag(struct run_options *o, const char *name, const char *v, char *err,
                      size_t errlen)
{
    if (strcmp(name, "--max-routes") == 0) {
        if (parse_count(v, 1, 1000000, &o->max_routes) != 0) {
            snprintf(err, errlen, "%s: expected a number from 1 to 1000000, got '%s'", name, v);
            return -1;
        }
        return 0;
    }
    if (!o->routes)
        o->routes = route_patterns_new();
    return route_patterns_add(o->routes, v, err, errlen);
}

static int apply_max_request_body(struct run_options *o, const char *name, const char *v,
                                  char *err, size_t errlen)
{
    if (units_parse_bytes(v, strlen(v), &o->max_request_body) != 0 || o->max_request_body == 0) {
        snprintf(err, errlen, "%s: expected a size like 10MB or 65536 (not 0), got '%s'", name, v);
        return -1;
    }
    return 0;
}

/* --deny-dest CIDR, repeatable; a block with host bits set gets a hint. */
static int apply_deny_dest(struct run_options *o, const char *name, const char *v, char *err,
                           size_t errlen)
{
    struct cidr block;
    int rc = cidr_parse(v, strlen(v), &block);
    if (rc != 0) {
        char fixed[CIDR_STRLEN];
        cidr_format(&block, fixed, sizeof fixed);
        if (rc == CIDR_EHOSTBITS)
            snprintf(err, errlen, "%s: '%s' has host bits set; did you mean %s?", name, v, fixed);
        else
            snprintf(err, errlen, "%s: expected a CIDR like 169.254.0.0/16, got '%s'", name, v);
        return -1;
    }
    o->deny_dest = xrealloc(o->deny_dest, (o->n_deny_dest + 1) * sizeof *o->deny_dest);
    o->deny_dest[o->n_deny_dest++] = block;
    return 0;
}

/* apply_core's groups return this for a flag that is not theirs. */
#define NOT_MINE 1

static int bad_empty(const char *name, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: expected a non-empty value", name);
    return -1;
}

/* Where the proxy listens and what it talks to: --listen, --admin,
 * --upstream, --rules, --db, --admin-token. */
static int apply_endpoints(struct run_options *o, const char *name, const char *v, char *err,
                           size_t errlen)
{
    const char *why;
    if (strcmp(name, "--listen") == 0) {
        if (options_parse_listen(v, &o->listen) != 0) {
            snprintf(err, errlen, "%s: expected ADDR:PORT (e.g. 127.0.0.1:8080), got '%s'", name,
                     v);
            return -1;
        }
    } else if (strcmp(name, "--admin") == 0) {
        if (strcmp(v, "off") == 0) {
            o->admin_enabled = 0;
        } else {
            o->admin_enabled = 1;
            if (options_parse_listen(v, &o->admin) != 0) {
                snprintf(err, errlen, "%s: expected ADDR:PORT or off, got '%s'", name, v);
                return -1;
            }
        }
    } else if (strcmp(name, "--upstream") == 0) {
        if (options_parse_upstream(v, o->upstream_host, sizeof o->upstream_host,
                                   &o->upstream_port, &o->upstream_https, &why) != 0) {
            snprintf(err, errlen, "%s: %s, got '%s'", name, why, v);
            return -1;
        }
        set_upstream_authority(o);
    } else if (strcmp(name, "--upstream-ca") == 0) {
        if (!*v)
            return bad_empty(name, err, errlen);
        o->upstream_ca = v;
    } else if (strcmp(name, "--rules") == 0) {
        o->rules_path = v;
    } else if (strcmp(name, "--db") == 0) {
        if (!*v)
            return bad_empty(name, err, errlen);
        o->db_path = v;
    } else if (strcmp(name, "--admin-token") == 0) {
        if (!*v)
            return bad_empty(name, err, errlen);
        free(o->admin_token);
        o->admin_token = xstrdup(v);
    } else {
        return NOT_MINE;
    }
    return 0;
}

/* What is recorded and logged: --seed, --log-exchanges, --retain, --log-level. */
static int apply_recording(struct run_options *o, const char *name, const char *v, char *err,
                           size_t errlen)
{
    if (strcmp(name, "--seed") == 0) {
        if (parse_u64(v, &o->seed) != 0) {
            snprintf(err, errlen, "%s: expected a non-negative integer, got '%s'", name, v);
            return -1;
        }
        o->has_seed = 1;
    } else if (strcmp(name, "--log-exchanges") == 0) {
        if (strcmp(v, "all") == 0)
            o->log_exchanges = AUDIT_LOG_ALL;
        else if (strcmp(v, "errors") == 0)
            o->log_exchanges = AUDIT_LOG_ERRORS;
        else if (strcmp(v, "none") == 0)
            o->log_exchanges = AUDIT_LOG_NONE;
        else {
            snprintf(err, errlen, "%s: expected all, errors or none, got '%s'", name, v);
            return -1;
        }
    } else if (strcmp(name, "--retain") == 0) {
        return duration_flag(name, v, &o->retain_ms, 0, err, errlen);
    } else if (strcmp(name, "--log-level") == 0) {
        enum log_level lv;
        if (log_parse_level(v, &lv) != 0) {
            snprintf(err, errlen, "%s: expected error, warn, info or debug, got '%s'", name, v);
            return -1;
        }
        o->log_level = (int)lv;
    } else {
        return NOT_MINE;
    }
    return 0;
}

/* Capacity and who may use the proxy: --workers, --max-connections, --allow,
 * --proxy-auth, --connect-ports and the timeouts. */
static int apply_limits(struct run_options *o, const char *name, const char *v, char *err,
                        size_t errlen)
{
    if (strcmp(name, "--workers") == 0) {
        if (parse_count(v, 1, 64, &o->workers) != 0) {
            snprintf(err, errlen, "%s: expected a number from 1 to 64, got '%s'", name, v);
            return -1;
        }
    } else if (strcmp(name, "--max-connections") == 0) {
        if (parse_count(v, 1, 1000000, &o->max_connections) != 0) {
            snprintf(err, errlen, "%s: expected a number from 1 to 1000000, got '%s'", name, v);
            return -1;
        }
    } else if (strcmp(name, "--allow") == 0) {
        if (!*v)
            return bad_empty(name, err, errlen);
        o->allow = xrealloc(o->allow, (o->n_allow + 1) * sizeof *o->allow);
        o->allow[o->n_allow++] = xstrdup(v);
    } else if (strcmp(name, "--proxy-auth") == 0) {
        const char *colon = strchr(v, ':');
        if (!colon || colon == v) {
            snprintf(err, errlen, "%s: expected USER:PASS, got '%s'", name, v);
            return -1;
        }
        free(o->proxy_auth);
        o->proxy_auth = xstrdup(v);
    } else if (strcmp(name, "--connect-ports") == 0) {
        if (parse_port_list(v, o) != 0) {
            snprintf(err, errlen, "%s: expected a comma list of ports like 443,8443, got '%s'",
                     name, v);
            return -1;
        }
    } else if (timeout_field(o, name)) {
        return duration_flag(name, v, timeout_field(o, name), 0, err, errlen);
    } else {
        return NOT_MINE;
    }
    return 0;
}

/* The flags not handled in apply; an unknown NAME is left alone. */
static int apply_core(struct run_options *o, const char *name, const char *v, char *err,
                      size_t errlen)
{
    int r = apply_endpoints(o, name, v, err, errlen);
    if (r == NOT_MINE)
        r = apply_recording(o, name, v, err, errlen);
    if (r == NOT_MINE)
        r = apply_limits(o, name, v, err, errlen);
    return r == NOT_MINE ? 0 : r;
}

/* --intercept-hosts GLOB,...: host patterns, case-insensitive; the flag
 * may repeat and adds to the list. */
static int apply_intercept_hosts(struct run_options *o, const char *name, const char *v,
                                 char *err, size_t errlen)
{
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0) {
            snprintf(err, errlen, "%s: expected host patterns like api.example.com,*.test, got '%s'",
                     name, v);
            return -1;
        }
        o->intercept_hosts = xrealloc(o->intercept_hosts,
                                      (o->n_intercept_hosts + 1) * sizeof *o->intercept_hosts);
        o->intercept_hosts[o->n_intercept_hosts++] = glob_compile(p, n, GLOB_ICASE);
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* The TLS listener: --tls-listen, --tls-cert, --tls-key, --tls-name. The
 * files are only named here; main reads them. */
static int apply_tls_listen(struct run_options *o, const char *name, const char *v, char *err,
                            size_t errlen)
{
    if (!*v)
        return bad_empty(name, err, errlen);
    if (strcmp(name, "--tls-listen") == 0) {
        if (options_parse_listen(v, &o->tls_listen) != 0) {
            snprintf(err, errlen, "%s: expected ADDR:PORT (e.g. 127.0.0.1:8443), got '%s'", name,
                     v);
            return -1;
        }
        o->has_tls_listen = 1;
    } else if (strcmp(name, "--tls-cert") == 0) {
        o->tls_cert = v;
    } else if (strcmp(name, "--tls-key") == 0) {
        o->tls_key = v;
    } else {
        o->tls_names = xrealloc(o->tls_names, (o->n_tls_names + 1) * sizeof *o->tls_names);
        o->tls_names[o->n_tls_names++] = xstrdup(v);
    }
    return 0;
}

/* The TLS listener's flags go together: both files or neither, names only
 * for a minted certificate, and none of them without --tls-listen. */
static int check_tls_listen(const struct run_options *o, char *err, size_t errlen)
{
    const char *lone = o->tls_cert && !o->tls_key ? "--tls-cert"
                       : o->tls_key && !o->tls_cert ? "--tls-key"
                                                      : NULL;
    if (lone) {
        snprintf(err, errlen, "%s: needs %s too (both files, or neither for a minted certificate)",
                 lone, strcmp(lone, "--tls-cert") == 0 ? "--tls-key" : "--tls-cert");
        return -1;
    }
    if (o->n_tls_names && o->tls_cert) {
        snprintf(err, errlen, "--tls-name: names a minted certificate; with --tls-cert the "
                              "certificate file says which names it has");
        return -1;
    }
    if (!o->has_tls_listen && (o->tls_cert || o->n_tls_names)) {
        snprintf(err, errlen, "%s: needs --tls-listen ADDR:PORT",
                 o->tls_cert ? "--tls-cert" : "--tls-name");
        return -1;
    }
    return 0;
}

/* Set flag NAME to V. */
static int apply(struct run_options *o, const char *name, const char *v, char *err, size_t errlen)
{
    if (strcmp(name, "--max-request-body") == 0)
        return apply_max_request_body(o, name, v, err, errlen);
    if (strcmp(name, "--deny-dest") == 0)
        return apply_deny_dest(o, name, v, err, errlen);
    if (strcmp(name, "--max-active-faults") == 0)
        return positive_flag(name, v, &o->max_active_faults, err, errlen);
    if (strcmp(name, "--route") == 0 || strcmp(name, "--max-routes") == 0)
        return route_flag(o, name, v, err, errlen);
    if (strcmp(name, "--intercept-hosts") == 0)
        return apply_intercept_hosts(o, name, v, err, errlen);
    if (strcmp(name, "--ca-dir") == 0) {
        if (!*v)
            return bad_empty(name, err, errlen);
        o->ca_dir = v;
        return 0;
    }
    if (strncmp(name, "--tls-", 6) == 0)
        return apply_tls_listen(o, name, v, err, errlen);
    return apply_core(o, name, v, err, errlen);
}

int options_parse(struct run_options *o, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (strncmp(arg, "--", 2) != 0 || nlen >= sizeof name) {
            snprintf(err, errlen, "%s: unexpected argument (options start with --)", arg);
            return -1;
        }
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        int *flag = bool_flag(o, name);
        if (flag) {
            if (eq) {
                snprintf(err, errlen, "%s: takes no value", name);
                return -1;
            }
            *flag = 1;
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < ARRAY_LEN(value_flags); k++)
            known |= strcmp(name, value_flags[k]) == 0;
        if (!known) {
            snprintf(err, errlen, "%s: unknown option (see statusproxy run --help)", name);
            return -1;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, errlen, "%s: missing value", name);
            return -1;
        }
        if (apply(o, name, value, err, errlen) != 0)
            return -1;
    }
    if (check_tls_listen(o, err, errlen) != 0)
        return -1;
    if (o->n_allow == 0) {
        o->allow = xmalloc(2 * sizeof *o->allow);
        o->allow[0] = xstrdup("127.0.0.0/8");
        o->allow[1] = xstrdup("::1/128");
        o->n_allow = 2;
    }
    if (o->n_connect_ports == 0) {
        o->connect_ports = xmalloc(sizeof *o->connect_ports);
        o->connect_ports[0] = 443;
        o->n_connect_ports = 1;
    }
    return 0;
}
