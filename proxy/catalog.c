/*
 * catalog — the reference list as a table, and classification.
 * The names and marks are those of shared/seed/http-status-codes.txt; a unit
 * test checks the table against that file line by line.
 */
#include "catalog.h"

#include <stdio.h>
#include <string.h>

#define W CATALOG_WEBDAV
#define X CATALOG_EXPERIMENTAL
#define D CATALOG_DEPRECATED
#define U CATALOG_UNUSED

static const struct catalog_entry entries[] = {
    {100, "Continue", 0, NULL},
    {101, "Switching Protocols", 0, NULL},
    {102, "Processing", W, NULL},
    {103, "Early Hints", 0, NULL},
    {200, "OK", 0, NULL},
    {201, "Created", 0, NULL},
    {202, "Accepted", 0, NULL},
    {203, "Non-Authoritative Information", 0, NULL},
    {204, "No Content", 0, NULL},
    {205, "Reset Content", 0, NULL},
    {206, "Partial Content", 0, NULL},
    {207, "Multi-Status", W, NULL},
    {208, "Already Reported", W, NULL},
    {226, "IM Used", 0, "HTTP Delta encoding"},
    {300, "Multiple Choices", 0, NULL},
    {301, "Moved Permanently", 0, NULL},
    {302, "Found", 0, NULL},
    {303, "See Other", 0, NULL},
    {304, "Not Modified", 0, NULL},
    {305, "Use Proxy", D, NULL},
    {306, "unused", U, NULL},
    {307, "Temporary Redirect", 0, NULL},
    {308, "Permanent Redirect", 0, NULL},
    {400, "Bad Request", 0, NULL},
    {401, "Unauthorized", 0, NULL},
    {402, "Payment Required", X, NULL},
    {403, "Forbidden", 0, NULL},
    {404, "Not Found", 0, NULL},
    {405, "Method Not Allowed", 0, NULL},
    {406, "Not Acceptable", 0, NULL},
    {407, "Proxy Authentication Required", 0, NULL},
    {408, "Request Timeout", 0, NULL},
    {409, "Conflict", 0, NULL},
    {410, "Gone", 0, NULL},
    {411, "Length Required", 0, NULL},
    {412, "Precondition Failed", 0, NULL},
    {413, "Payload Too Large", 0, NULL},
    {414, "URI Too Long", 0, NULL},
    {415, "Unsupported Media Type", 0, NULL},
    {416, "Range Not Satisfiable", 0, NULL},
    {417, "Expectation Failed", 0, NULL},
    {418, "I'm a teapot", 0, NULL},
    {421, "Misdirected Request", 0, NULL},
    {422, "Unprocessable Entity", W, NULL},
    {423, "Locked", W, NULL},
    {424, "Failed Dependency", W, NULL},
    {425, "Too Early", X, NULL},
    {426, "Upgrade Required", 0, NULL},
    {428, "Precondition Required", 0, NULL},
    {429, "Too Many Requests", 0, NULL},
    {431, "Request Header Fields Too Large", 0, NULL},
    {451, "Unavailable For Legal Reasons", 0, NULL},
    {500, "Internal Server Error", 0, NULL},
    {501, "Not Implemented", 0, NULL},
    {502, "Bad Gateway", 0, NULL},
    {503, "Service Unavailable", 0, NULL},
    {504, "Gateway Timeout", 0, NULL},
    {505, "HTTP Version Not Supported", 0, NULL},
    {506, "Variant Also Negotiates", 0, NULL},
    {507, "Insufficient Storage", W, NULL},
    {508, "Loop Detected", W, NULL},
    {510, "Not Extended", 0, NULL},
    {511, "Network Authentication Required", 0, NULL},
};

#undef W
#undef X
#undef D
#undef U

static const struct {
    const char *name;
    unsigned bit;
} mark_names[] = {
    {"WebDAV", CATALOG_WEBDAV},
    {"experimental", CATALOG_EXPERIMENTAL},
    {"deprecated", CATALOG_DEPRECATED},
    {"unused", CATALOG_UNUSED},
};

const struct catalog_entry *catalog_entries(size_t *count)
{
    *count = sizeof entries / sizeof entries[0];
    return entries;
}

const struct catalog_entry *catalog_lookup(int code)
{
    /* Binary search: the table is sorted by code. */
    size_t lo = 0, hi = sizeof entries / sizeof entries[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entries[mid].code == code)
            return &entries[mid];
        if (entries[mid].code < code)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int catalog_class(int code)
{
    return (code >= 100 && code <= 599) ? code / 100 : 0;
}

const char *catalog_class_name(int code)
{
    static const char *const names[] = {"invalid", "1xx", "2xx", "3xx", "4xx", "5xx"};
    return names[catalog_class(code)];
}

enum catalog_kind catalog_kind(int code)
{
    if (catalog_class(code) == 0)
        return CATALOG_INVALID;
    return catalog_lookup(code) ? CATALOG_STANDARD : CATALOG_NONSTANDARD;
}

const char *catalog_kind_name(enum catalog_kind kind)
{
    switch (kind) {
    case CATALOG_STANDARD: return "standard";
    case CATALOG_NONSTANDARD: return "non-standard";
    case CATALOG_INVALID: break;
    }
    return "invalid";
}

const char *catalog_reason(int code)
{
    static const char *const generic[] = {"Invalid Status", "Unknown Informational",
                                          "Unknown Success", "Unknown Redirection",
                                          "Unknown Client Error", "Unknown Server Error"};
    const struct catalog_entry *e = catalog_lookup(code);
    if (e && !(e->marks & CATALOG_UNUSED))
        return e->name;
    return generic[catalog_class(code)];
}

enum catalog_body catalog_body(int code)
{
    if (catalog_class(code) == 1 || code == 204 || code == 304)
        return CATALOG_BODY_NONE;
    if (code == 205)
        return CATALOG_BODY_EMPTY;
    return CATALOG_BODY_ALLOWED;
}

void catalog_marks_text(unsigned marks, char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < sizeof mark_names / sizeof mark_names[0]; i++) {
        if (!(marks & mark_names[i].bit))
            continue;
        int n = snprintf(buf + used, len > used ? len - used : 0, "%s%s", used ? " " : "",
                         mark_names[i].name);
        if (n > 0)
            used += (size_t)n;
    }
}

size_t catalog_mark_count(void)
{
    return sizeof mark_names / sizeof mark_names[0];
}

const char *catalog_mark_name(size_t i, unsigned *bit)
{
    if (bit)
        *bit = mark_names[i].bit;
    return mark_names[i].name;
}
