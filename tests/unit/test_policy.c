/* Unit tests for policy: routing and access decisions, one table per
 * decision, each row an input and the decision expected. */
#include "policy.h"
#include "unit.h"

/* ---- routing ---- */

struct route_row {
    const char *target;
    int is_connect;
    const char *host;       /* Host value, NULL: none */
    const char *upstream;   /* --upstream host (port 9000), NULL: none */
    int status;             /* 0 or 400 */
    const char *why;        /* for 400: the reason; "HELP": the no-upstream help */
    int forward_mode;
    const char *up_host;
    int up_port;
    const char *rec_host;
    const char *path;
};

static const struct route_row route_rows[] = {
    /* origin-form: gateway only; rec_host from Host (no port), else the upstream */
    {"/a/b?q=1", 0, "example.com:8080", "backend", 0, NULL, 0, "backend", 9000, "example.com", "/a/b"},
    {"/a", 0, NULL, "backend", 0, NULL, 0, "backend", 9000, "backend", "/a"},
    {"/a", 0, "", "backend", 0, NULL, 0, "backend", 9000, "backend", "/a"},
    {"/a", 0, "[::1]:81", "backend", 0, NULL, 0, "backend", 9000, "::1", "/a"},
    {"/a", 0, "h.example", NULL, 400, "HELP", 0, NULL, 0, NULL, NULL},
    /* asterisk-form (OPTIONS *) */
    {"*", 0, "h", "backend", 0, NULL, 0, "backend", 9000, "h", "*"},
    {"*", 0, "h", NULL, 400, "HELP", 0, NULL, 0, NULL, NULL},
    /* absolute-form: forward mode whatever --upstream says; empty path is "/" */
    {"http://Origin.example:8081/x/y?z", 0, "other", NULL, 0, NULL, 1, "origin.example", 8081, "origin.example", "/x/y"},
    {"http://origin.example", 0, NULL, "backend", 0, NULL, 1, "origin.example", 80, "origin.example", "/"},
    {"http://origin.example?q", 0, NULL, NULL, 0, NULL, 1, "origin.example", 80, "origin.example", "/"},
    {"http://[2001:db8::1]:8/p", 0, NULL, NULL, 0, NULL, 1, "2001:db8::1", 8, "2001:db8::1", "/p"},
    /* authority-form (CONNECT) */
    {"secure.example:443", 1, NULL, NULL, 0, NULL, 1, "secure.example", 443, "secure.example", ""},
    {"secure.example:443", 1, "secure.example:443", "backend", 0, NULL, 1, "secure.example", 443, "secure.example", ""},
    /* refusals */
    {"/a", 0, "bad host name", "backend", 400, "malformed Host header", 0, NULL, 0, NULL, NULL},
    {"/a", 0, "h:99999", "backend", 400, "malformed Host header", 0, NULL, 0, NULL, NULL},
    {"http://h/", 0, "[::1", NULL, 400, "malformed Host header", 0, NULL, 0, NULL, NULL},
    {"/x", 1, NULL, "backend", 400, "", 0, NULL, 0, NULL, NULL},
    {"https://h/", 0, NULL, NULL, 400, "", 0, NULL, 0, NULL, NULL},
};

static void test_route_table(void)
{
    for (size_t i = 0; i < sizeof route_rows / sizeof route_rows[0]; i++) {
        const struct route_row *w = &route_rows[i];
        struct run_options o;
        memset(&o, 0, sizeof o);
        if (w->upstream) {
            o.has_upstream = 1;
            snprintf(o.upstream_host, sizeof o.upstream_host, "%s", w->upstream);
            o.upstream_port = 9000;
        }
        struct target t;
        char up_host[POLICY_HOST_SIZE] = "?", rec_host[POLICY_HOST_SIZE] = "?";
        struct policy_route r = {.target = &t, .up_host = up_host, .rec_host = rec_host};
        const char *why = NULL;
        int st = policy_route(w->target, strlen(w->target), w->is_connect, w->host,
                              w->host ? strlen(w->host) : 0, &o, &r, &why);
        unit_current = w->target;
        CHECK_INT(st, w->status);
        if (st) {
            if (strcmp(w->why, "HELP") == 0)
                CHECK(why == policy_no_upstream_help);
            else if (w->why[0])
                CHECK_STR(why, w->why);
            else
                CHECK(why != NULL && why != policy_no_upstream_help);
            continue;
        }
        CHECK_INT(r.forward_mode, w->forward_mode);
        CHECK_STR(r.up_host, w->up_host);
        CHECK_INT(r.up_port, w->up_port);
        CHECK_STR(r.rec_host, w->rec_host);
        CHECK_INT(r.path_len, strlen(w->path));
        CHECK(r.path_len == 0 || memcmp(r.path, w->path, r.path_len) == 0);
    }
}

/* ---- inside an intercepted CONNECT to api.example:8443 ---- */

struct icpt_row {
    const char *target;
    const char *host;       /* Host value, NULL: none */
    int status;
    const char *rec_host;
    const char *path;
};

static const struct icpt_row icpt_rows[] = {
    /* always to the CONNECT authority, in gateway style (Host kept) */
    {"/v1/x?q", "api.example:8443", 0, "api.example", "/v1/x"},
    {"/v1/x", "Other.example", 0, "other.example", "/v1/x"},
    {"/v1/x", NULL, 0, "api.example", "/v1/x"},
    {"*", "api.example", 0, "api.example", "*"},
    /* absolute-form: recorded under its host, still sent to the authority */
    {"http://elsewhere.example/p", NULL, 0, "elsewhere.example", "/p"},
    {"http://elsewhere.example", NULL, 0, "elsewhere.example", "/"},
    {"https://elsewhere.example/p", NULL, 400, NULL, NULL}, /* target_parse: http only */
    /* refusals */
    {"api.example:443", NULL, 400, NULL, NULL},
    {"/a", "bad host", 400, NULL, NULL},
};

static void test_route_intercepted_table(void)
{
    for (size_t i = 0; i < sizeof icpt_rows / sizeof icpt_rows[0]; i++) {
        const struct icpt_row *w = &icpt_rows[i];
        struct target t;
        char up_host[POLICY_HOST_SIZE] = "?", rec_host[POLICY_HOST_SIZE] = "?";
        struct policy_route r = {.target = &t, .up_host = up_host, .rec_host = rec_host};
        const char *why = NULL;
        int st = policy_route_intercepted(w->target, strlen(w->target), w->host,
                                          w->host ? strlen(w->host) : 0, "api.example", 8443,
                                          &r, &why);
        unit_current = w->target;
        CHECK_INT(st, w->status);
        if (st) {
            CHECK(why != NULL);
            continue;
        }
        CHECK_INT(r.forward_mode, 0);
        CHECK_STR(r.up_host, "api.example");
        CHECK_INT(r.up_port, 8443);
        CHECK_STR(r.rec_host, w->rec_host);
        CHECK_INT(r.path_len, strlen(w->path));
        CHECK(memcmp(r.path, w->path, r.path_len) == 0);
    }
}

/* ---- self-targets ---- */

struct self_row {
    const char *listen, *admin;   /* admin NULL: disabled */
    const char *host;
    int port, want;
};

static const struct self_row self_rows[] = {
    {"127.0.0.1:8080", NULL, "127.0.0.1", 8080, 1},
    {"127.0.0.1:8080", NULL, "127.0.0.2", 8080, 1},        /* all of 127/8 */
    {"127.0.0.1:8080", NULL, "localhost", 8080, 1},
    {"127.0.0.1:8080", NULL, "127.0.0.1", 8081, 0},        /* other port */
    {"127.0.0.1:8080", NULL, "10.0.0.1", 8080, 0},
    {"127.0.0.1:8080", NULL, "example.com", 8080, 0},
    {"10.1.2.3:8080", NULL, "10.1.2.3", 8080, 1},          /* the bound address */
    {"0.0.0.0:8080", NULL, "192.0.2.7", 8080, 1},          /* wildcard bind */
    {"127.0.0.1:8080", NULL, "::1", 8080, 0},              /* v6 text, v4 bind */
    {"[::1]:8080", NULL, "::1", 8080, 1},
    {"[::1]:8080", NULL, "localhost", 8080, 1},
    {"[2001:db8::5]:8080", NULL, "::1", 8080, 1},          /* v6 loopback */
    {"[2001:db8::5]:8080", NULL, "2001:db8::5", 8080, 1},
    {"[2001:db8::5]:8080", NULL, "2001:db8::6", 8080, 0},
    {"[::]:8080", NULL, "2001:db8::6", 8080, 1},           /* v6 wildcard */
    {"[::1]:8080", NULL, "127.0.0.1", 8080, 0},            /* v4 text, v6 bind */
    {"127.0.0.1:8080", "127.0.0.1:9090", "127.0.0.1", 9090, 1}, /* admin address */
    {"127.0.0.1:8080", "127.0.0.1:9090", "10.0.0.1", 9090, 0},
    {"127.0.0.1:8080", NULL, "127.0.0.1", 9090, 0},
};

static void test_targets_self_table(void)
{
    for (size_t i = 0; i < sizeof self_rows / sizeof self_rows[0]; i++) {
        const struct self_row *w = &self_rows[i];
        struct listen_addr l, a;
        CHECK_INT(options_parse_listen(w->listen, &l), 0);
        if (w->admin)
            CHECK_INT(options_parse_listen(w->admin, &a), 0);
        unit_current = w->host;
        CHECK_INT(policy_targets_self(w->host, w->port, &l, w->admin ? &a : NULL), w->want);
    }
}

/* ---- Proxy-Authorization and Max-Forwards ---- */

static void test_proxy_auth_table(void)
{
    /* "user:pass" is dXNlcjpwYXNz */
    static const struct { const char *v; int want; } rows[] = {
        {"Basic dXNlcjpwYXNz", 1},
        {"basic dXNlcjpwYXNz", 1},        /* scheme is case-insensitive */
        {"Basic    dXNlcjpwYXNz", 1},     /* extra spaces before the token */
        {"Basic dXNlcjpwYXNz ", 0},       /* trailing space */
        {"Basic dXNlcjpwYXN6", 0},        /* wrong credentials */
        {"Basic ", 0},
        {"Basic", 0},
        {"Bearer dXNlcjpwYXNz", 0},
        {"dXNlcjpwYXNz", 0},
        {NULL, 0},                        /* absent */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unit_current = rows[i].v ? rows[i].v : "(absent)";
        CHECK_INT(policy_proxy_auth_ok("user:pass", rows[i].v, rows[i].v ? strlen(rows[i].v) : 0),
                  rows[i].want);
    }
}

static void test_max_forwards_table(void)
{
    static const struct { const char *v; int want; } rows[] = {
        {"0", 0}, {"1", 1}, {"10", 10}, {"007", 7}, {"999999999", 999999999},
        {"1000000000", -1}, /* ten digits: not taken */
        {"", -1}, {"-1", -1}, {"1x", -1}, {" 1", -1}, {"abc", -1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unit_current = rows[i].v;
        CHECK_INT(policy_max_forwards(rows[i].v, strlen(rows[i].v)), rows[i].want);
    }
}

/* ---- access ---- */

enum { M_GET, M_CONNECT, M_OPTIONS, M_TRACE };

struct access_row {
    const char *name;
    int allowed;            /* --allow admits the client */
    int method;
    int forward_mode;
    const char *up_host;
    int up_port;
    const char *via;        /* Via value, or NULL */
    const char *pauth;      /* Proxy-Authorization value, or NULL */
    const char *max_fwd;    /* Max-Forwards value, or NULL */
    int proxy_auth;         /* --proxy-auth user:pass */
    int allow_trace;
    /* expected */
    enum policy_verdict verdict;
    int code;
    const char *error;
    const char *extra;      /* prefix of the extra headers, or NULL */
    int close, strip_auth, strip_mf, max_forwards;
};

#define ALLOW7 "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT\r\n"
#define ALLOW8 "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE\r\n"
#define CHALLENGE "Proxy-Authenticate: Basic realm=\"statusproxy\"\r\n"
#define GOOD "Basic dXNlcjpwYXNz"

static const struct access_row access_rows[] = {
    {"plain gateway GET", 1, M_GET, 0, "backend", 9000, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"plain forward GET", 1, M_GET, 1, "origin", 80, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"client not allowed", 0, M_GET, 1, "origin", 80, NULL, NULL, NULL, 0, 0, POLICY_ANSWER, 403, NULL, NULL, 1, 0, 0, -1},
    {"not allowed beats loop", 0, M_GET, 1, "127.0.0.1", 8080, "1.1 me:8080", NULL, NULL, 0, 0, POLICY_ANSWER, 403, NULL, NULL, 1, 0, 0, -1},
    {"loop: own Via token", 1, M_GET, 0, "backend", 9000, "1.1 a, 1.1 me:8080 (statusproxy)", NULL, NULL, 0, 0, POLICY_ANSWER, 508, "loop", NULL, 0, 0, 0, -1},
    {"other Via passes", 1, M_GET, 0, "backend", 9000, "1.1 me:80800", NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"loop: forward to self", 1, M_GET, 1, "127.0.0.1", 8080, NULL, NULL, NULL, 0, 0, POLICY_ANSWER, 508, "loop", NULL, 0, 0, 0, -1},
    {"loop: forward to admin", 1, M_GET, 1, "localhost", 9090, NULL, NULL, NULL, 0, 0, POLICY_ANSWER, 508, "loop", NULL, 0, 0, 0, -1},
    {"gateway to own port is no loop", 1, M_GET, 0, "127.0.0.1", 8080, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"loop: CONNECT to self", 1, M_CONNECT, 1, "127.0.0.1", 8080, NULL, NULL, NULL, 0, 0, POLICY_ANSWER, 508, "loop", NULL, 0, 0, 0, -1},
    {"auth: missing", 1, M_GET, 1, "origin", 80, NULL, NULL, NULL, 1, 0, POLICY_ANSWER, 407, NULL, CHALLENGE, 0, 0, 0, -1},
    {"auth: wrong", 1, M_GET, 1, "origin", 80, NULL, "Basic d3Jvbmc6cGFzcw==", NULL, 1, 0, POLICY_ANSWER, 407, NULL, CHALLENGE, 0, 0, 0, -1},
    {"auth: good, stripped", 1, M_GET, 1, "origin", 80, NULL, GOOD, NULL, 1, 0, POLICY_GO, 0, NULL, NULL, 0, 1, 0, -1},
    {"auth: gateway does not ask", 1, M_GET, 0, "backend", 9000, NULL, NULL, NULL, 1, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"auth: not configured, kept", 1, M_GET, 1, "origin", 80, NULL, GOOD, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"CONNECT 443", 1, M_CONNECT, 1, "secure", 443, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"CONNECT 8443 listed", 1, M_CONNECT, 1, "secure", 8443, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"CONNECT 22 refused", 1, M_CONNECT, 1, "secure", 22, NULL, NULL, NULL, 0, 0, POLICY_ANSWER, 403, NULL, NULL, 1, 0, 0, -1},
    {"CONNECT auth before port", 1, M_CONNECT, 1, "secure", 22, NULL, NULL, NULL, 1, 0, POLICY_ANSWER, 407, NULL, CHALLENGE, 0, 0, 0, -1},
    {"CONNECT authed, bad port", 1, M_CONNECT, 1, "secure", 22, NULL, GOOD, NULL, 1, 0, POLICY_ANSWER, 403, NULL, NULL, 1, 1, 0, -1},
    {"OPTIONS no Max-Forwards", 1, M_OPTIONS, 0, "backend", 9000, NULL, NULL, NULL, 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"OPTIONS Max-Forwards 3", 1, M_OPTIONS, 0, "backend", 9000, NULL, NULL, "3", 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 1, 3},
    {"OPTIONS Max-Forwards 0", 1, M_OPTIONS, 0, "backend", 9000, NULL, NULL, "0", 0, 0, POLICY_ANSWER, 200, NULL, ALLOW7, 0, 0, 1, 0},
    {"OPTIONS Max-Forwards 0 trace", 1, M_OPTIONS, 1, "origin", 80, NULL, NULL, "0", 0, 1, POLICY_ANSWER, 200, NULL, ALLOW8, 0, 0, 1, 0},
    {"OPTIONS bad Max-Forwards kept", 1, M_OPTIONS, 0, "backend", 9000, NULL, NULL, "x", 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
    {"TRACE Max-Forwards 0 refused", 1, M_TRACE, 0, "backend", 9000, NULL, NULL, "0", 0, 0, POLICY_ANSWER, 405, NULL, ALLOW7, 0, 0, 1, 0},
    {"TRACE Max-Forwards 0 echoed", 1, M_TRACE, 0, "backend", 9000, NULL, NULL, "0", 0, 1, POLICY_TRACE, 0, NULL, NULL, 0, 0, 1, 0},
    {"TRACE Max-Forwards 2", 1, M_TRACE, 0, "backend", 9000, NULL, NULL, "2", 0, 1, POLICY_GO, 0, NULL, NULL, 0, 0, 1, 2},
    {"TRACE authed, last hop", 1, M_TRACE, 1, "origin", 80, NULL, GOOD, "0", 1, 1, POLICY_TRACE, 0, NULL, NULL, 0, 1, 1, 0},
    {"GET Max-Forwards ignored", 1, M_GET, 0, "backend", 9000, NULL, NULL, "0", 0, 0, POLICY_GO, 0, NULL, NULL, 0, 0, 0, -1},
};

static void check_access(const struct access_row *w)
{
    static int ports[] = {443, 8443};
    struct run_options o;
    memset(&o, 0, sizeof o);
    CHECK_INT(options_parse_listen("127.0.0.1:8080", &o.listen), 0);
    o.admin_enabled = 1;
    CHECK_INT(options_parse_listen("127.0.0.1:9090", &o.admin), 0);
    o.connect_ports = ports;
    o.n_connect_ports = 2;
    o.proxy_auth = w->proxy_auth ? "user:pass" : NULL;
    o.allow_trace = w->allow_trace;
    struct http_head h;
    http_head_init(&h, 4096);
    if (w->via)
        http_head_add_field(&h, "Via", 3, w->via, strlen(w->via));
    if (w->pauth)
        http_head_add_field(&h, "Proxy-Authorization", 19, w->pauth, strlen(w->pauth));
    if (w->max_fwd)
        http_head_add_field(&h, "Max-Forwards", 12, w->max_fwd, strlen(w->max_fwd));
    struct policy_request q = {
        .client_allowed = w->allowed,
        .req = &h,
        .via_token = "me:8080",
        .forward_mode = w->forward_mode,
        .is_connect = w->method == M_CONNECT,
        .is_options = w->method == M_OPTIONS,
        .is_trace = w->method == M_TRACE,
        .up_host = w->up_host,
        .up_port = w->up_port,
    };
    struct policy_decision d;
    policy_access(&q, &o, &d);
    http_head_free(&h);
    CHECK_INT(d.verdict, w->verdict);
    if (w->verdict == POLICY_ANSWER)
        CHECK_INT(d.code, w->code);
    if (w->error)
        CHECK_STR(d.error, w->error);
    else
        CHECK(d.error == NULL);
    if (w->extra)
        CHECK_STR(d.extra_headers, w->extra);
    else
        CHECK(d.extra_headers == NULL);
    CHECK_INT(d.close, w->close);
    CHECK_INT(d.strip_proxy_auth, w->strip_auth);
    CHECK_INT(d.strip_max_forwards, w->strip_mf);
    CHECK_INT(d.max_forwards, w->max_forwards);
}

static void test_access_table(void)
{
    for (size_t i = 0; i < sizeof access_rows / sizeof access_rows[0]; i++) {
        unit_current = access_rows[i].name;
        check_access(&access_rows[i]);
    }
}

int main(void)
{
    RUN(test_route_table);
    RUN(test_route_intercepted_table);
    RUN(test_targets_self_table);
    RUN(test_proxy_auth_table);
    RUN(test_max_forwards_table);
    RUN(test_access_table);
    return unit_summary("policy");
}
