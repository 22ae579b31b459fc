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
}

int main(void)
{
    RUN(test_pieces_join_and_trim);
    RUN(test_empty_value);
    RUN(test_limit);
    RUN(test_remove_and_tokens);
    RUN(test_grammar);
    return unit_summary("http");
}
