/*
 * conn — one client connection and the exchanges on it: reading and
 * validating requests, choosing the upstream, applying rules and faults,
 * relaying responses, pipelining (one exchange at a time, answers in order),
 * keep-alive, CONNECT and Upgrade tunnels, timeouts, and recording each
 * finished exchange. Runs on its worker's loop only.
 */
#ifndef STATUSPROXY_CONN_H
#define STATUSPROXY_CONN_H

#include <uv.h>

struct worker;
struct conn;

/* Accept a pending connection on SERVER into a new conn on W's loop.
 * Returns 0 or a libuv error. */
int conn_accept(struct worker *w, uv_stream_t *server);

/* The worker is stopping: an idle connection closes now, a busy one after
 * its current exchange. */
void conn_shutdown(struct conn *c);

/* Close now, whatever the state (the end of the stop grace period). */
void conn_abort(struct conn *c);

/* The next connection in the worker's list, for walking it. */
struct conn *conn_next(struct conn *c);

#endif
