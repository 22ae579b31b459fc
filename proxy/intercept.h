/*
 * intercept — which CONNECT targets are decrypted (--intercept,
 * --intercept-hosts) and the TLS configs interception needs (DESIGN §9):
 * the local CA loaded once at start, the server config that mints leaves
 * from it (shared by every worker), and the client config origins are
 * verified with. The connection-side switch to TLS is conn.c's.
 *
 * intercept_server_config is the part a TLS listener reuses: the server
 * config for the CA in a directory.
 */
#ifndef STATUSPROXY_INTERCEPT_H
#define STATUSPROXY_INTERCEPT_H

#include <stddef.h>

struct run_options;
struct tls_ca;
struct tls_engine_config;

/* Is interception on at all (--intercept or --intercept-hosts)? */
int intercept_enabled(const struct run_options *o);

/* Is a CONNECT to HOST (no port, no brackets) decrypted? */
int intercept_wanted(const struct run_options *o, const char *host);

/* The CA directory: DIR when given, else $HOME/.statusproxy. Returns a new
 * string, or NULL when HOME is not set either. */
char *intercept_ca_dir(const char *dir);

/* Load the CA in DIR (NULL: the default) and build a server config that
 * mints a leaf per SNI name from it. On success *CA receives the CA (it must
 * outlive the config: free the config first, then the CA). Returns NULL and
 * a one-line ERR naming the file (or the flag) on failure. */
struct tls_engine_config *intercept_server_config(const char *dir, struct tls_ca **ca, char *err,
                                                  size_t errlen);

/* When interception is on: build O's intercept_ca, intercept_server and
 * intercept_client. Returns 0, or -1 with ERR ("--flag: ...") for exit 2. */
int intercept_setup(struct run_options *o, char *err, size_t errlen);

/* Free what intercept_setup built (after every worker stopped). */
void intercept_teardown(struct run_options *o);

#endif
