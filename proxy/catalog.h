/*
 * catalog — the status-code catalogue of the reference list
 * (shared/seed/http-status-codes.txt) and the classification of any status:
 * its class (1xx..5xx), whether it is standard (listed), non-standard (in
 * 100-599 but not listed, e.g. 299, 499, 520) or invalid (outside 100-599),
 * and what the protocol says of its body. Pure data; no I/O.
 */
#ifndef STATUSPROXY_CATALOG_H
#define STATUSPROXY_CATALOG_H

#include <stddef.h>

/* Marks the reference list puts on a code. */
enum {
    CATALOG_WEBDAV = 1 << 0,
    CATALOG_EXPERIMENTAL = 1 << 1,
    CATALOG_DEPRECATED = 1 << 2,
    CATALOG_UNUSED = 1 << 3,
};

struct catalog_entry {
    int code;
    const char *name;   /* exactly as listed, e.g. "I'm a teapot" */
    unsigned marks;     /* CATALOG_* bits */
    const char *note;   /* a parenthesised remark that is not a mark, or NULL */
};

enum catalog_kind { CATALOG_STANDARD, CATALOG_NONSTANDARD, CATALOG_INVALID };

/* How a status constrains the message body (RFC 9110 §6.4.1, §15.3.6; RFC 9112 §6.3). */
enum catalog_body {
    CATALOG_BODY_ALLOWED, /* any framing */
    CATALOG_BODY_NONE,    /* 1xx, 204, 304: no content and no chunked framing */
    CATALOG_BODY_EMPTY,   /* 205: zero-length content, sent as Content-Length: 0 */
};

/* The listed entries in ascending code order; *count receives their number. */
const struct catalog_entry *catalog_entries(size_t *count);

/* The entry for CODE, or NULL when the code is not listed. */
const struct catalog_entry *catalog_lookup(int code);

/* 1..5 for codes in 100..599, 0 for invalid codes. */
int catalog_class(int code);

/* "1xx".."5xx" or "invalid". Static string. */
const char *catalog_class_name(int code);

enum catalog_kind catalog_kind(int code);
const char *catalog_kind_name(enum catalog_kind kind); /* "standard", "non-standard", "invalid" */

/* A reason phrase for a status the proxy writes itself: the listed name, else
 * a generic phrase for the class ("Unknown Success", ...). Static string. */
const char *catalog_reason(int code);

enum catalog_body catalog_body(int code);

/* Space-separated mark names ("WebDAV experimental ...") into BUF; "" when none. */
void catalog_marks_text(unsigned marks, char *buf, size_t len);

/* Number of mark names and each name by index, for JSON output. */
size_t catalog_mark_count(void);
const char *catalog_mark_name(size_t i, unsigned *bit);

#endif
