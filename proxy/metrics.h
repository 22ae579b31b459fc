/*
 * metrics — live counters for /metrics and /stats. Each worker counts into
 * its own metrics_local without locks; a timer on the worker publishes the
 * deltas into the shared struct metrics under its mutex; the admin API
 * renders the shared totals. Rendering is pure text, unit-testable.
 */
#ifndef STATUSPROXY_METRICS_H
#define STATUSPROXY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"

struct metrics;       /* shared totals */
struct metrics_local; /* one worker's deltas */

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
struct metrics_local *metrics_local_new(void);
void metrics_local_free(struct metrics_local *l);

/* Count a finished exchange (final/upstream code, rule, error, duration);
 * the rule name is cut as the audit log cuts it (AUDIT_MAX_RULE).
 * ALSO_RULE (or NULL) is a second rule that acted on it: the request rule
 * when a response rule acted too; it counts a hit but not the exchange. */
void metrics_record(struct metrics_local *l, const struct audit_entry *e, const char *also_rule);
void metrics_add_dropped(struct metrics_local *l, uint64_t n);
void metrics_set_connections(struct metrics_local *l, unsigned n);
/* Move L's deltas into M (takes M's lock briefly). UPSTREAMS: live
 * upstream connections of that worker. */
void metrics_publish(struct metrics_local *l, struct metrics *m, unsigned upstreams);

/* Prometheus text exposition of M; DROPPED_DB: records the audit writer
 * lost (added to those counted here). Caller frees. */
char *metrics_prometheus(struct metrics *m, uint64_t dropped_db);
/* {"since": ISO, "codes": {"200": n}, "classes": {...}, "schemes": {"http": n},
 *  "upstream_errors": {...},
 *  "rules": {...}, "dropped": n, "requests": n, "active_connections": n}. Caller frees. */
char *metrics_stats_json(struct metrics *m, uint64_t dropped_db);

/* Is ERROR (a record's error) an upstream failure, counted in
 * statusproxy_upstream_errors_total? */
int metrics_is_upstream_error(const char *error);

#endif
