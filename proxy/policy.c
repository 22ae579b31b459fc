/*
 * policy — routing and access decisions over plain values (see policy.h).
 */
#include "policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "util.h"

const char policy_no_upstream_help[] =
    "This proxy has no --upstream, so it cannot take origin-form requests (GET /path).\n"
    "Use it as a forward proxy (absolute-form: GET http://host/path), e.g. with\n"
    "  curl -x http://PROXY_ADDR http://host/path   or   HTTP_PROXY=http://PROXY_ADDR,\n"
    "or start it with --upstream http://HOST:PORT to put it in front of one backend.\n";

int policy_route(const char *tgt, size_t tlen, int is_connect, const char *host, size_t hlen,
                 const struct run_options *o, struct policy_route *r, const char **why)
{
    if (target_parse(tgt, tlen, is_connect, r->target, why) != 0)
        return 400;
    /* The Host header is parsed straight into rec_host (it is what a
     * gateway records); forward mode overwrites it below. */
    int host_port = 80;
    r->rec_host[0] = '\0';
    if (host && hlen &&
        target_parse_authority(host, hlen, r->rec_host, POLICY_HOST_SIZE, &host_port, 80) != 0) {
        r->rec_host[0] = '\0';
        *why = "malformed Host header";
        return 400;
    }
    const struct target *t = r->target;
    if (t->form == TARGET_AUTHORITY || t->form == TARGET_ABSOLUTE) {
        /* Forward mode: the target names the host; Host is rewritten from it. */
        r->forward_mode = 1;
        str_copy(r->up_host, POLICY_HOST_SIZE, t->host);
        r->up_port = t->port;
        str_copy(r->rec_host, POLICY_HOST_SIZE, t->host);
        r->path = t->path ? t->path : "";
        r->path_len = t->path_only_len;
        if (t->form == TARGET_ABSOLUTE && r->path_len == 0) {
            r->path = "/";
            r->path_len = 1;
        }
        return 0;
    }
    /* Origin or asterisk form: only a gateway knows where it goes. */
    if (!o->has_upstream) {
        *why = policy_no_upstream_help;
        return 400;
    }
    r->forward_mode = 0;
    str_copy(r->up_host, POLICY_HOST_SIZE, o->upstream_host);
    r->up_port = o->upstream_port;
    if (!r->rec_host[0])
        str_copy(r->rec_host, POLICY_HOST_SIZE, o->upstream_host);
    r->path = t->path;
    r->path_len = t->path_only_len;
    return 0;
}

static int self_v4(const struct listen_addr *a, const unsigned char *ip)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
    return sin->sin_addr.s_addr == htonl(INADDR_ANY) || memcmp(ip, &sin->sin_addr, 4) == 0 ||
           ip[0] == 127;
}

static int self_v6(const struct listen_addr *a, const unsigned char *ip)
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
    return memcmp(ip, &s6->sin6_addr, 16) == 0 || memcmp(ip, &in6addr_loopback, 16) == 0 ||
           memcmp(&s6->sin6_addr, &in6addr_any, 16) == 0;
}

int policy_route_intercepted(const char *tgt, size_t tlen, const char *host_hdr, size_t hlen,
                             const char *host, int port, struct policy_route *r,
                             const char **why)
{
    if (target_parse(tgt, tlen, 0, r->target, why) != 0)
        return 400;
    const struct target *t = r->target;
    if (t->form == TARGET_AUTHORITY) {
        *why = "CONNECT inside an intercepted tunnel";
        return 400;
    }
    char hh[POLICY_HOST_SIZE];
    hh[0] = '\0';
    int hport = port;
    if (host_hdr && hlen &&
        target_parse_authority(host_hdr, hlen, hh, sizeof hh, &hport, port) != 0) {
        *why = "malformed Host header";
        return 400;
    }
    /* Gateway-like: the head is forwarded in origin form with its Host. */
    r->forward_mode = 0;
    str_copy(r->up_host, POLICY_HOST_SIZE, host);
    r->up_port = port;
    str_copy(r->rec_host, POLICY_HOST_SIZE, t->form == TARGET_ABSOLUTE ? t->host : hh[0] ? hh : host);
    r->path = t->path ? t->path : "";
    r->path_len = t->path_only_len;
    if (r->path_len == 0) {
        r->path = "/";
        r->path_len = 1;
    }
    return 0;
}

int policy_targets_self(const char *host, int port, const struct listen_addr *listen,
                        const struct listen_addr *admin)
{
    const struct listen_addr *addrs[2] = {listen, admin};
    for (int i = 0; i < 2; i++) {
        const struct listen_addr *a = addrs[i];
        if (!a || a->port != port)
            continue;
        unsigned char buf[16];
        if (strcmp(host, "localhost") == 0)
            return 1;
        if (a->sa.ss_family == AF_INET && inet_pton(AF_INET, host, buf) == 1 && self_v4(a, buf))
            return 1;
        if (a->sa.ss_family == AF_INET6 && inet_pton(AF_INET6, host, buf) == 1 && self_v6(a, buf))
            return 1;
    }
    return 0;
}

int policy_proxy_auth_ok(const char *cred, const char *v, size_t len)
{
    char want[512];
    if (str_base64(cred, strlen(cred), want, sizeof want) != 0)
        return 0;
    if (!v || len < 6 || strncasecmp(v, "Basic ", 6) != 0)
        return 0;
    v += 6;
    len -= 6;
    while (len && *v == ' ')
        v++, len--;
    return len == strlen(want) && memcmp(v, want, len) == 0;
}

int policy_max_forwards(const char *v, size_t len)
{
    long n = 0;
    size_t i = 0;
    for (; i < len && i < 9 && v[i] >= '0' && v[i] <= '9'; i++)
        n = n * 10 + (v[i] - '0');
    return i == len && len > 0 ? (int)n : -1;
}

static const char allow_methods[] =
    "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT\r\n";
static const char allow_with_trace[] =
    "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE\r\n";

static void answer(struct policy_decision *d, int code, const char *error, const char *extra,
                   int close)
{
    d->verdict = POLICY_ANSWER;
    d->code = code;
    d->error = error;
    d->extra_headers = extra;
    d->close = close;
}

static int connect_port_allowed(const struct run_options *o, int port)
{
    for (size_t i = 0; i < o->n_connect_ports; i++)
        if (o->connect_ports[i] == port)
            return 1;
    return 0;
}

/* RFC 9110 §7.6.2: OPTIONS/TRACE with Max-Forwards 0 stop here. */
static void last_hop(const struct policy_request *q, const struct run_options *o,
                     struct policy_decision *d)
{
    size_t len;
    const char *mf = http_head_get(q->req, "Max-Forwards", &len);
    if (mf && (d->max_forwards = policy_max_forwards(mf, len)) >= 0)
        d->strip_max_forwards = 1;
    if (d->max_forwards != 0)
        return;
    if (q->is_options)
        answer(d, 200, NULL, o->allow_trace ? allow_with_trace : allow_methods, 0);
    else if (o->allow_trace)
        d->verdict = POLICY_TRACE;
    else
        answer(d, 405, NULL, allow_methods, 0);
}

void policy_access(const struct policy_request *q, const struct run_options *o,
                   struct policy_decision *d)
{
    memset(d, 0, sizeof *d);
    d->verdict = POLICY_GO;
    d->max_forwards = -1;
    if (!q->client_allowed) {
        answer(d, 403, NULL, NULL, 1);
        return;
    }
    if (http_head_has_via(q->req, q->via_token) ||
        (q->forward_mode && policy_targets_self(q->up_host, q->up_port, &o->listen,
                                                o->admin_enabled ? &o->admin : NULL))) {
        answer(d, 508, "loop", NULL, 0);
        return;
    }
    if (o->proxy_auth && q->forward_mode) {
        size_t len = 0;
        const char *v = http_head_get(q->req, "Proxy-Authorization", &len);
        if (!policy_proxy_auth_ok(o->proxy_auth, v, len)) {
            answer(d, 407, NULL, "Proxy-Authenticate: Basic realm=\"statusproxy\"\r\n", 0);
            return;
        }
        d->strip_proxy_auth = 1;
    }
    if (q->is_connect && !connect_port_allowed(o, q->up_port)) {
        answer(d, 403, NULL, NULL, 1);
        return;
    }
    if (q->is_options || q->is_trace)
        last_hop(q, o, d);
}
