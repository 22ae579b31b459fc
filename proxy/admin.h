/*
 * admin — the admin API on its own address (DESIGN §7): /healthz, /metrics,
 * /stats, /rules (GET, PUT), /rules/NAME/enable|disable, and the live page
 * at /. Runs on the main thread's loop; reads counters through metrics and
 * the audit writer, and reaches the rules only through the operations its
 * starter hands it (struct admin_ops), so it never calls back into the server.
 */
#ifndef STATUSPROXY_ADMIN_H
#define STATUSPROXY_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "options.h"

struct admin;
struct audit;
struct metrics;
struct rules;
struct rules_diags;

/* What the admin API needs from whoever runs it: plain values where a value
 * suffices, callbacks (with CTX) where the answer changes or an action is
 * taken. All are used on the loop's thread only. */
struct admin_ops {
    const struct run_options *opts; /* tokens and timeouts */
    struct metrics *metrics;        /* counters for /metrics and /stats */
    struct audit *audit;            /* lost records, errors and routes; NULL without one */
    void *ctx;
    /* The rule set in force, with a reference for the caller (NULL when none). */
    struct rules *(*current_rules)(void *ctx);
    /* Parse TEXT and swap it in whole; on errors keep the old set and return
     * -1 with DIAGS filled. */
    int (*replace_rules)(void *ctx, const char *text, size_t len, struct rules_diags *diags);
};

/* Listen on ADDR. OPS is copied. Returns NULL with a message in ERR when it cannot. */
struct admin *admin_start(const struct admin_ops *ops, uv_loop_t *loop,
                          const struct listen_addr *addr, char *err, size_t errlen);
/* Stop listening and close admin connections (the loop may then end). NULL is fine. */
void admin_stop(struct admin *a);
/* Free after the loop has run the close callbacks. NULL is fine. */
void admin_free(struct admin *a);

#endif
