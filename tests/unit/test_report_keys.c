/* Unit tests for report_keys: dense numbering in order of arrival, lookups
 * without adding, keys with NUL bytes, and growth past many index resizes. */
#include "report_keys.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_numbers_in_order_and_found_again(void)
{
    struct report_keys *k = report_keys_new();
    CHECK_INT(report_keys_find(k, "a", 1, 0), -1);
    CHECK_INT(report_keys_count(k), 0);
    CHECK_INT(report_keys_find(k, "a", 1, 1), 0);
    CHECK_INT(report_keys_find(k, "a\0b", 3, 1), 1);   /* NUL bytes are part of a key */
    CHECK_INT(report_keys_find(k, "", 0, 1), 2);
    CHECK_INT(report_keys_find(k, "a", 1, 1), 0);
    CHECK_INT(report_keys_find(k, "a\0b", 3, 0), 1);
    CHECK_INT(report_keys_find(k, "a\0c", 3, 0), -1);
    CHECK_INT(report_keys_count(k), 3);
    size_t len = 99;
    const char *s = report_keys_get(k, 1, &len);
    CHECK_INT(len, 3);
    CHECK(memcmp(s, "a\0b", 3) == 0);
    report_keys_free(k);
}

static void test_many_keys(void)
{
    struct report_keys *k = report_keys_new();
    char buf[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(buf, sizeof buf, "key-%d", i);
        if (report_keys_find(k, buf, (size_t)n, 1) != i) {
            CHECK_INT(report_keys_find(k, buf, (size_t)n, 0), i);
            break;
        }
    }
    CHECK_INT(report_keys_count(k), 100000);
    for (int i = 0; i < 100000; i += 997) {
        int n = snprintf(buf, sizeof buf, "key-%d", i);
        CHECK_INT(report_keys_find(k, buf, (size_t)n, 0), i);
        size_t len;
        const char *s = report_keys_get(k, (size_t)i, &len);
        CHECK(len == (size_t)n && memcmp(s, buf, len) == 0);
    }
    report_keys_free(k);
    report_keys_free(NULL);
}

static void test_grow_values(void)
{
    size_t cap = 0;
    long *v = report_keys_grow_values(NULL, &cap, 0, sizeof *v);
    CHECK_INT(cap, 256);
    v[0] = 7;
    long *same = report_keys_grow_values(v, &cap, 255, sizeof *v);
    CHECK(same == v); /* fits: untouched */
    CHECK_INT(cap, 256);
    v = report_keys_grow_values(v, &cap, 256, sizeof *v);
    CHECK_INT(cap, 512);
    v = report_keys_grow_values(v, &cap, 5000, sizeof *v);
    CHECK_INT(cap, 8192);
    v[5000] = 9;
    CHECK_INT(v[0], 7); /* kept across moves */
    free(v);
}

int main(void)
{
    RUN(test_grow_values);
    RUN(test_numbers_in_order_and_found_again);
    RUN(test_many_keys);
    return unit_summary("report_keys");
}
