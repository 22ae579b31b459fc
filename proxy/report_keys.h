/*
 * report_keys — the hash table the in-memory report passes share
 * (report_group.c, report_retry.c): byte-string keys, each copied once and
 * numbered densely from 0 in order of arrival, so a caller keeps its sums
 * in a plain array indexed by that number.
 */
#ifndef STATUSPROXY_REPORT_KEYS_H
#define STATUSPROXY_REPORT_KEYS_H

#include <stddef.h>

struct report_keys;

struct report_keys *report_keys_new(void);
/* The number of KEY[0..n), added when missing and ADD; -1 when missing and
 * not ADD. A new key's number is the count of keys before it. */
long report_keys_find(struct report_keys *k, const char *key, size_t n, int add);
size_t report_keys_count(const struct report_keys *k);
/* Key number I (not NUL-terminated) and its length in *LEN. */
const char *report_keys_get(const struct report_keys *k, size_t i, size_t *len);
/* Room for element I in VALUES, the caller's array of *CAP elements of SIZE
 * bytes kept beside the keys (one per key number): doubles *CAP, from 256,
 * until I fits. Returns the array, moved or not; new room is uninitialised. */
void *report_keys_grow_values(void *values, size_t *cap, size_t i, size_t size);
void report_keys_free(struct report_keys *k);

#endif
