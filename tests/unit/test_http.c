/* Unit tests for http: head storage fed piece by piece, lookups, grammar. */
#include "http.h"
#include "unit.h"

static void add(struct http_head *h, const char *name, const char *value)
{
    http_head_add_name(h, name, strlen(name));
    http_head_add_value(h, value, strlen(value));
    http_head_end_value(h);
}

static void test_pieces_join_and_trim(void)
{
    struct http_head h;
    http_head_init(&h, 1024);
    http_head_add_target(&h, "/ab", 3);
    http_head_add_target(&h, "c", 1);
    http_head_add_name(&h, "Con", 3);
    http_head_add_name(&h, "tent-Type", 9);
    http_head_add_value(&h, "text/", 5);
    http_head_add_value(&h, "plain \t", 7);
    http_head_end_value(&h);
    size_t len;
    const char *v = http_head_get(&h, "content-type", &len);
    CHECK(v != NULL);
    CHECK_INT(len, 10);
    CHECK(v && memcmp(v, "text/plain", 10) == 0);
    CHECK_INT(h.target_len, 4);
    CHECK(memcmp(http_head_str(&h, h.target), "/abc", 4) == 0);
    http_head_free(&h);
}

static void test_empty_value(void)
{
    struct http_head h;
    http_head_init(&h, 1024);
    http_head_add_name(&h, "X", 1);
    http_head_end_value(&h);
    add(&h, "Y", "1");
    size_t len = 99;
    CHECK(http_head_get(&h, "X", &len) != NULL);
    CHECK_INT(len, 0);
    CHECK(http_head_get(&h, "Y", &len) != NULL);
    CHECK_INT(len, 1);
    http_head_free(&h);
}

static void test_limit(void)
{
    struct http_head h;
    http_head_init(&h, 16);
    CHECK_INT(http_head_add_target(&h, "0123456789", 10), 0);
    CHECK_INT(http_head_add_name(&h, "0123456789", 10), -1);
    CHECK(h.overflow);
    http_head_free(&h);
}

static void test_remove_and_tokens(void)
{
    struct http_head h;
    http_head_init(&h, 1024);
    add(&h, "Connection", "keep-alive, X-Foo");
    add(&h, "X-Foo", "1");
    add(&h, "x-foo", "2");
    CHECK(http_head_has_token(&h, "connection", "x-foo"));
    CHECK(!http_head_has_token(&h, "connection", "x-fo"));
    CHECK_INT(http_head_remove(&h, "X-FOO"), 2);
    CHECK_INT(http_head_find(&h, "x-foo", 0), -1);
    CHECK_INT(http_head_add_field(&h, "Z", 1, "v", 1), 0);
    size_t len;
    CHECK(http_head_get(&h, "z", &len) != NULL);
    http_head_reset(&h);
    CHECK_INT(h.nfields, 0);
    http_head_free(&h);
}

/* Well-known names are recognized however they are cased or split into
 * pieces, and only when the whole name matches. */
static void test_known_names(void)
{
    struct http_head h;
    http_head_init(&h, 1024);
    http_head_add_name(&h, "con", 3);
    http_head_add_name(&h, "TENT-length", 11);
    http_head_add_value(&h, "5", 1);
    http_head_end_value(&h);
    add(&h, "Hosts", "a");
    add(&h, "TE2", "b");
    add(&h, "hOsT", "c");
    size_t len;
    const char *v = http_head_get(&h, "Content-Length", &len);
    CHECK(v != NULL && len == 1 && v[0] == '5');
    CHECK_INT(http_head_find(&h, "host", 0), 3);
    CHECK_INT(http_head_find(&h, "HOSTS", 0), 1);
    CHECK_INT(http_head_find(&h, "te", 0), -1);
    CHECK_INT(http_head_find(&h, "te2", 0), 2);
    CHECK_INT(http_head_find(&h, "Via", 0), -1);
    CHECK_INT(http_head_remove(&h, "HOST"), 1);
    CHECK_INT(http_head_find(&h, "Host", 0), -1);
    CHECK_INT(http_head_find(&h, "Hosts", 0), 1);
    CHECK_INT(http_head_add_field(&h, "Via", 3, "1.1 x", 5), 0);
    CHECK_INT(http_head_find(&h, "via", 0), 4);
    http_head_reset(&h);
    CHECK_INT(http_head_find(&h, "Via", 0), -1);
    http_head_free(&h);
}

/* Lookups by known kind agree with lookups by name: first live field of
 * that kind, removed ones skipped, none when absent. */
static void test_known_lookups(void)
{
    struct http_head h;
    http_head_init(&h, 1024);
    add(&h, "Hosts", "a");
    add(&h, "hOsT", "first");
    add(&h, "Host", "second");
    size_t len = 0;
    const char *v = http_head_get_known(&h, HTTP_F_HOST, &len);
    CHECK(v != NULL && len == 5 && memcmp(v, "first", 5) == 0);
    CHECK_INT(http_head_find_known(&h, HTTP_F_HOST), 1);
    CHECK_INT(http_head_find_known(&h, HTTP_F_HOST), http_head_find(&h, "Host", 0));
    CHECK(http_head_get_known(&h, HTTP_F_CONTENT_LENGTH, &len) == NULL);
    CHECK_INT(http_head_find_known(&h, HTTP_F_CONTENT_LENGTH), -1);
    h.fields[1].removed = 1;
    v = http_head_get_known(&h, HTTP_F_HOST, &len);
    CHECK(v != NULL && len == 6 && memcmp(v, "second", 6) == 0);
    CHECK_INT(http_head_remove(&h, "host"), 1);
    CHECK_INT(http_head_find_known(&h, HTTP_F_HOST), -1);
    http_head_free(&h);
}

static const char *written(const struct http_head *h)
{
    static struct sbuf out;
    sbuf_reset(&out);
    http_head_write(h, &out);
    return out.data ? out.data : "";
}

static void test_drop_hop_by_hop(void)
{
    struct http_head h;
    http_head_init(&h, 4096);
    add(&h, "Host", "a");
    add(&h, "Connection", "close, X-Secret ,,\tvia");
    add(&h, "Keep-Alive", "5");
    add(&h, "X-Secret", "s");
    add(&h, "Via", "1.0 other");
    add(&h, "TE", "trailers");
    add(&h, "Trailer", "X-T");
    add(&h, "Transfer-Encoding", "chunked");
    add(&h, "Content-Length", "3");
    add(&h, "Proxy-Connection", "keep-alive");
    add(&h, "X-Statusproxy-Abort", "503");
    add(&h, "X-Statusproxy-Delay", "1s");
    add(&h, "Upgrade", "websocket");
    add(&h, "Accept", "*/*");
    http_head_drop_hop_by_hop(&h, 0);
    CHECK_STR(written(&h), "Host: a\r\nAccept: */*\r\n");
    http_head_reset(&h);
    add(&h, "Connection", "Upgrade, X-A");
    add(&h, "Upgrade", "websocket");
    add(&h, "X-A", "1");
    add(&h, "X-B", "2");
    http_head_drop_hop_by_hop(&h, 1);
    CHECK_STR(written(&h), "Upgrade: websocket\r\nX-B: 2\r\n");
    http_head_reset(&h);
    /* A Connection field that an earlier one names is gone before its own
     * list is read (as the proxy has always done). */
    add(&h, "Connection", "connection");
    add(&h, "Connection", "x-late");
    add(&h, "X-Late", "1");
    http_head_drop_hop_by_hop(&h, 0);
    CHECK_STR(written(&h), "X-Late: 1\r\n");
    http_head_free(&h);
}

/* Many names in Connection and many fields: one pass, not a rescan of every
 * field per name (which took minutes at this size, and ~10^8 steps for a
 * 64 KiB request head). Every named field goes, the rest stay. */
static void test_drop_hop_by_hop_many_names_is_linear(void)
{
    enum { N = 60000 };
    struct http_head h;
    http_head_init(&h, 16u << 20);
    struct sbuf list = {0};
    for (int i = 0; i < N; i++)
        sbuf_printf(&list, "%sX-N%d", i ? ", " : "", i);
    sbuf_puts(&list, ", Keep-Alive");
    add(&h, "Connection", list.data);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "x-n%d", i); /* other case: still named */
        add(&h, name, "v");
        snprintf(name, sizeof name, "X-Kept%d", i);
        add(&h, name, "v");
    }
    add(&h, "Keep-Alive", "5");
    uint64_t t0 = time_mono_us();
    http_head_drop_hop_by_hop(&h, 0);
    uint64_t us = time_mono_us() - t0;
    CHECK(us < 2000000);
    int kept = 0, named_kept = 0;
    for (uint32_t i = 0; i < h.nfields; i++) {
        if (h.fields[i].removed)
            continue;
        kept++;
        named_kept += h.buf[h.fields[i].name + 2] == 'n';
    }
    CHECK_INT(kept, N);
    CHECK_INT(named_kept, 0);
    sbuf_free(&list);
    http_head_free(&h);
}

static void test_check_request_hosts_and_te(void)
{
    struct http_head h;
    const char *why;
    http_head_init(&h, 1024);
    h.major = 1;
    h.minor = 1;
    CHECK_INT(http_check_request(&h, 0, &why), 400);
    add(&h, "host", "a");
    CHECK_INT(http_check_request(&h, 0, &why), 0);
    add(&h, "HOST", "b");
    CHECK_INT(http_check_request(&h, 0, &why), 400);
    CHECK_STR(why, "more than one Host header");
    http_head_remove(&h, "Host");
    add(&h, "Host", "c");
    add(&h, "Transfer-Encoding", "gzip");
    CHECK_INT(http_check_request(&h, 0, &why), 400);
    CHECK_INT(http_check_request(&h, 1, &why), 0);
    h.minor = 0;
    CHECK_INT(http_check_request(&h, 1, &why), 400);
    http_head_free(&h);
}

static void test_grammar(void)
{
    CHECK(http_is_token("Content-Type", 12));
    CHECK(!http_is_token("Host ", 5));
    CHECK(!http_is_token("", 0));
    CHECK(!http_is_token("a:b", 3));
    CHECK(http_is_field_value("a b\tc", 5));
    CHECK(!http_is_field_value("a\rb", 3));
    CHECK(!http_is_field_value("a\x7f", 2));
    CHECK(http_is_field_value("caf\xc3\xa9", 5));
    /* Long values, checked a word at a time: the bad byte anywhere. */
    const char *ok = "text/html,application/xhtml+xml;q=0.9,\t*/*;q=0.8 \xc3\xa9\xff\x80";
    CHECK(http_is_field_value(ok, strlen(ok)));
    char v[40];
    for (size_t at = 0; at < sizeof v; at++) {
        static const char bad[] = {'\r', '\n', '\0', 0x7f, 0x1f, 0x01};
        for (size_t b = 0; b < sizeof bad; b++) {
            memset(v, 'a', sizeof v);
            v[at] = bad[b];
            CHECK(!http_is_field_value(v, sizeof v));
        }
        v[at] = '\t';
        CHECK(http_is_field_value(v, sizeof v));
    }
}

/* An empty first piece (CONNECT with an empty target) must not leave the
 * arena NULL: the head's strings are then read as NULL + offset (undefined
 * behaviour, found by tests/fuzz/fuzz_http under clang's UBSan). */
static void test_empty_first_piece_has_an_arena(void)
{
    struct http_head h;
    http_head_init(&h, 4096);
    CHECK_INT(http_head_add_target(&h, "", 0), 0);
    CHECK(h.buf != NULL);
    CHECK_INT(http_head_add_name(&h, "", 0), 0);
    struct sbuf out = {0};
    http_head_write(&h, &out);
    CHECK_INT((int)out.len, 4); /* ": \r\n" */
    sbuf_free(&out);
    http_head_free(&h);
}

static void test_retry_after(void)
{
    const char *h1 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                     "retry-after:  120\r\n\r\n";
    CHECK_INT(http_retry_after_ms(h1, strlen(h1)), 120000);
    const char *h2 = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: Wed, 21 Oct 2026 07:28:00 GMT"
                     "\r\n\r\n";
    CHECK_INT(http_retry_after_ms(h2, strlen(h2)), 0);  /* an HTTP-date: not interpreted */
    const char *h3 = "HTTP/1.1 503 x\r\nX-Retry-After: 5\r\n\r\n";
    CHECK_INT(http_retry_after_ms(h3, strlen(h3)), 0);  /* another field */
    const char *h4 = "HTTP/1.1 503 x\r\nRetry-After: 7";
    CHECK_INT(http_retry_after_ms(h4, strlen(h4)), 7000);
    CHECK_INT(http_retry_after_ms(h4, strlen(h4) - 1), 0); /* cut before the value */
}

static int pump_pause(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* http_pump: a callback's pause reports the bytes used up to it; the rest
 * parses after a resume; garbage is an error; an Upgrade stops the parser. */
static void test_pump_steps(void)
{
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_headers_complete = pump_pause;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &st);
    const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET";
    size_t head = strlen("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
    size_t used = 99;
    CHECK_INT(http_pump(&p, req, sizeof req - 1, &used), HTTP_PUMP_PAUSED);
    CHECK_INT(used, head);
    llhttp_resume(&p);
    CHECK_INT(http_pump(&p, req + used, sizeof req - 1 - used, &used), HTTP_PUMP_ALL);
    CHECK_INT(used, sizeof req - 1 - head);

    llhttp_init(&p, HTTP_REQUEST, &st);
    CHECK_INT(http_pump(&p, "\x01\x02 nonsense\r\n", 13, &used), HTTP_PUMP_ERROR);
    CHECK_INT(used, 0);

    llhttp_settings_init(&st);
    llhttp_init(&p, HTTP_REQUEST, &st);
    const char up[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nRAW";
    CHECK_INT(http_pump(&p, up, sizeof up - 1, &used), HTTP_PUMP_UPGRADE);
    CHECK_INT(used, sizeof up - 1 - 3);
}

static void test_chunk_line(void)
{
    char line[HTTP_CHUNK_LINE_MAX];
    size_t n = http_chunk_line(line, 0x1a2b);
    CHECK_INT(n, 6);
    CHECK(memcmp(line, "1a2b\r\n", 6) == 0);
    n = http_chunk_line(line, 0);
    CHECK_INT(n, 3);
    CHECK(memcmp(line, "0\r\n", 3) == 0);
}

int main(void)
{
    RUN(test_empty_first_piece_has_an_arena);
    RUN(test_pump_steps);
    RUN(test_chunk_line);
    RUN(test_retry_after);
    RUN(test_pieces_join_and_trim);
    RUN(test_empty_value);
    RUN(test_limit);
    RUN(test_remove_and_tokens);
    RUN(test_known_names);
    RUN(test_known_lookups);
    RUN(test_drop_hop_by_hop);
    RUN(test_drop_hop_by_hop_many_names_is_linear);
    RUN(test_check_request_hosts_and_te);
    RUN(test_grammar);
    return unit_summary("http");
}
