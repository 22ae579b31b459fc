/*
 * libFuzzer target for the value parsers of flags, rule files and the
 * report: durations, byte sizes, rates (units.c) and the report's --since /
 * --until times (report_parse_time). Any bytes must parse or fail cleanly,
 * and what parses must format back to a text that parses to the same value.
 *
 *   make fuzz   (or: make build/fuzz/fuzz_units && build/fuzz/fuzz_units)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "units.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char buf[64];
    uint64_t v, again;
    if (units_parse_duration(s, size, &v) == 0) {
        units_format_duration(v, buf, sizeof buf);
        if (units_parse_duration(buf, strlen(buf), &again) != 0 || again != v)
            abort(); /* the formatted duration must read back */
    }
    if (units_parse_bytes(s, size, &v) == 0) {
        units_format_bytes(v, buf, sizeof buf);
        if (units_parse_bytes(buf, strlen(buf), &again) != 0 || again != v)
            abort();
    }
    if (units_parse_rate(s, size, &v) == 0 && v == 0)
        abort(); /* a rate is never 0 */

    /* report_parse_time reads a C string, as argv gives it. */
    char *t = malloc(size + 1);
    memcpy(t, data, size);
    t[size] = 0;
    int64_t now = 1795000000000LL, out = 0;
    /* Years 0000-9999 only: the result stays within about +-8000 years of 1970. */
    const int64_t span = 8100LL * 366 * 86400000;
    if (report_parse_time(t, now, &out) == 0 && (out < -span || out > span))
        abort();
    uint64_t back;
    if (units_parse_duration(t, size, &back) == 0 && strlen(t) == size &&
        report_parse_time(t, now, &out) == 0 && (out < 0 || out > now))
        abort(); /* a duration back from now clamps at the epoch */
    free(t);
    return 0;
}
