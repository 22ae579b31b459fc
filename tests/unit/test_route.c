/* Unit tests for route: each kind of id-like segment, segments that stay,
 * user patterns ({name}, trailing *, first match wins), cutting, the cap. */
#include "route.h"
#include "unit.h"

static char buf[2048];

static const char *t(const struct route_patterns *p, const char *path)
{
    route_template(p, path, strlen(path), buf, sizeof buf);
    return buf;
}

static void test_numbers(void)
{
    CHECK_STR(t(NULL, "/users/123"), "/users/{n}");
    CHECK_STR(t(NULL, "/users/123/orders/4"), "/users/{n}/orders/{n}");
    CHECK_STR(t(NULL, "/v2/users"), "/v2/users");
    CHECK_STR(t(NULL, "/"), "/");
    CHECK_STR(t(NULL, ""), "/");
    CHECK_STR(t(NULL, "/a//7/"), "/a//{n}/");
}

static void test_uuids(void)
{
    CHECK_STR(t(NULL, "/items/123e4567-e89b-12d3-a456-426614174000"), "/items/{uuid}");
    CHECK_STR(t(NULL, "/items/123E4567-E89B-12D3-A456-426614174000/x"), "/items/{uuid}/x");
    /* A dash out of place is no UUID (a token, then: letters, digits, 16+). */
    CHECK_STR(t(NULL, "/items/123e4567e-89b-12d3-a456-426614174000"), "/items/{token}");
}

static void test_hex(void)
{
    CHECK_STR(t(NULL, "/blob/deadbeef01"), "/blob/{hex}");
    CHECK_STR(t(NULL, "/commit/9fceb02d0ae598e95dc970b74767f19372d61af8"), "/commit/{hex}");
    CHECK_STR(t(NULL, "/blob/abc12"), "/blob/abc12");        /* too short */
    CHECK_STR(t(NULL, "/feedback"), "/feedback");            /* a word, no digit */
    CHECK_STR(t(NULL, "/blob/deadbeef"), "/blob/deadbeef");
}

static void test_tokens(void)
{
    CHECK_STR(t(NULL, "/s/aZ3kP9qLm2xWv7Rt"), "/s/{token}");
    CHECK_STR(t(NULL, "/s/session_8f7Hk2LmN4pQ"), "/s/{token}");
    CHECK_STR(t(NULL, "/s/aZ3kP9qLm2xWv7R"), "/s/aZ3kP9qLm2xWv7R"); /* 15 chars */
    CHECK_STR(t(NULL, "/s/averyveryverylongword"), "/s/averyveryverylongword");
    CHECK_STR(t(NULL, "/s/file.2024.report.v123"), "/s/file.2024.report.v123");
}

static void test_user_patterns(void)
{
    struct route_patterns *p = route_patterns_new();
    char err[128];
    CHECK_INT(route_patterns_add(p, "/users/{id}/orders", err, sizeof err), 0);
    CHECK_INT(route_patterns_add(p, "/static/*", err, sizeof err), 0);
    CHECK_INT(route_patterns_add(p, "/users/{name}", err, sizeof err), 0);
    CHECK_INT(route_patterns_count(p), 3);
    CHECK_STR(t(p, "/users/alice/orders"), "/users/{id}/orders");
    CHECK_STR(t(p, "/users/alice"), "/users/{name}");
    CHECK_STR(t(p, "/users/42"), "/users/{name}");  /* the pattern wins over {n} */
    CHECK_STR(t(p, "/users/alice/orders/7"), "/users/alice/orders/{n}");
    CHECK_STR(t(p, "/static/css/site.css"), "/static/*");
    CHECK_STR(t(p, "/static/"), "/static/*");
    CHECK_STR(t(p, "/users//orders"), "/users//orders");  /* {id} needs a segment */
    CHECK_INT(route_patterns_add(p, "users", err, sizeof err), -1);
    CHECK_INT(route_patterns_add(p, "/a/*/b", err, sizeof err), -1);
    CHECK_INT(route_patterns_add(p, "/a*", err, sizeof err), -1);
    route_patterns_free(p);
}

static void test_cut_to_capacity(void)
{
    char small[8];
    size_t n = route_template(NULL, "/users/123/abc", 14, small, sizeof small);
    CHECK_INT(n, 7);
    CHECK_STR(small, "/users/");
}

static void test_cap_per_host(void)
{
    struct route_cap *c = route_cap_new(2, 0);
    CHECK_INT(route_cap_admit(c, "a", 1, "/x", 2, 1), 1);
    CHECK_INT(route_cap_admit(c, "a", 1, "/y", 2, 1), 1);
    CHECK_INT(route_cap_admit(c, "a", 1, "/z", 2, 1), 0);
    CHECK_INT(route_cap_admit(c, "a", 1, "/x", 2, 1), 1);   /* seen: still kept */
    CHECK_INT(route_cap_admit(c, "b", 1, "/z", 2, 1), 1);   /* another host, its own count */
    for (int i = 0; i < 500; i++) {
        char r[16];
        int n = snprintf(r, sizeof r, "/r%d", i);
        CHECK_INT(route_cap_admit(c, "h", 1, r, (size_t)n, 1), i < 2);
    }
    route_cap_free(c);
}

static void test_cap_counts_and_top(void)
{
    struct route_cap *c = route_cap_new(2, 0);
    for (int i = 0; i < 5; i++)
        route_cap_admit(c, "a", 1, "/x", 2, 1);
    for (int i = 0; i < 3; i++)
        route_cap_admit(c, "a", 1, "/y", 2, 1);
    for (int i = 0; i < 4; i++)
        route_cap_admit(c, "a", 1, i % 2 ? "/z" : "/w", 2, 1); /* beyond the cap */
    route_cap_admit(c, "b", 1, "/x", 2, 1);
    struct route_count top[3];
    CHECK_INT(route_cap_top(c, top, 3), 3);
    CHECK_STR(top[0].route, "/x");
    CHECK_STR(top[0].host, "a");
    CHECK_INT(top[0].count, 5);
    CHECK_STR(top[1].route, ROUTE_OTHER);
    CHECK_INT(top[1].count, 4);
    CHECK_STR(top[2].route, "/y");
    struct route_count all[10];
    CHECK_INT(route_cap_top(c, all, 10), 4);
    CHECK_INT(all[3].count, 1);
    route_cap_free(c);
}

/* Hosts come from clients: however many they name, the pairs kept stay
 * under the total bound, and the extra exchanges count as {other}. */
static void test_cap_total_bound(void)
{
    struct route_cap *c = route_cap_new(2, 10);
    CHECK_INT(route_cap_admit(c, "a", 1, "/x", 2, 1), 1);
    CHECK_INT(route_cap_admit(c, "a", 1, "/y", 2, 1), 1);
    CHECK_INT(route_cap_admit(c, "a", 1, "/z", 2, 1), 0);  /* a's {other} */
    int kept = 0;
    for (int i = 0; i < 5000; i++) {
        char h[16];
        int n = snprintf(h, sizeof h, "h%d.example", i);
        kept += route_cap_admit(c, h, (size_t)n, "/", 1, 1);
    }
    CHECK_INT(kept, 7);                                     /* 10 pairs in all */
    CHECK_INT(route_cap_admit(c, "a", 1, "/x", 2, 1), 1);   /* known pairs still count */
    CHECK_INT(route_cap_admit(c, "a", 1, "/w", 2, 1), 0);   /* into a's {other} */
    struct route_count all[20];
    CHECK_INT(route_cap_top(c, all, 20), 10);
    uint64_t other = 0;
    for (int i = 0; i < 10; i++)
        if (strcmp(all[i].route, ROUTE_OTHER) == 0)
            other += all[i].count;
    CHECK_INT(other, 2);
    route_cap_free(c);
}

int main(void)
{
    RUN(test_numbers);
    RUN(test_uuids);
    RUN(test_hex);
    RUN(test_tokens);
    RUN(test_user_patterns);
    RUN(test_cut_to_capacity);
    RUN(test_cap_per_host);
    RUN(test_cap_counts_and_top);
    RUN(test_cap_total_bound);
    return unit_summary("route");
}
