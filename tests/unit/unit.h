/*
 * unit.h — the unit-test harness: one function per behaviour, assertions
 * that print both values when they differ, one summary line per binary:
 *   "<suite>: N passed, M failed"
 * A test function fails when any of its checks fails; the binary exits 1
 * when any test failed.
 *
 *   static void test_something(void) { CHECK_INT(1 + 1, 2); }
 *   int main(void) { RUN(test_something); return unit_summary("catalog"); }
 */
#ifndef STATUSPROXY_UNIT_H
#define STATUSPROXY_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed_checks;
static int unit_passed, unit_failed;
static const char *unit_current = "";

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            unit_failed_checks++;                                                                  \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, unit_current,     \
                    #cond);                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_INT(got, want)                                                                       \
    do {                                                                                           \
        long long unit_g = (long long)(got), unit_w = (long long)(want);                           \
        if (unit_g != unit_w) {                                                                    \
            unit_failed_checks++;                                                                  \
            fprintf(stderr, "%s:%d: %s: %s == %lld, want %lld\n", __FILE__, __LINE__,              \
                    unit_current, #got, unit_g, unit_w);                                           \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *unit_g = (got), *unit_w = (want);                                              \
        if (!unit_g || !unit_w || strcmp(unit_g, unit_w) != 0) {                                   \
            unit_failed_checks++;                                                                  \
            fprintf(stderr, "%s:%d: %s: %s == \"%s\", want \"%s\"\n", __FILE__, __LINE__,          \
                    unit_current, #got, unit_g ? unit_g : "(null)", unit_w ? unit_w : "(null)");  \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int unit_before = unit_failed_checks;                                                      \
        unit_current = #fn;                                                                        \
        fn();                                                                                      \
        if (unit_failed_checks == unit_before)                                                     \
            unit_passed++;                                                                         \
        else                                                                                       \
            unit_failed++;                                                                         \
    } while (0)

static inline int unit_summary(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}

#endif
