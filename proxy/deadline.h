/*
 * deadline — a libuv timer for timeouts that are pushed back far more often
 * than they expire (idle, header, response and pool timeouts). Moving or
 * clearing a deadline only writes a number; the timer itself is restarted
 * only when it fires early (then it waits for the rest) or when a deadline
 * moves earlier than the pending wake-up. A request then costs no timer
 * operations in the common case instead of several heap updates.
 */
#ifndef STATUSPROXY_DEADLINE_H
#define STATUSPROXY_DEADLINE_H

#include <stdint.h>
#include <uv.h>

struct deadline;
typedef void (*deadline_cb)(struct deadline *d);

struct deadline {
    uv_timer_t timer;   /* embedded; timer.data is ours */
    uint64_t due;       /* loop time to expire at; 0: not armed */
    uint64_t wake;      /* loop time the timer is set for; 0: timer idle */
    deadline_cb cb;
    void *data;         /* the owner's */
};

void deadline_init(uv_loop_t *loop, struct deadline *d, deadline_cb cb, void *data);
/* Expire MS milliseconds from now (replacing any earlier setting). */
void deadline_set(struct deadline *d, uint64_t ms);
/* Expire never (until set again). */
void deadline_clear(struct deadline *d);
/* Close the timer handle; CB runs as for uv_close. */
void deadline_close(struct deadline *d, uv_close_cb cb);

#endif
