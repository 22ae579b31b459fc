/*
 * units — the value syntaxes shared by flags and rule files:
 * durations ("250ms", "5s", "2m", "1h", "7d"), byte sizes ("1024", "64KB",
 * "1MiB") and rates ("64KB/s"), and the one decimal-number reader the
 * other parsers share. Pure functions; no I/O.
 */
#ifndef STATUSPROXY_UNITS_H
#define STATUSPROXY_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* Read the decimal digits at the start of S[0..len), at most MAX_DIGITS of
 * them (0: no bound; the reading stops there even if more digits follow),
 * into *OUT. Returns how many digits were read: 0 when S does not start with
 * a digit or when the value read exceeds MAX (UINT64_MAX: only overflow
 * fails). Leading zeros are read as digits ("007" is 7, three digits). */
size_t units_scan_u64(const char *s, size_t len, size_t max_digits, uint64_t max,
                      uint64_t *out);

/* Parse all of S[0..len) as a decimal number no greater than MAX.
 * Returns 0, or -1 when S is empty, holds a non-digit, or exceeds MAX. */
int units_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

/* Parse a duration: digits then one of ms, s, m, h, d ("0" alone is allowed).
 * Stores milliseconds; returns 0, or -1 if S[0..len) is not a duration. */
int units_parse_duration(const char *s, size_t len, uint64_t *out_ms);

/* Parse a byte count: digits then an optional B, KB/KiB/K, MB/MiB/M, GB/GiB/G
 * (binary multiples: 1KB = 1024 bytes). Returns 0 or -1. */
int units_parse_bytes(const char *s, size_t len, uint64_t *out);

/* Parse a rate: a byte count followed by "/s". Must be > 0. Returns 0 or -1. */
int units_parse_rate(const char *s, size_t len, uint64_t *out_bytes_per_s);

/* Write the shortest exact duration text for MS ("1500ms", "2s", "7d") into BUF. */
void units_format_duration(uint64_t ms, char *buf, size_t len);

/* Write the shortest exact byte text ("512", "64KB", "1MB") into BUF. */
void units_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
