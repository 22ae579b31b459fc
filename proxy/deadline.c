/*
 * deadline — lazily moved timeouts over one libuv timer each.
 */
#include "deadline.h"

#include "util.h"

static void on_timer(uv_timer_t *t)
{
    struct deadline *d = t->data;
    uint64_t now = uv_now(t->loop);
    d->wake = 0;
    if (d->due == 0)
        return;
    if (now < d->due) {
        /* Pushed back since the timer was set: wait for the rest. */
        d->wake = d->due;
        uv_timer_start(t, on_timer, d->due - now, 0);
        return;
    }
    d->due = 0;
    d->cb(d);
}

void deadline_init(uv_loop_t *loop, struct deadline *d, deadline_cb cb, void *data)
{
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->due = d->wake = 0;
    d->cb = cb;
    d->data = data;
}

void deadline_set(struct deadline *d, uint64_t ms)
{
    uint64_t now = uv_now(d->timer.loop);
    d->due = u64_add_sat(now, ms ? ms : 1);
    if (d->wake == 0 || d->due < d->wake) {
        d->wake = d->due;
        uv_timer_start(&d->timer, on_timer, d->due - now, 0);
    }
}

void deadline_clear(struct deadline *d)
{
    d->due = 0;
}

void deadline_close(struct deadline *d, uv_close_cb cb)
{
    d->due = d->wake = 0;
    uv_close((uv_handle_t *)&d->timer, cb);
}
