/* Unit tests for resp_head: the exact bytes of each head the proxy writes,
 * one table per decision (framing, status line and marks, Connection, the
 * request head). */
#include <stdlib.h>

#include "resp_head.h"
#include "unit.h"

/* An upstream response head: STATUS REASON and "Name: value" pairs. */
static void make_resp(struct http_head *h, int status, const char *reason, const char **fields)
{
    http_head_init(h, 8192);
    h->status = status;
    h->major = h->minor = 1;
    http_head_add_reason(h, reason, strlen(reason));
    for (size_t i = 0; fields && fields[i]; i += 2)
        http_head_add_field(h, fields[i], strlen(fields[i]), fields[i + 1], strlen(fields[i + 1]));
}

/* ---- framing ---- */

struct framing_row {
    const char *name;
    int status, up_status, is_head, upgrade;
    const char *cl;
    int up_chunked, minor, keepalive, close, req_done;
    /* expected */
    const char *bytes;
    enum resp_head_framing framing;
    int discard, close_out, drop_request;
};

#define TE "Transfer-Encoding: chunked\r\n"
#define CLOSE "Connection: close\r\n"
#define KA "Connection: keep-alive\r\n"

static const struct framing_row framing_rows[] = {
    /* bodies that go on */
    {"length", 200, 200, 0, 0, "5", 0, 1, 1, 0, 1, "Content-Length: 5\r\n\r\n", RESP_FRAMING_LENGTH, 0, 0, 0},
    {"length 1.0 keep-alive", 200, 200, 0, 0, "5", 0, 0, 1, 0, 1, "Content-Length: 5\r\n" KA "\r\n", RESP_FRAMING_LENGTH, 0, 0, 0},
    {"length 1.0 no keep-alive", 200, 200, 0, 0, "5", 0, 0, 0, 1, 1, "Content-Length: 5\r\n" CLOSE "\r\n", RESP_FRAMING_LENGTH, 0, 0, 0},
    {"chunked upstream, 1.1", 200, 200, 0, 0, NULL, 1, 1, 1, 0, 1, TE "\r\n", RESP_FRAMING_CHUNKED, 0, 0, 0},
    {"chunked wins over length", 200, 200, 0, 0, "5", 1, 1, 1, 0, 1, TE "\r\n", RESP_FRAMING_CHUNKED, 0, 0, 0},
    {"no length, 1.1: chunked", 200, 200, 0, 0, NULL, 0, 1, 1, 0, 1, TE "\r\n", RESP_FRAMING_CHUNKED, 0, 0, 0},
    {"no length, 1.0: close", 200, 200, 0, 0, NULL, 1, 0, 1, 0, 1, CLOSE "\r\n", RESP_FRAMING_CLOSE, 0, 1, 0},
    {"rewritten 503 keeps length", 503, 200, 0, 0, "7", 0, 1, 1, 0, 1, "Content-Length: 7\r\n\r\n", RESP_FRAMING_LENGTH, 0, 0, 0},
    {"closing anyway", 200, 200, 0, 0, "5", 0, 1, 1, 1, 1, "Content-Length: 5\r\n" CLOSE "\r\n", RESP_FRAMING_LENGTH, 0, 0, 0},
    {"request not done", 200, 200, 0, 0, "5", 0, 1, 1, 0, 0, "Content-Length: 5\r\n" CLOSE "\r\n", RESP_FRAMING_LENGTH, 0, 1, 1},
    /* empty bodies */
    {"205", 205, 200, 0, 0, "5", 0, 1, 1, 0, 1, "Content-Length: 0\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"set-status 200 on a 204", 200, 204, 0, 0, NULL, 0, 1, 1, 0, 1, "Content-Length: 0\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"set-status 200 on a 304", 200, 304, 0, 0, "9", 0, 1, 1, 0, 1, "Content-Length: 0\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    /* bodiless: 1xx, 204, 304, HEAD */
    {"204", 204, 204, 0, 0, NULL, 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"204 drops a length", 204, 204, 0, 0, "3", 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"set-status 204 on 200", 204, 200, 0, 0, "3", 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"304 keeps its length", 304, 304, 0, 0, "42", 0, 1, 1, 0, 1, "Content-Length: 42\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"set-status 304 on 200", 304, 200, 0, 0, "42", 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD with length", 200, 200, 1, 0, "42", 0, 1, 1, 0, 1, "Content-Length: 42\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD chunked 1.1", 200, 200, 1, 0, NULL, 1, 1, 1, 0, 1, TE "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD chunked 1.0", 200, 200, 1, 0, NULL, 1, 0, 1, 0, 1, KA "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD nothing known", 200, 200, 1, 0, NULL, 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD of a 204 rewritten 200", 200, 204, 1, 0, NULL, 0, 1, 1, 0, 1, "Content-Length: 0\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD rewritten 503 keeps length", 503, 200, 1, 0, "42", 0, 1, 1, 0, 1, "Content-Length: 42\r\n\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD rewritten 204", 204, 200, 1, 0, "42", 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    {"HEAD request not done", 200, 200, 1, 0, "1", 0, 1, 1, 0, 0, "Content-Length: 1\r\n" CLOSE "\r\n", RESP_FRAMING_NONE, 1, 1, 1},
    {"set-status 100 on 200", 100, 200, 0, 0, "5", 0, 1, 1, 0, 1, "\r\n", RESP_FRAMING_NONE, 1, 0, 0},
    /* Upgrade */
    {"101 upgrade", 101, 101, 0, 1, NULL, 0, 1, 1, 0, 0, "Connection: Upgrade\r\n\r\n", RESP_FRAMING_NONE, 0, 0, 0},
    {"101 upgrade, closing", 101, 101, 0, 1, NULL, 0, 1, 1, 1, 1, "Connection: Upgrade\r\n\r\n", RESP_FRAMING_NONE, 0, 0, 0},
};

static void test_framing_table(void)
{
    for (size_t i = 0; i < sizeof framing_rows / sizeof framing_rows[0]; i++) {
        const struct framing_row *w = &framing_rows[i];
        struct resp_head_framing_in in = {
            .status = w->status, .up_status = w->up_status, .is_head = w->is_head,
            .upgrade = w->upgrade, .cl = w->cl, .up_chunked = w->up_chunked,
            .client_minor = w->minor, .client_keepalive = w->keepalive, .close = w->close,
            .req_done = w->req_done,
        };
        struct resp_head_framing_out r;
        struct sbuf out = {0};
        sbuf_puts(&out, "X");   /* appends after what is there */
        resp_head_put_framing(&in, &out, &r);
        unit_current = w->name;
        CHECK(out.len >= 1 && out.data[0] == 'X');
        CHECK_STR(out.data + 1, w->bytes);
        CHECK_INT(r.framing, w->framing);
        CHECK_INT(r.discard, w->discard);
        CHECK_INT(r.close, w->close_out);
        CHECK_INT(r.drop_request, w->drop_request);
        sbuf_free(&out);
    }
}

/* ---- Connection ---- */

static void test_connection_table(void)
{
    static const struct { int close, keepalive, minor; const char *bytes; } rows[] = {
        {1, 1, 1, CLOSE}, {1, 0, 0, CLOSE}, {1, 1, 0, CLOSE},
        {0, 1, 1, ""}, {0, 1, 0, KA}, {0, 0, 1, ""}, {0, 0, 0, ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct sbuf out = {0};
        sbuf_puts(&out, "");
        resp_head_put_connection(&out, rows[i].close, rows[i].keepalive, rows[i].minor);
        CHECK_STR(out.data, rows[i].bytes);
        sbuf_free(&out);
    }
}

/* ---- status line, fields, Via, X-Statusproxy-Rule ---- */

struct fields_row {
    const char *name;
    int up_status;
    const char *up_reason;
    int status;
    const char *reason;
    int mark_faults;
    const char *mark;
    const char *bytes;
};

#define VIA "Via: 1.1 me:8080 (statusproxy)\r\n"

static const struct fields_row fields_rows[] = {
    {"kept as is", 200, "Fine Thanks", 200, NULL, 0, NULL,
     "HTTP/1.1 200 Fine Thanks\r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"empty upstream reason", 200, "", 200, NULL, 0, NULL,
     "HTTP/1.1 200 \r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"set-status: catalog reason", 200, "OK", 503, NULL, 0, NULL,
     "HTTP/1.1 503 Service Unavailable\r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"set-reason only", 404, "Not Found", 404, "Gone Fishing", 0, NULL,
     "HTTP/1.1 404 Gone Fishing\r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"set-status and reason", 200, "OK", 429, "Slow Down", 0, NULL,
     "HTTP/1.1 429 Slow Down\r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"marked rule", 200, "OK", 503, NULL, 1, "flaky-api",
     "HTTP/1.1 503 Service Unavailable\r\nServer: s\r\nX-A: 1\r\n" VIA
     "X-Statusproxy-Rule: flaky-api\r\n"},
    {"marked fault header", 200, "OK", 200, NULL, 1, "fault-header",
     "HTTP/1.1 200 OK\r\nServer: s\r\nX-A: 1\r\n" VIA "X-Statusproxy-Rule: fault-header\r\n"},
    {"no --mark-faults", 200, "OK", 503, NULL, 0, "flaky-api",
     "HTTP/1.1 503 Service Unavailable\r\nServer: s\r\nX-A: 1\r\n" VIA},
    {"marking, no rule", 200, "OK", 200, NULL, 1, NULL,
     "HTTP/1.1 200 OK\r\nServer: s\r\nX-A: 1\r\n" VIA},
};

static void test_fields_table(void)
{
    static const char *fields[] = {"Server", "s", "X-Gone", "x", "X-A", "1", NULL};
    for (size_t i = 0; i < sizeof fields_rows / sizeof fields_rows[0]; i++) {
        const struct fields_row *w = &fields_rows[i];
        struct http_head h;
        make_resp(&h, w->up_status, w->up_reason, fields);
        http_head_remove(&h, "X-Gone");   /* removed fields are not written */
        struct resp_head_fields f = {&h, w->status, w->reason, "1.1 me:8080 (statusproxy)",
                                     w->mark_faults, w->mark};
        struct sbuf out = {0};
        resp_head_put_fields(&f, &out);
        unit_current = w->name;
        CHECK_STR(out.data, w->bytes);
        sbuf_free(&out);
        http_head_free(&h);
    }
}

/* ---- prepare (Content-Length copy, hop-by-hop) and 1xx ---- */

static void test_prepare(void)
{
    static const char *fields[] = {
        "Content-Length", "1234", "Connection", "close, X-Hop", "X-Hop", "h", "Keep-Alive",
        "timeout=5", "Transfer-Encoding", "chunked", "Upgrade", "websocket", "TE", "trailers",
        "Trailer", "X-T", "Proxy-Connection", "keep-alive", "X-Statusproxy-Abort", "503",
        "X-End", "e", NULL};
    struct http_head h;
    char buf[24];
    make_resp(&h, 200, "OK", fields);
    const char *cl = resp_head_prepare(&h, 0, buf, sizeof buf);
    CHECK_STR(cl, "1234");
    struct sbuf out = {0};
    sbuf_puts(&out, "");
    http_head_write(&h, &out);
    CHECK_STR(out.data, "X-End: e\r\n");
    http_head_free(&h);
    /* 101: Upgrade stays; no Content-Length gives NULL */
    make_resp(&h, 101, "Switching Protocols", fields + 2);
    CHECK(resp_head_prepare(&h, 1, buf, sizeof buf) == NULL);
    sbuf_reset(&out);
    sbuf_puts(&out, "");
    http_head_write(&h, &out);
    CHECK_STR(out.data, "Upgrade: websocket\r\nX-End: e\r\n");
    http_head_free(&h);
    /* a Content-Length longer than the buffer is cut, not overrun */
    static const char *longcl[] = {"Content-Length", "123456789", NULL};
    make_resp(&h, 200, "OK", longcl);
    CHECK_STR(resp_head_prepare(&h, 0, buf, 5), "1234");
    http_head_free(&h);
    sbuf_free(&out);
}

static void test_interim(void)
{
    static const char *fields[] = {"Link", "</s.css>; rel=preload", "Connection", "keep-alive",
                                   "Upgrade", "h2c", NULL};
    struct http_head h;
    make_resp(&h, 103, "Early Hints", fields);
    struct sbuf out = {0};
    resp_head_interim(&h, "1.1 me:8080 (statusproxy)", &out);
    CHECK_STR(out.data, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n" VIA "\r\n");
    sbuf_free(&out);
    http_head_free(&h);
}

/* ---- the request head to the upstream ---- */

struct request_row {
    const char *name;
    const char *method, *target;
    int is_connect;
    int forward_mode, with_host, is_upgrade, max_forwards, chunked, has_length;
    uint64_t length;
    const char *bytes;
};

static const struct request_row request_rows[] = {
    {"gateway keeps Host", "GET", "/a?b", 0, 0, 1, 0, -1, 0, 0, 0,
     "GET /a?b HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA "\r\n"},
    {"gateway adds missing Host", "GET", "/a", 0, 0, 0, 0, -1, 0, 0, 0,
     "GET /a HTTP/1.1\r\nHost: up.example:9000\r\nAccept: */*\r\n" VIA "\r\n"},
    {"forward rewrites Host", "GET", "http://up.example:9000/p?q", 0, 1, 1, 0, -1, 0, 0, 0,
     "GET /p?q HTTP/1.1\r\nHost: up.example:9000\r\nAccept: */*\r\n" VIA "\r\n"},
    {"forward, empty path", "GET", "http://up.example:9000", 0, 1, 1, 0, -1, 0, 0, 0,
     "GET / HTTP/1.1\r\nHost: up.example:9000\r\nAccept: */*\r\n" VIA "\r\n"},
    {"forward, query only", "GET", "http://up.example:9000?x=1", 0, 1, 1, 0, -1, 0, 0, 0,
     "GET /?x=1 HTTP/1.1\r\nHost: up.example:9000\r\nAccept: */*\r\n" VIA "\r\n"},
    {"asterisk", "OPTIONS", "*", 0, 0, 1, 0, -1, 0, 0, 0,
     "OPTIONS * HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA "\r\n"},
    {"Max-Forwards decremented", "OPTIONS", "/", 0, 0, 1, 0, 3, 0, 0, 0,
     "OPTIONS / HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA "Max-Forwards: 2\r\n\r\n"},
    {"chunked body", "POST", "/u", 0, 0, 1, 0, -1, 1, 0, 0,
     "POST /u HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA TE "\r\n"},
    {"length body", "PUT", "/u", 0, 0, 1, 0, -1, 0, 1, 17,
     "PUT /u HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA "Content-Length: 17\r\n\r\n"},
    {"zero length kept", "POST", "/u", 0, 0, 1, 0, -1, 0, 1, 0,
     "POST /u HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\n" VIA "Content-Length: 0\r\n\r\n"},
    {"upgrade", "GET", "/ws", 0, 0, 1, 1, -1, 0, 0, 0,
     "GET /ws HTTP/1.1\r\nHost: client.example\r\nAccept: */*\r\nUpgrade: websocket\r\n" VIA
     "Connection: Upgrade\r\n\r\n"},
};

static void test_request_table(void)
{
    for (size_t i = 0; i < sizeof request_rows / sizeof request_rows[0]; i++) {
        const struct request_row *w = &request_rows[i];
        struct target t;
        const char *why;
        unit_current = w->name;
        CHECK_INT(target_parse(w->target, strlen(w->target), w->is_connect, &t, &why), 0);
        struct http_head h;
        http_head_init(&h, 8192);
        if (w->with_host)
            http_head_add_field(&h, "Host", 4, "client.example", 14);
        http_head_add_field(&h, "Accept", 6, "*/*", 3);
        http_head_add_field(&h, "Connection", 10, "Upgrade, X-Hop", 14);
        http_head_add_field(&h, "X-Hop", 5, "1", 1);
        http_head_add_field(&h, "Upgrade", 7, "websocket", 9);
        http_head_add_field(&h, "Content-Length", 14, "99", 2);
        struct resp_head_request q = {w->method, &t, w->forward_mode, "up.example", 9000,
                                      w->is_upgrade, "1.1 me:8080 (statusproxy)",
                                      w->max_forwards, w->chunked, w->has_length, w->length};
        struct sbuf out = {0};
        sbuf_puts(&out, "");
        resp_head_build_request(&q, &h, &out);
        CHECK_STR(out.data, w->bytes);
        sbuf_free(&out);
        http_head_free(&h);
    }
}

int main(void)
{
    RUN(test_framing_table);
    RUN(test_connection_table);
    RUN(test_fields_table);
    RUN(test_prepare);
    RUN(test_interim);
    RUN(test_request_table);
    return unit_summary("resp_head");
}
