/*
 * admin — a small HTTP/1.1 server for operators and scrapers, on the main
 * thread's loop. Requests are parsed with llhttp into an http_head; bodies
 * (only PUT /rules has one) are collected up to ADMIN_BODY_LIMIT. Every route
 * but /healthz and the live page itself needs the Bearer token when
 * --admin-token is set. Keep-alive is honoured; answers are written whole.
 *
 * Bounds (DESIGN §12), so that no admin client can hold the main loop's
 * memory or sockets: at most ADMIN_MAX_CONNS connections (more get 503 and
 * close); a request's head and body must arrive within --header-timeout
 * (else 408 and close) and an idle keep-alive connection closes after
 * --idle-timeout; heads over ADMIN_HEAD_LIMIT get 431, bodies over
 * ADMIN_BODY_LIMIT 413. A client that pipelines requests without reading
 * the answers is no longer read (its unparsed bytes wait in its read
 * buffer) while more than ADMIN_WRITE_HIGH bytes of answers are unsent.
 */
#include "admin.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "embedded.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "util.h"

#define ADMIN_HEAD_LIMIT (16 * 1024)
#define ADMIN_BODY_LIMIT (1024 * 1024)
#define ADMIN_READ_SIZE (16 * 1024)
#define ADMIN_MAX_CONNS 64
#define ADMIN_WRITE_HIGH (256 * 1024)

struct admin {
    uv_tcp_t listener;
    struct admin_ops ops;
    uv_loop_t *loop;
    struct admin_conn *conns;
    unsigned nconns;
    int stopped;
    int listener_closed;
};

struct admin_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;  /* head/body timeout, then idle timeout */
    int pending_closes;
    struct admin *admin;
    struct admin_conn *next;
    llhttp_t parser;
    struct http_head head;
    struct sbuf body;
    int complete;      /* a request is ready to answer */
    int too_large;
    int closing;
    int keep_alive;
    int reading;
    int in_message;    /* between the first byte of a request and its end */
    size_t unsent;     /* answer bytes queued and not yet written */
    size_t in_pos, in_len; /* unparsed bytes in rbuf, kept while paused */
    char rbuf[ADMIN_READ_SIZE];
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *conn;
    char *data;
    size_t len;
    int close_after;
};

static void conn_close(struct admin_conn *ac);
static void parse_input(struct admin_conn *ac);
static void arm_timer(struct admin_conn *ac, int in_message);

/* ---------- parsing ---------- */

static int on_begin(llhttp_t *p)
{
    arm_timer(p->data, 1);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    return http_head_add_target(&ac->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    return http_head_add_name(&ac->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    return http_head_add_value(&ac->head, at, len) == 0 ? 0 : HPE_USER;
}

static int on_value_done(llhttp_t *p)
{
    struct admin_conn *ac = p->data;
    http_head_end_value(&ac->head);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->body.len + len > ADMIN_BODY_LIMIT) {
        ac->too_large = 1;
        return 0;
    }
    sbuf_append(&ac->body, at, len);
    return 0;
}

static int on_done(llhttp_t *p)
{
    struct admin_conn *ac = p->data;
    ac->complete = 1;
    ac->keep_alive = llhttp_should_keep_alive(p);
    arm_timer(ac, 0);
    return HPE_PAUSED;
}

static const llhttp_settings_t admin_settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_done,
    .on_body = on_body,
    .on_message_complete = on_done,
};

/* ---------- answering ---------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    if (--ac->pending_closes > 0)
        return;
    http_head_free(&ac->head);
    sbuf_free(&ac->body);
    free(ac);
}

static void conn_close(struct admin_conn *ac)
{
    if (ac->closing)
        return;
    ac->closing = 1;
    struct admin *a = ac->admin;
    for (struct admin_conn **pp = &a->conns; *pp; pp = &(*pp)->next) {
        if (*pp == ac) {
            *pp = ac->next;
            a->nconns--;
            break;
        }
    }
    ac->pending_closes = 2;
    uv_close((uv_handle_t *)&ac->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&ac->timer, on_conn_closed);
}

/* The head (and body) of a request must arrive within --header-timeout;
 * between requests the connection may stay idle for --idle-timeout. */
static void on_timeout(uv_timer_t *t)
{
    struct admin_conn *ac = t->data;
    if (ac->in_message && !ac->closing) {
        static const char timeout_answer[] =
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
            "Content-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n";
        uv_buf_t buf = uv_buf_init((char *)timeout_answer, sizeof timeout_answer - 1);
        uv_try_write((uv_stream_t *)&ac->tcp, &buf, 1); /* best effort; we close anyway */
    }
    conn_close(ac);
}

static void arm_timer(struct admin_conn *ac, int in_message)
{
    const struct run_options *o = ac->admin->ops.opts;
    ac->in_message = in_message;
    uv_timer_start(&ac->timer, on_timeout, in_message ? o->header_timeout_ms : o->idle_timeout_ms,
                   0);
}

static void on_written(uv_write_t *req, int status)
{
    struct admin_write *w = CONTAINER_OF(req, struct admin_write, req);
    struct admin_conn *ac = w->conn;
    ac->unsent -= w->len;
    if ((status != 0 || w->close_after) && !ac->closing)
        conn_close(ac);
    free(w->data);
    free(w);
    if (!ac->closing && ac->unsent <= ADMIN_WRITE_HIGH / 2)
        parse_input(ac); /* the client reads again: go on with what it sent */
}

static void respond(struct admin_conn *ac, int code, const char *reason, const char *ctype,
                    const char *extra_headers, const char *body, size_t len)
{
    struct sbuf out = {0};
    int close_after = !ac->keep_alive || ac->admin->stopped;
    sbuf_printf(&out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\n%s%s\r\n",
                code, reason, ctype, len, extra_headers ? extra_headers : "",
                close_after ? "Connection: close\r\n" : "");
    if (llhttp_get_method(&ac->parser) != HTTP_HEAD)
        sbuf_append(&out, body, len);
    struct admin_write *w = xcalloc(1, sizeof *w);
    w->conn = ac;
    w->close_after = close_after;
    w->data = out.data;
    w->len = out.len;
    uv_buf_t buf = uv_buf_init(out.data, (unsigned)out.len);
    if (uv_write(&w->req, (uv_stream_t *)&ac->tcp, &buf, 1, on_written) != 0) {
        free(w->data);
        free(w);
        conn_close(ac);
        return;
    }
    ac->unsent += w->len;
}

static void respond_text(struct admin_conn *ac, int code, const char *reason, const char *text)
{
    respond(ac, code, reason, "text/plain; charset=utf-8", NULL, text, strlen(text));
}


static void respond_with(struct admin_conn *ac, int code, const char *reason,
                         const char *extra_headers, const char *json)
{
    respond(ac, code, reason, "application/json", extra_headers, json, strlen(json));
}

static void respond_error(struct admin_conn *ac, int code, const char *reason, const char *message)
{
    struct sbuf b = {0};
    sbuf_puts(&b, "{\"error\": \"");
    sbuf_json_escape(&b, message, strlen(message));
    sbuf_puts(&b, "\"}\n");
    respond_with(ac, code, reason, NULL, b.data);
    sbuf_free(&b);
}

/* The rule list of DESIGN §7. */
static char *rules_json(struct rules *set)
{
    struct sbuf b = {0};
    sbuf_putc(&b, '[');
    size_t n = set ? rules_count(set) : 0;
    uint64_t now = rules_now_ms();
    for (size_t i = 0; i < n; i++) {
        const struct rule *r = rules_at(set, i);
        const char *name = rule_name(r), *src = rule_source(r);
        sbuf_puts(&b, i ? ",\n " : "\n ");
        sbuf_puts(&b, "{\"name\": \"");
        sbuf_json_escape(&b, name, strlen(name));
        sbuf_printf(&b, "\", \"phase\": \"%s\", \"line\": %d, \"source\": \"",
                    rule_phase(r) == RULES_RESPONSE ? "response" : "request", rule_line(r));
        sbuf_json_escape(&b, src, strlen(src));
        sbuf_printf(&b, "\", \"enabled\": %s, \"hits\": %llu", rule_enabled(r) ? "true" : "false",
                    (unsigned long long)rule_hits(r));
        int active;
        uint64_t next;
        if (rule_time_state(r, now, &active, &next)) {
            /* DESIGN §10 time matchers: do they hold now, and for how long. */
            sbuf_printf(&b, ", \"active\": %s, \"next_change_ms\": ", active ? "true" : "false");
            if (next == UINT64_MAX)
                sbuf_puts(&b, "null");
            else
                sbuf_printf(&b, "%llu", (unsigned long long)next);
        }
        sbuf_putc(&b, '}');
    }
    sbuf_puts(&b, n ? "\n]\n" : "]\n");
    return sbuf_steal(&b);
}

/* Is the request allowed? Constant-time comparison of the Bearer token. */
static int authorized(struct admin_conn *ac)
{
    const char *token = ac->admin->ops.opts->admin_token;
    if (!token)
        return 1;
    size_t len;
    const char *v = http_head_get(&ac->head, "Authorization", &len);
    if (!v || len < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return 0;
    v += 7;
    len -= 7;
    size_t tlen = strlen(token);
    unsigned diff = (unsigned)(len ^ tlen);
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)v[i] ^ (unsigned char)token[i < tlen ? i : 0];
    return diff == 0;
}

#define STATS_TOP_ROUTES 20

/* Records the audit writer lost so far (0 without an audit). */
static uint64_t lost_records(const struct admin_ops *ops)
{
    return ops->audit ? audit_dropped(ops->audit) : 0;
}

/* The busiest routes as JSON for /stats, "{}" without an audit; malloc'd. */
static char *routes_json(const struct admin_ops *ops)
{
    return ops->audit ? audit_routes_json(ops->audit, STATS_TOP_ROUTES) : xstrdup("{}");
}

/* statusproxy_audit_errors_total{kind}: the audit writer's failed attempts. */
static void append_audit_errors(struct sbuf *b, const struct audit *audit)
{
    uint64_t counts[AUDIT_ERR_COUNT];
    audit_error_counts(audit, counts);
    sbuf_puts(b, "# HELP statusproxy_audit_errors_total Failed attempts to write audit records, "
                 "by kind (each retry counts).\n"
                 "# TYPE statusproxy_audit_errors_total counter\n");
    for (int k = 0; k < AUDIT_ERR_COUNT; k++)
        sbuf_printf(b, "statusproxy_audit_errors_total{kind=\"%s\"} %llu\n",
                    audit_error_kind_name((enum audit_error_kind)k),
                    (unsigned long long)counts[k]);
}

static int path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

static void route_rules_toggle(struct admin_conn *ac, const char *path, size_t len, int method)
{
    /* /rules/NAME/enable or /rules/NAME/disable */
    const char *name = path + 7;
    const char *slash = memchr(name, '/', len - 7);
    if (!slash || method != HTTP_POST) {
        respond_error(ac, slash ? 405 : 404, slash ? "Method Not Allowed" : "Not Found",
                      slash ? "use POST" : "no such endpoint");
        return;
    }
    const char *verb = slash + 1;
    size_t vlen = (size_t)(path + len - verb);
    int enable;
    if (vlen == 6 && memcmp(verb, "enable", 6) == 0)
        enable = 1;
    else if (vlen == 7 && memcmp(verb, "disable", 7) == 0)
        enable = 0;
    else {
        respond_error(ac, 404, "Not Found", "expected /rules/NAME/enable or /rules/NAME/disable");
        return;
    }
    char *rname = xstrndup(name, (size_t)(slash - name));
    const struct admin_ops *ops = &ac->admin->ops;
    struct rules *set = ops->current_rules(ops->ctx);
    int rc = set ? rules_set_enabled(set, rname, enable) : -1;
    if (rc != 0) {
        char *msg = xasprintf("no rule named '%s'", rname);
        respond_error(ac, 404, "Not Found", msg);
        free(msg);
    } else {
        LOG(LOG_INFO, "admin: rule %s %s", rname, enable ? "enabled" : "disabled");
        char *json = rules_json(set);
        respond_with(ac, 200, "OK", NULL, json);
        free(json);
    }
    rules_unref(set);
    free(rname);
}

static void route_rules_put(struct admin_conn *ac)
{
    struct rules_diags diags = {0};
    const struct admin_ops *ops = &ac->admin->ops;
    if (ac->too_large) {
        respond_error(ac, 413, "Payload Too Large", "rule text over 1 MiB");
        return;
    }
    if (ops->replace_rules(ops->ctx, ac->body.data ? ac->body.data : "", ac->body.len,
                           &diags) != 0) {
        const struct rules_diag *first = NULL;
        for (size_t i = 0; i < diags.n && !first; i++)
            if (diags.items[i].is_error)
                first = &diags.items[i];
        char *msg = first ? xasprintf("line %d:%d: %s", first->line, first->col, first->message)
                          : xstrdup("the rules were refused");
        LOG(LOG_WARN, "admin: PUT /rules refused: %s; the previous rules stay", msg);
        respond_error(ac, 400, "Bad Request", msg);
        free(msg);
    } else {
        struct rules *set = ops->current_rules(ops->ctx);
        LOG(LOG_INFO, "admin: rules replaced by PUT /rules, %zu rule%s", set ? rules_count(set) : 0,
            set && rules_count(set) == 1 ? "" : "s");
        char *json = rules_json(set);
        respond_with(ac, 200, "OK", NULL, json);
        free(json);
        rules_unref(set);
    }
    rules_diags_free(&diags);
}

static void route(struct admin_conn *ac)
{
    struct http_head *h = &ac->head;
    int method = llhttp_get_method(&ac->parser);
    const char *path = http_head_str(h, h->target);
    size_t len = h->target_len;
    const char *q = memchr(path, '?', len);
    if (q)
        len = (size_t)(q - path);
    int get = method == HTTP_GET || method == HTTP_HEAD;
    const struct admin_ops *ops = &ac->admin->ops;

    if (path_is(path, len, "/healthz") && get) {
        respond_text(ac, 200, "OK", "ok\n");
        return;
    }
    if (path_is(path, len, "/") && get) {
        const struct embedded_file *page = embedded_find("proxy/assets/live.html");
        if (page)
            respond(ac, 200, "OK", "text/html; charset=utf-8", NULL, page->data, page->len);
        else
            respond_text(ac, 404, "Not Found", "no live page in this build\n");
        return;
    }
    if (!authorized(ac)) {
        respond_with(ac, 401, "Unauthorized", "WWW-Authenticate: Bearer realm=\"statusproxy\"\r\n",
                     "{\"error\": \"missing or wrong bearer token\"}\n");
        return;
    }
    if (path_is(path, len, "/metrics") && get) {
        char *text = metrics_prometheus(ops->metrics, lost_records(ops));
        struct sbuf b = {0};
        sbuf_puts(&b, text);
        free(text);
        append_audit_errors(&b, ops->audit);
        respond(ac, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
        sbuf_free(&b);
        return;
    }
    if (path_is(path, len, "/stats") && get) {
        char *json = metrics_stats_json(ops->metrics, lost_records(ops));
        /* The routes come from the audit writer: spliced in as the last member. */
        char *routes = routes_json(ops), *end = strrchr(json, '}');
        if (end)
            *end = '\0';
        char *full = xasprintf("%s, \"routes\": %s}\n", json, routes);
        respond_with(ac, 200, "OK", NULL, full);
        free(full);
        free(routes);
        free(json);
        return;
    }
    if (path_is(path, len, "/rules")) {
        if (get) {
            struct rules *set = ops->current_rules(ops->ctx);
            char *json = rules_json(set);
            respond_with(ac, 200, "OK", NULL, json);
            free(json);
            rules_unref(set);
        } else if (method == HTTP_PUT) {
            route_rules_put(ac);
        } else {
            respond_with(ac, 405, "Method Not Allowed", "Allow: GET, PUT\r\n",
                         "{\"error\": \"use GET or PUT\"}\n");
        }
        return;
    }
    if (len > 7 && memcmp(path, "/rules/", 7) == 0) {
        route_rules_toggle(ac, path, len, method);
        return;
    }
    if (path_is(path, len, "/metrics") || path_is(path, len, "/stats") ||
        path_is(path, len, "/healthz") || path_is(path, len, "/")) {
        respond_with(ac, 405, "Method Not Allowed", "Allow: GET\r\n", "{\"error\": \"use GET\"}\n");
        return;
    }
    respond_error(ac, 404, "Not Found", "no such endpoint");
}

/* ---------- reading ---------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct admin_conn *ac = h->data;
    UNUSED(suggested);
    *buf = uv_buf_init(ac->rbuf, sizeof ac->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void set_reading(struct admin_conn *ac, int want)
{
    if (want && !ac->reading) {
        if (uv_read_start((uv_stream_t *)&ac->tcp, on_alloc, on_read) != 0) {
            conn_close(ac);
            return;
        }
        ac->reading = 1;
    } else if (!want && ac->reading) {
        uv_read_stop((uv_stream_t *)&ac->tcp);
        ac->reading = 0;
    }
}

/* Parse and answer the bytes waiting in rbuf. While too many answer bytes
 * are unsent, stop: the rest waits in rbuf and reading is off, so a client
 * that never reads cannot make us buffer without bound. */
static void parse_input(struct admin_conn *ac)
{
    while (ac->in_pos < ac->in_len && !ac->closing && ac->unsent <= ADMIN_WRITE_HIGH) {
        size_t used;
        enum http_pump_step step =
            http_pump(&ac->parser, ac->rbuf + ac->in_pos, ac->in_len - ac->in_pos, &used);
        if (step == HTTP_PUMP_ALL) {
            ac->in_pos = ac->in_len;
            break;
        }
        if (step != HTTP_PUMP_PAUSED) {
            ac->keep_alive = 0;
            ac->in_pos = ac->in_len = 0;
            set_reading(ac, 0);
            uv_timer_stop(&ac->timer);
            respond_text(ac, ac->head.overflow ? 431 : 400,
                         ac->head.overflow ? "Request Header Fields Too Large" : "Bad Request",
                         "malformed request\n");
            return;
        }
        ac->in_pos += used;
        llhttp_resume(&ac->parser);
        if (ac->complete) {
            route(ac);
            ac->complete = 0;
            ac->too_large = 0;
            http_head_reset(&ac->head);
            sbuf_reset(&ac->body);
        }
    }
    if (ac->closing)
        return;
    set_reading(ac, ac->in_pos >= ac->in_len && ac->unsent <= ADMIN_WRITE_HIGH);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *ac = s->data;
    UNUSED(buf);
    if (nread < 0) {
        conn_close(ac);
        return;
    }
    ac->in_pos = 0;
    ac->in_len = (size_t)nread;
    parse_input(ac);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    if (status != 0)
        return;
    struct admin_conn *ac = xcalloc(1, sizeof *ac);
    ac->admin = a;
    uv_tcp_init(a->loop, &ac->tcp);
    uv_timer_init(a->loop, &ac->timer);
    ac->tcp.data = ac->timer.data = ac;
    http_head_init(&ac->head, ADMIN_HEAD_LIMIT);
    llhttp_init(&ac->parser, HTTP_REQUEST, &admin_settings);
    ac->parser.data = ac;
    ac->next = a->conns;
    a->conns = ac;
    a->nconns++;
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) != 0) {
        conn_close(ac);
        return;
    }
    if (a->nconns > ADMIN_MAX_CONNS) {
        /* Over the limit: a short answer instead of silence, then close. */
        respond_text(ac, 503, "Service Unavailable", "too many admin connections\n");
        return;
    }
    arm_timer(ac, 1); /* the first request's head must come in time */
    set_reading(ac, 1);
}

static void on_failed_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

struct admin *admin_start(const struct admin_ops *ops, uv_loop_t *loop,
                          const struct listen_addr *addr, char *err, size_t errlen)
{
    struct admin *a = xcalloc(1, sizeof *a);
    a->ops = *ops;
    a->loop = loop;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    int rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&addr->sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        /* Freed by the close callback, once the loop has let go of it. */
        uv_close((uv_handle_t *)&a->listener, on_failed_listener_closed);
        return NULL;
    }
    return a;
}

void admin_stop(struct admin *a)
{
    if (!a || a->stopped)
        return;
    a->stopped = 1;
    if (!a->listener_closed) {
        uv_close((uv_handle_t *)&a->listener, NULL);
        a->listener_closed = 1;
    }
    while (a->conns)
        conn_close(a->conns);
}

void admin_free(struct admin *a)
{
    free(a);
}
