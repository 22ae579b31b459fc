/*
 * util — small helpers every module may use: the allocation policy (the
 * x* family aborts on exhaustion, so callers never NULL-check), a growable
 * string builder, case-insensitive comparisons and clocks.
 * Nothing here knows about the event loop, sockets or SQLite.
 */
#ifndef STATUSPROXY_UTIL_H
#define STATUSPROXY_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* Allocation: abort with a message on exhaustion; never return NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* A growable NUL-terminated byte string. Zero-initialise, append, free. */
struct sbuf {
    char *data;
    size_t len, cap;
};
/* Make room for EXTRA more bytes and the NUL (the appends' slow path). */
void sbuf_grow(struct sbuf *b, size_t extra);
/* The appends are inline: a head is a dozen of them per exchange, and with a
 * string constant the compiler folds strlen and the copy. */
static inline void sbuf_append(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap)
        sbuf_grow(b, n);
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_append(b, s, strlen(s));
}
static inline void sbuf_putc(struct sbuf *b, char c)
{
    sbuf_append(b, &c, 1);
}
/* Append V in decimal (cheaper than sbuf_printf on hot paths). */
void sbuf_putu(struct sbuf *b, uint64_t v);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
void sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
/* Append S as the inside of a JSON string (quotes not included). */
void sbuf_json_escape(struct sbuf *b, const char *s, size_t n);
/* Give the caller the string (never NULL) and reset the builder. */
char *sbuf_steal(struct sbuf *b);
void sbuf_reset(struct sbuf *b);
void sbuf_free(struct sbuf *b);

/* Copy the C string SRC into DST[0..dstlen), truncating; always terminated.
 * Returns the length written. (A plain copy: cheaper than snprintf "%s".) */
size_t str_copy(char *dst, size_t dstlen, const char *src);
/* Write V in lowercase hex into BUF (>= 17 bytes) and return its length. */
size_t str_hex(char *buf, uint64_t v);
/* Write V in decimal into BUF (>= 21 bytes) and return its length. */
size_t str_dec(char *buf, uint64_t v);

/* ASCII case-insensitive equality of A[0..alen) and the C string B. */
int str_ieq(const char *a, size_t alen, const char *b);
int str_ieq2(const char *a, size_t alen, const char *b, size_t blen);
/* Does the comma-separated token list LIST contain TOKEN (case-insensitive)? */
int str_list_has_token(const char *list, size_t len, const char *token);

/* Base64 (RFC 4648) of IN[0..n) into OUT as a C string; -1 when OUTLEN is short. */
int str_base64(const char *in, size_t n, char *out, size_t outlen);

/* Clocks. */
int64_t time_now_ms(void);       /* wall clock, Unix epoch milliseconds */
uint64_t time_mono_us(void);     /* monotonic, microseconds */
/* A + B, or UINT64_MAX when that overflows (durations from flags and rules
 * may be as large as any uint64_t). */
static inline uint64_t u64_add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
/* Format Unix milliseconds as ISO 8601 UTC "YYYY-MM-DDTHH:MM:SSZ" into BUF (>= 21 bytes). */
void time_format_iso(int64_t unix_ms, char *buf, size_t len);

#endif
