/*
 * policy — the pure decisions about one request head, kept out of the
 * socket code so that each branch has a table-driven unit test: where the
 * request goes (routing: target form, gateway vs forward, Host) and whether
 * the proxy forwards it or answers itself (access: --allow, loops,
 * --proxy-auth, CONNECT ports, Max-Forwards on OPTIONS/TRACE). No libuv, no
 * connection: inputs are plain values, outputs a decision the caller acts on.
 */
#ifndef STATUSPROXY_POLICY_H
#define STATUSPROXY_POLICY_H

#include <stddef.h>

#include "http.h"
#include "options.h"
#include "target.h"

/* The help text a gateway-less proxy answers origin-form requests with (the
 * whole 400 body after its status line, not an X-Statusproxy-Error). */
extern const char policy_no_upstream_help[];

/* Where a request goes. The caller points TARGET, UP_HOST and REC_HOST at
 * its own storage (the exchange's), so that nothing is copied twice on the
 * request path; policy_route fills them and the rest. */
#define POLICY_HOST_SIZE 256
struct policy_route {
    struct target *target;  /* in: where the parsed request-target goes */
    char *up_host;          /* in: POLICY_HOST_SIZE bytes; the host to connect to */
    char *rec_host;         /* in: POLICY_HOST_SIZE bytes; as recorded and matched: no port */
    int forward_mode;       /* absolute-form or CONNECT: the target names the host */
    int up_port;
    const char *path;       /* without the query; into the target or a literal */
    size_t path_len;
};

/* Route the request-target TGT[0..tlen) (CONNECT: IS_CONNECT) with Host
 * value HOST[0..hlen) (NULL: none) under O's --upstream. Returns 0, or 400
 * with *why a short reason (or policy_no_upstream_help). */
int policy_route(const char *tgt, size_t tlen, int is_connect, const char *host, size_t hlen,
                 const struct run_options *o, struct policy_route *r, const char **why);

/* Route a request inside an intercepted CONNECT to HOST:PORT (the CONNECT
 * authority; DESIGN §9): it goes there whatever its target or Host says,
 * and is recorded under its Host (else HOST). An authority-form target
 * (CONNECT inside the tunnel) is refused. Returns 0, or 400 with *why. */
int policy_route_intercepted(const char *tgt, size_t tlen, const char *host_hdr, size_t hlen,
                             const char *host, int port, struct policy_route *r,
                             const char **why);

/* Is HOST:PORT one of LISTEN's or ADMIN's (NULL: none) own addresses,
 * counting localhost, 127/8, ::1 and wildcard binds? */
int policy_targets_self(const char *host, int port, const struct listen_addr *listen,
                        const struct listen_addr *admin);

/* Does the Proxy-Authorization value V[0..len) (NULL: absent) carry Basic
 * credentials equal to CRED ("user:pass")? */
int policy_proxy_auth_ok(const char *cred, const char *v, size_t len);

/* A Max-Forwards value: its number (at most 9 digits), or -1 when it is
 * not one (then it is forwarded as it is). */
int policy_max_forwards(const char *v, size_t len);

enum policy_verdict {
    POLICY_GO,          /* forward it */
    POLICY_ANSWER,      /* answer d.code with d.extra_headers ourselves */
    POLICY_TRACE,       /* echo the request as message/http (200) */
};

/* What access says about one request. */
struct policy_decision {
    enum policy_verdict verdict;
    int code;                   /* POLICY_ANSWER: status */
    const char *error;          /* error to record, or NULL */
    const char *extra_headers;  /* "Name: value\r\n" lines for the answer, or NULL */
    int close;                  /* close the connection after the answer */
    int strip_proxy_auth;       /* GO: drop Proxy-Authorization before forwarding */
    int strip_max_forwards;     /* drop Max-Forwards (it is re-written decremented) */
    int max_forwards;           /* -1: absent or not applicable */
};

/* The request facts access looks at. */
struct policy_request {
    int client_allowed;         /* --allow admits the client's address */
    const struct http_head *req;
    const char *via_token;      /* this proxy's Via received-by */
    int forward_mode, is_connect, is_options, is_trace;
    const char *up_host;
    int up_port;
};

/* Decide access for Q under O into D (every field set). */
void policy_access(const struct policy_request *q, const struct run_options *o,
                   struct policy_decision *d);

#endif
