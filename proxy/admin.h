/*
 * admin — the admin API on its own address (DESIGN §7): /healthz, /metrics,
 * /stats, /rules (GET, PUT), /rules/NAME/enable|disable, and the live page
 * at /. Runs on the main thread's loop; reads counters through metrics and
 * changes rules through the server.
 */
#ifndef STATUSPROXY_ADMIN_H
#define STATUSPROXY_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "options.h"

struct server;
struct admin;

/* Listen on ADDR. Returns NULL with a message in ERR when it cannot. */
struct admin *admin_start(struct server *srv, uv_loop_t *loop, const struct listen_addr *addr,
                          char *err, size_t errlen);
/* Stop listening and close admin connections (the loop may then end). NULL is fine. */
void admin_stop(struct admin *a);
/* Free after the loop has run the close callbacks. NULL is fine. */
void admin_free(struct admin *a);

#endif
