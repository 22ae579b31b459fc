/*
 * units — the value syntaxes shared by flags and rule files:
 * durations ("250ms", "5s", "2m", "1h", "7d"), byte sizes ("1024", "64KB",
 * "1MiB") and rates ("64KB/s"). Pure functions; no I/O.
 */
#ifndef STATUSPROXY_UNITS_H
#define STATUSPROXY_UNITS_H

#include <stddef.h>
#include <stdint.h>

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
