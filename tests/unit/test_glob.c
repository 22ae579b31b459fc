/* Unit tests for glob: each pattern shape, case folding, wildcards over `/`,
 * backtracking, and byte-exact behaviour with lengths (no NUL needed). */
#include "glob.h"
#include "unit.h"

static int m(const char *pattern, const char *s, unsigned flags)
{
    struct glob *g = glob_compile(pattern, strlen(pattern), flags);
    int r = glob_match(g, s, strlen(s));
    glob_free(g);
    return r;
}

static void test_literal(void)
{
    CHECK_INT(m("/orders", "/orders", 0), 1);
    CHECK_INT(m("/orders", "/orders/1", 0), 0);
    CHECK_INT(m("/orders", "/order", 0), 0);
    CHECK_INT(m("/orders", "/Orders", 0), 0);
    CHECK_INT(m("", "", 0), 1);
    CHECK_INT(m("", "x", 0), 0);
}

static void test_star_matches_any_run_including_slash(void)
{
    CHECK_INT(m("/pay/*", "/pay/", 0), 1);
    CHECK_INT(m("/pay/*", "/pay/a/b/c", 0), 1);
    CHECK_INT(m("/pay/*", "/pay", 0), 0);
    CHECK_INT(m("*", "", 0), 1);
    CHECK_INT(m("*", "/anything/at/all", 0), 1);
    CHECK_INT(m("**", "x", 0), 1);
}

static void test_suffix(void)
{
    CHECK_INT(m("*.json", "/a/b.json", 0), 1);
    CHECK_INT(m("*.json", ".json", 0), 1);
    CHECK_INT(m("*.json", "/a/b.jsonx", 0), 0);
    CHECK_INT(m("*.json", "json", 0), 0);
}

static void test_question_mark_is_one_byte(void)
{
    CHECK_INT(m("/v?/items", "/v1/items", 0), 1);
    CHECK_INT(m("/v?/items", "/v/items", 0), 0);
    CHECK_INT(m("/v?/items", "/v12/items", 0), 0);
    CHECK_INT(m("???", "abc", 0), 1);
    CHECK_INT(m("???", "ab", 0), 0);
}

static void test_general_backtracking(void)
{
    CHECK_INT(m("/api/*/orders/*", "/api/v1/orders/7", 0), 1);
    CHECK_INT(m("/api/*/orders/*", "/api/v1/x/orders/7", 0), 1);
    CHECK_INT(m("/api/*/orders/*", "/api/v1/order/7", 0), 0);
    CHECK_INT(m("*a*b*c", "xxaxxbxxbxxc", 0), 1);
    CHECK_INT(m("*a*b*c", "xxaxxbxxbxxcx", 0), 0);
    CHECK_INT(m("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0), 0);
    CHECK_INT(m("*?", "", 0), 0);
    CHECK_INT(m("*?", "x", 0), 1);
    CHECK_INT(m("?*?", "xy", 0), 1);
}

static void test_case_insensitive(void)
{
    CHECK_INT(m("*.Example.COM", "api.example.com", GLOB_ICASE), 1);
    CHECK_INT(m("API.example.com", "api.EXAMPLE.com", GLOB_ICASE), 1);
    CHECK_INT(m("api*", "APIs", GLOB_ICASE), 1);
    CHECK_INT(m("a?c*", "AbCd", GLOB_ICASE), 1);
    CHECK_INT(m("api*", "APIs", 0), 0);
}

static void test_other_bytes_are_literal(void)
{
    CHECK_INT(m("/a[b]", "/a[b]", 0), 1);
    CHECK_INT(m("/a[b]", "/ab", 0), 0);
    CHECK_INT(m("\\*", "\\x", 0), 1); /* no escape character: `\` is literal */
    CHECK_INT(m("\\*", "*", 0), 0);
}

static void test_lengths_not_nul(void)
{
    struct glob *g = glob_compile("/ab*zz", 4, 0); /* "/ab*" */
    CHECK_INT(glob_match(g, "/abc-not-this", 4), 1);
    CHECK_INT(glob_match(g, "/xbc", 4), 0);
    CHECK_INT(glob_match(g, NULL, 0), 0);
    size_t len;
    CHECK_STR(glob_pattern(g, &len), "/ab*");
    CHECK_INT(len, 4);
    glob_free(g);
    glob_free(NULL);
}

static void test_has_wildcard(void)
{
    CHECK_INT(glob_has_wildcard("/a/b", 4), 0);
    CHECK_INT(glob_has_wildcard("/a/*", 4), 1);
    CHECK_INT(glob_has_wildcard("/a/?", 4), 1);
}

int main(void)
{
    RUN(test_literal);
    RUN(test_star_matches_any_run_including_slash);
    RUN(test_suffix);
    RUN(test_question_mark_is_one_byte);
    RUN(test_general_backtracking);
    RUN(test_case_insensitive);
    RUN(test_other_bytes_are_literal);
    RUN(test_lengths_not_nul);
    RUN(test_has_wildcard);
    return unit_summary("glob");
}
