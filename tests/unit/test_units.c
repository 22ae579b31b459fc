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

/* units_parse_u64 on a whole NUL-terminated S; -1 on refusal, else 0 with *V set. */
static int whole(const char *s, uint64_t max, uint64_t *v)
{
    *v = 12345; /* must be left alone on refusal */
    return units_parse_u64(s, strlen(s), max, v);
}

static void test_parse_u64(void)
{
    uint64_t v;
    CHECK_INT(whole("0", UINT64_MAX, &v), 0);
    CHECK_INT(v, 0);
    CHECK_INT(whole("42", UINT64_MAX, &v), 0);
    CHECK_INT(v, 42);
    CHECK_INT(whole("007", UINT64_MAX, &v), 0); /* leading zeros are digits */
    CHECK_INT(v, 7);
    CHECK_INT(whole("18446744073709551615", UINT64_MAX, &v), 0);
    CHECK(v == UINT64_MAX);
    CHECK_INT(whole("18446744073709551616", UINT64_MAX, &v), -1); /* overflow */
    CHECK_INT(v, 12345);
    CHECK_INT(whole("99999999999999999999999", UINT64_MAX, &v), -1);
    CHECK_INT(whole("", UINT64_MAX, &v), -1);
    CHECK_INT(whole("12a", UINT64_MAX, &v), -1);
    CHECK_INT(whole("-1", UINT64_MAX, &v), -1);
    CHECK_INT(whole("+1", UINT64_MAX, &v), -1);
    CHECK_INT(whole(" 1", UINT64_MAX, &v), -1);
    CHECK_INT(whole("65535", 65535, &v), 0); /* MAX itself is allowed */
    CHECK_INT(v, 65535);
    CHECK_INT(whole("65536", 65535, &v), -1);
    CHECK_INT(whole("0065535", 65535, &v), 0);
    CHECK_INT(whole("1", 0, &v), -1);
    CHECK_INT(whole("0", 0, &v), 0);
    CHECK_INT(whole("00", 0, &v), 0);
}

static void test_scan_u64(void)
{
    uint64_t v = 0;
    CHECK_INT(units_scan_u64("123abc", 6, 0, UINT64_MAX, &v), 3);
    CHECK_INT(v, 123);
    CHECK_INT(units_scan_u64("12345", 3, 0, UINT64_MAX, &v), 3); /* LEN bounds it */
    CHECK_INT(v, 123);
    CHECK_INT(units_scan_u64("1234567_x", 9, 6, UINT64_MAX, &v), 6); /* so does MAX_DIGITS */
    CHECK_INT(v, 123456);
    CHECK_INT(units_scan_u64("0001_x", 6, 6, UINT64_MAX, &v), 4);
    CHECK_INT(v, 1);
    CHECK_INT(units_scan_u64("x1", 2, 0, UINT64_MAX, &v), 0);
    CHECK_INT(units_scan_u64("", 0, 0, UINT64_MAX, &v), 0);
    CHECK_INT(units_scan_u64("300", 3, 0, 255, &v), 0); /* over MAX */
    CHECK_INT(units_scan_u64("255", 3, 0, 255, &v), 3);
    CHECK_INT(v, 255);
    CHECK_INT(units_scan_u64("1844674407370955161699", 22, 0, UINT64_MAX, &v), 0);
    CHECK_INT(units_scan_u64("1844674407370955161699", 22, 20, UINT64_MAX, &v), 0);
    CHECK_INT(units_scan_u64("1844674407370955161699", 22, 19, UINT64_MAX, &v), 19);
    CHECK(v == 1844674407370955161ull);
}

int main(void)
{
    RUN(test_parse_u64);
    RUN(test_scan_u64);
    RUN(test_durations_valid);
    RUN(test_durations_invalid);
    RUN(test_duration_overflow_by_unit);
    RUN(test_bytes);
    RUN(test_rates);
    RUN(test_format);
    return unit_summary("units");
}
