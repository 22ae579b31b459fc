/*
 * sqlfn — the SQL functions statusproxy's own queries use, registered on a
 * connection: sp_route(path) (route.c's templating, without user patterns:
 * what migration 4 gives old raw rows), sp_hist_merge(a, b) (the writer's
 * upsert of histograms), the aggregate sp_hist_sum(h) and sp_hist_ms(h, q)
 * (a quantile in ms, NULL for no data) for reports.
 */
#ifndef STATUSPROXY_SQLFN_H
#define STATUSPROXY_SQLFN_H

#include <sqlite3.h>

/* Register them on DB. Returns 0, or -1 (sqlite3_errmsg(DB) says why). */
int sqlfn_register(sqlite3 *db);

#endif
