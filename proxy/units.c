/*
 * units — durations, byte sizes and rates, parsed strictly: no signs,
 * no spaces, no fractions, no overflow.
 */
#include "units.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

size_t units_scan_u64(const char *s, size_t len, size_t max_digits, uint64_t max,
                      uint64_t *out)
{
    if (max_digits && len > max_digits)
        len = max_digits;
    uint64_t v = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (d > max || v > (max - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (i)
        *out = v;
    return i;
}

int units_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (len == 0 || units_scan_u64(s, len, 0, max, &v) != len)
        return -1;
    *out = v;
    return 0;
}

static int mul_ok(uint64_t v, uint64_t m, uint64_t *out)
{
    if (m && v > UINT64_MAX / m)
        return -1;
    *out = v * m;
    return 0;
}

struct unit {
    const char *name;
    uint64_t factor;
};

static const struct unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

static const struct unit byte_units[] = {
    {"", 1},        {"B", 1},         {"K", 1024},      {"KB", 1024},
    {"KiB", 1024},  {"M", 1048576},   {"MB", 1048576},  {"MiB", 1048576},
    {"G", 1073741824}, {"GB", 1073741824}, {"GiB", 1073741824},
};

static int parse_with_units(const char *s, size_t len, const struct unit *units, size_t nunits,
                            uint64_t *out)
{
    uint64_t v;
    size_t n = units_scan_u64(s, len, 0, UINT64_MAX, &v);
    if (n == 0)
        return -1;
    const char *suffix = s + n;
    size_t slen = len - n;
    for (size_t i = 0; i < nunits; i++) {
        if (strlen(units[i].name) == slen && memcmp(units[i].name, suffix, slen) == 0)
            return mul_ok(v, units[i].factor, out);
    }
    return -1;
}

int units_parse_duration(const char *s, size_t len, uint64_t *out_ms)
{
    if (len == 1 && s[0] == '0') {
        *out_ms = 0;
        return 0;
    }
    return parse_with_units(s, len, duration_units, ARRAY_LEN(duration_units), out_ms);
}

int units_parse_bytes(const char *s, size_t len, uint64_t *out)
{
    return parse_with_units(s, len, byte_units, ARRAY_LEN(byte_units), out);
}

int units_parse_rate(const char *s, size_t len, uint64_t *out_bytes_per_s)
{
    if (len < 3 || memcmp(s + len - 2, "/s", 2) != 0)
        return -1;
    if (units_parse_bytes(s, len - 2, out_bytes_per_s) != 0 || *out_bytes_per_s == 0)
        return -1;
    return 0;
}

void units_format_duration(uint64_t ms, char *buf, size_t len)
{
    /* Largest unit that divides exactly; "ms" otherwise. */
    for (size_t i = ARRAY_LEN(duration_units); i-- > 1;) {
        uint64_t f = duration_units[i].factor;
        if (ms != 0 && ms % f == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / f), duration_units[i].name);
            return;
        }
    }
    snprintf(buf, len, "%llums", (unsigned long long)ms);
}

void units_format_bytes(uint64_t bytes, char *buf, size_t len)
{
    static const struct unit shown[] = {{"GB", 1073741824}, {"MB", 1048576}, {"KB", 1024}};
    for (size_t i = 0; i < ARRAY_LEN(shown); i++) {
        if (bytes != 0 && bytes % shown[i].factor == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(bytes / shown[i].factor),
                     shown[i].name);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)bytes);
}
