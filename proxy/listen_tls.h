/*
 * listen_tls — the TLS server config of --tls-listen (DESIGN §9), built once
 * at start and shared by the workers: from --tls-cert/--tls-key, or a
 * certificate minted from the local CA for `localhost`, the listen address
 * and every --tls-name. The CA is loaded by intercept.c's function (or taken
 * from interception when that is on), never here.
 */
#ifndef STATUSPROXY_LISTEN_TLS_H
#define STATUSPROXY_LISTEN_TLS_H

#include <stddef.h>

struct run_options;

/* Build O->listen_tls when --tls-listen is given. Returns 0, or -1 with a
 * one-line ERR naming the flag (for exit 2). Call after intercept_setup. */
int listen_tls_setup(struct run_options *o, char *err, size_t errlen);

/* Free what listen_tls_setup built (after every worker stopped). */
void listen_tls_teardown(struct run_options *o);

#endif
