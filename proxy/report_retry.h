/*
 * report_retry — `report --by retry` (DESIGN §11): how clients retried after
 * a 429 or 5xx, read from the raw rows (the aggregates keep no client).
 * One row per (client, method, host, route) that received at least one 429
 * or 5xx: failures, retries (requests of the key within 5 minutes after a
 * failure ended), premature (retries sent before that failure's Retry-After
 * allowed), min_gap_ms (shortest failure-to-retry gap), recovered (a 2xx or
 * 3xx came after the last failure). Each file's rows are read in the order
 * written; several files (one per proxy, maybe of the same period) are
 * merged by the rows' start times.
 */
#ifndef STATUSPROXY_REPORT_RETRY_H
#define STATUSPROXY_REPORT_RETRY_H

#include <sqlite3.h>
#include <stdint.h>

#include "report.h"

#define REPORT_RETRY_WINDOW_MS 300000  /* a request this soon after a failure is a retry */

struct report_retry;

struct report_retry *report_retry_new(void);
/* Read the raw rows of SRCS[0..n) in O's range and filters, merged by start
 * time (each has the sp_glob SQL function); *RAW grows by how many of them
 * hold raw rows at all. Returns 0 or -1 with a message in ERR. */
int report_retry_scan(struct report_retry *rt, sqlite3 *const *srcs, size_t n,
                      const struct report_options *o, uint64_t *raw, char *err, size_t errlen);
/* The rows, sorted by failures (most first), then the key; TOP: 0 for all. */
void report_retry_result(const struct report_retry *rt, size_t top, struct report_result *out);
void report_retry_free(struct report_retry *rt);

#endif
