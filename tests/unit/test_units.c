/* Unit tests for units: durations, byte sizes, rates. */
#include "units.h"
#include "unit.h"

static uint64_t dur(const char *s, int *ok)
{
    uint64_t v = 0;
    *ok = units_parse_duration(s, strlen(s), &v) == 0;
    return v;
}

static void test_durations_valid(void)
{
    int ok;
    CHECK_INT(dur("250ms", &ok), 250);
    CHECK(ok);
    CHECK_INT(dur("5s", &ok), 5000);
    CHECK(ok);
    CHECK_INT(dur("2m", &ok), 120000);
    CHECK(ok);
    CHECK_INT(dur("1h", &ok), 3600000);
    CHECK(ok);
    CHECK_INT(dur("7d", &ok), 7 * 86400000LL);
    CHECK(ok);
    CHECK_INT(dur("0", &ok), 0);
    CHECK(ok);
    CHECK_INT(dur("0s", &ok), 0);
    CHECK(ok);
}

static void test_durations_invalid(void)
{
    const char *bad[] = {"", "5", "s", "-1s", "1.5s", "5 s", "5sec", "5S", "10x",
                         "99999999999999999999999d", "ms"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int ok;
        dur(bad[i], &ok);
        if (ok)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        CHECK(!ok);
    }
}

static void test_duration_overflow_by_unit(void)
{
    int ok;
    dur("300000000000000d", &ok);
    CHECK(!ok);
}

static void test_bytes(void)
{
    uint64_t v;
    CHECK_INT(units_parse_bytes("1024", 4, &v), 0);
    CHECK_INT(v, 1024);
    CHECK_INT(units_parse_bytes("64KB", 4, &v), 0);
    CHECK_INT(v, 65536);
    CHECK_INT(units_parse_bytes("1MiB", 4, &v), 0);
    CHECK_INT(v, 1048576);
    CHECK_INT(units_parse_bytes("2G", 2, &v), 0);
    CHECK_INT(v, 2147483648LL);
    CHECK_INT(units_parse_bytes("10B", 3, &v), 0);
    CHECK_INT(v, 10);
    CHECK_INT(units_parse_bytes("KB", 2, &v), -1);
    CHECK_INT(units_parse_bytes("1kb", 3, &v), -1);
    CHECK_INT(units_parse_bytes("-1", 2, &v), -1);
}

static void test_rates(void)
{
    uint64_t v;
    CHECK_INT(units_parse_rate("64KB/s", 6, &v), 0);
    CHECK_INT(v, 65536);
    CHECK_INT(units_parse_rate("100/s", 5, &v), 0);
    CHECK_INT(v, 100);
    CHECK_INT(units_parse_rate("0KB/s", 5, &v), -1);
    CHECK_INT(units_parse_rate("64KB", 4, &v), -1);
    CHECK_INT(units_parse_rate("/s", 2, &v), -1);
}

static void test_format(void)
{
    char buf[32];
    units_format_duration(1500, buf, sizeof buf);
    CHECK_STR(buf, "1500ms");
    units_format_duration(2000, buf, sizeof buf);
    CHECK_STR(buf, "2s");
    units_format_duration(7 * 86400000ULL, buf, sizeof buf);
    CHECK_STR(buf, "7d");
    units_format_duration(0, buf, sizeof buf);
    CHECK_STR(buf, "0ms");
    units_format_bytes(65536, buf, sizeof buf);
    CHECK_STR(buf, "64KB");
    units_format_bytes(1000, buf, sizeof buf);
    CHECK_STR(buf, "1000");
}

int main(void)
{
    RUN(test_durations_valid);
    RUN(test_durations_invalid);
    RUN(test_duration_overflow_by_unit);
    RUN(test_bytes);
    RUN(test_rates);
    RUN(test_format);
    return unit_summary("units");
}
