/*
 * report_group — sums aggregate rows by key in memory for a report: the
 * rows of minute_stats a view needs are read in storage order and summed
 * here in a hash table (counts added, histograms merged), which is several
 * times cheaper than SQLite's GROUP BY, whose sorter has to order a
 * million rows of text keys first.
 */
#ifndef STATUSPROXY_REPORT_GROUP_H
#define STATUSPROXY_REPORT_GROUP_H

#include <sqlite3.h>

struct report_group;

struct report_group *report_group_new(void);
/* Add the current row of ST: columns 0..NKEY-1 are the key (integers, text
 * or NULL), column NKEY the count, column NKEY + 1 a histogram BLOB or NULL. */
void report_group_add(struct report_group *g, sqlite3_stmt *st, int nkey);
/* Run INS once per group with the key bound to ?2..?(NKEY + 1), the count
 * to ?(NKEY + 2) and the merged histogram to ?(NKEY + 3) (?1 is the
 * caller's). Returns 0, or -1 when a step failed. */
int report_group_flush(const struct report_group *g, sqlite3_stmt *ins, int nkey);
void report_group_free(struct report_group *g);

#endif
