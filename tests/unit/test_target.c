/* Unit tests for target: request-target forms and authorities. */
#include "target.h"
#include "unit.h"

static int parse(const char *s, int connect, struct target *t)
{
    const char *why;
    return target_parse(s, strlen(s), connect, t, &why);
}

static void test_origin_form(void)
{
    struct target t;
    CHECK_INT(parse("/a/b?x=1", 0, &t), 0);
    CHECK_INT(t.form, TARGET_ORIGIN);
    CHECK_INT(t.path_len, 8);
    CHECK_INT(t.path_only_len, 4);
}

static void test_absolute_form(void)
{
    struct target t;
    CHECK_INT(parse("http://Example.COM:8080/p?q", 0, &t), 0);
    CHECK_INT(t.form, TARGET_ABSOLUTE);
    CHECK_STR(t.host, "example.com");
    CHECK_INT(t.port, 8080);
    CHECK_INT(t.path_len, 4);
    CHECK_INT(t.path_only_len, 2);
    CHECK_INT(parse("http://h", 0, &t), 0);
    CHECK_INT(t.port, 80);
    CHECK_INT(t.path_only_len, 0);
    CHECK_INT(parse("http://[::1]:9/x", 0, &t), 0);
    CHECK_STR(t.host, "::1");
    CHECK_INT(t.port, 9);
    CHECK_INT(parse("HTTP://h:/x", 0, &t), 0);
    CHECK_INT(t.port, 80);
}

static void test_absolute_form_refusals(void)
{
    struct target t;
    CHECK_INT(parse("https://h/", 0, &t), -1);
    CHECK_INT(parse("ftp://h/", 0, &t), -1);
    CHECK_INT(parse("http://u:p@h/", 0, &t), -1);
    CHECK_INT(parse("http:///x", 0, &t), -1);
    CHECK_INT(parse("http://h:99999/", 0, &t), -1);
    CHECK_INT(parse("http://h/a#frag", 0, &t), -1);
    CHECK_INT(parse("http://h p/", 0, &t), -1);
    CHECK_INT(parse("x", 0, &t), -1);
}

static void test_authority_and_asterisk(void)
{
    struct target t;
    CHECK_INT(parse("example.com:443", 1, &t), 0);
    CHECK_INT(t.form, TARGET_AUTHORITY);
    CHECK_INT(t.port, 443);
    CHECK_INT(parse("example.com", 1, &t), -1);
    CHECK_INT(parse("*", 0, &t), 0);
    CHECK_INT(t.form, TARGET_ASTERISK);
}

static void test_authority_parse(void)
{
    char host[64];
    int port;
    CHECK_INT(target_parse_authority("a.b:81", 6, host, sizeof host, &port, 80), 0);
    CHECK_STR(host, "a.b");
    CHECK_INT(port, 81);
    CHECK_INT(target_parse_authority("a.b", 3, host, sizeof host, &port, 80), 0);
    CHECK_INT(port, 80);
    CHECK_INT(target_parse_authority("[::1", 4, host, sizeof host, &port, 80), -1);
    CHECK_INT(target_parse_authority("a b", 3, host, sizeof host, &port, 80), -1);
    CHECK_INT(target_parse_authority("", 0, host, sizeof host, &port, 80), -1);
    /* Found by fuzzing: NUL is not a host character. */
    CHECK_INT(target_parse_authority("\0\0", 2, host, sizeof host, &port, 80), -1);
    char buf[64];
    target_format_authority("::1", 80, 1, buf, sizeof buf);
    CHECK_STR(buf, "[::1]");
    target_format_authority("h", 8080, 1, buf, sizeof buf);
    CHECK_STR(buf, "h:8080");
}

int main(void)
{
    RUN(test_origin_form);
    RUN(test_absolute_form);
    RUN(test_absolute_form_refusals);
    RUN(test_authority_and_asterisk);
    RUN(test_authority_parse);
    return unit_summary("target");
}
