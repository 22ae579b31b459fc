/*
 * options — the flags of `statusproxy run` (DESIGN §1): defaults, parsing
 * and validation. Pure: no sockets are opened here. A bad flag or value
 * yields one message naming the flag; main prints it and exits 2.
 */
#ifndef STATUSPROXY_OPTIONS_H
#define STATUSPROXY_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "audit.h"
#include "cidr.h"
#include "route.h"

/* An address to listen on, as given and as parsed. */
struct tls_engine_config;
struct tls_ca;
struct glob;

struct listen_addr {
    struct sockaddr_storage sa;
    char text[80];      /* "127.0.0.1:8080", "[::1]:8080" */
    int port;
};

struct run_options {
    struct listen_addr listen;
    int admin_enabled;
    struct listen_addr admin;
    int has_upstream;
    char upstream_host[256];  /* lowercase, brackets stripped for IPv6 */
    int upstream_port;
    char upstream_authority[300]; /* host:port as given, for messages */
    int upstream_https;       /* --upstream https://: TLS to the upstream */
    const char *upstream_ca;  /* --upstream-ca FILE, or NULL: the system store */
    int upstream_insecure;    /* --upstream-insecure: no certificate verification */
    /* The TLS client config for an https upstream, built by main from the
     * three fields above (options itself opens no files); NULL otherwise. */
    struct tls_engine_config *upstream_tls;
    const char *ca_dir;       /* --ca-dir DIR, or NULL: $HOME/.statusproxy */
    int intercept_all;        /* --intercept: every CONNECT target is intercepted */
    struct glob **intercept_hosts; /* --intercept-hosts GLOB,...: only these; owned */
    size_t n_intercept_hosts;
    /* Built by main (intercept_setup) when intercepting, NULL otherwise:
     * the CA, the server config that mints from it, and the client config
     * origins are verified with (same rules as --upstream https). */
    struct tls_ca *intercept_ca;
    struct tls_engine_config *intercept_server;
    struct tls_engine_config *intercept_client;
    /* --tls-listen (DESIGN §9): a second listener whose clients speak TLS. */
    int has_tls_listen;
    struct listen_addr tls_listen;
    const char *tls_cert;     /* --tls-cert FILE, or NULL: a certificate minted from the CA */
    const char *tls_key;      /* --tls-key FILE (with --tls-cert) */
    char **tls_names;         /* --tls-name NAME (repeatable): extra names of a minted one */
    size_t n_tls_names;
    /* The TLS server config of the listener, built by main; NULL without it. */
    struct tls_engine_config *listen_tls;
    struct tls_ca *listen_ca;   /* the CA it was minted from, when --intercept did not load one */
    const char *rules_path;   /* NULL: no rules */
    const char *db_path;
    int has_seed;
    uint64_t seed;
    int fault_headers;
    int mark_faults;
    int allow_trace;          /* answer TRACE (Max-Forwards: 0) with an echo; else 405 */
    enum audit_mode log_exchanges;
    uint64_t retain_ms;
    int workers;
    char **allow;             /* CIDR texts; default loopback */
    size_t n_allow;
    char *proxy_auth;         /* "user:pass", or NULL */
    char *admin_token;        /* or NULL */
    uint64_t header_timeout_ms, connect_timeout_ms, response_timeout_ms, idle_timeout_ms;
    uint64_t tunnel_idle_timeout_ms; /* CONNECT/101 tunnels without a byte either way */
    int max_connections;
    uint64_t max_active_faults; /* 0: unlimited */
    uint64_t max_request_body; /* bytes; 0: unlimited */
    struct cidr *deny_dest;   /* --deny-dest blocks (forward mode, after DNS) */
    size_t n_deny_dest;
    int *connect_ports;       /* ports CONNECT may reach; default 443 */
    size_t n_connect_ports;
    int log_level;            /* enum log_level */
    struct route_patterns *routes; /* --route, or NULL; owned */
    int max_routes;           /* --max-routes */
};

/* Fill O with the defaults of DESIGN §1. */
void options_defaults(struct run_options *o);

/* Parse ARGV[0..argc) (the words after `run`) into O, which holds defaults.
 * Returns 0; 1 when --help was asked; or -1 with a one-line message naming the
 * flag in ERR. */
int options_parse(struct run_options *o, int argc, char **argv, char *err, size_t errlen);

/* Free what options_parse allocated. */
void options_free(struct run_options *o);

/* Parse "HOST:PORT" (IPv4, [IPv6], or localhost) into A. 0 or -1. */
int options_parse_listen(const char *text, struct listen_addr *a);

/* Parse "http://HOST[:PORT][/]" or "https://HOST[:PORT][/]" into host
 * (lowercase), port (80 or 443 by default) and TLS (1 for https). 0 or -1
 * with a reason in WHY. */
int options_parse_upstream(const char *text, char *host, size_t hostlen, int *port, int *tls,
                           const char **why);

extern const char options_help[];

#endif
