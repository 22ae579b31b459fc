/*
 * sender — the outgoing side of one stream. Pieces (references into read
 * chunks, small copies, static strings) are gathered into a batch and
 * submitted as one write on the stream's transport (one writev on TCP), so a
 * read that carried many body pieces costs one system call. The sender counts the bytes libuv has not
 * finished with, which is what backpressure decisions look at.
 */
#ifndef STATUSPROXY_SENDER_H
#define STATUSPROXY_SENDER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "chunk.h"
#include "transport.h"

struct send_batch;
struct sender;

/* Called after each submitted write completes; STATUS is 0 or a libuv error
 * (UV_ECANCELED when the transport was closed first). This is the
 * transport's "batch done" event: the owner looks at inflight here. */
typedef void (*sender_written_cb)(struct sender *s, int status);

struct sender {
    struct transport *tr;     /* where batches go */
    struct send_batch *cur;   /* being assembled; NULL when empty */
    size_t inflight;          /* bytes submitted and not yet completed */
    unsigned writes;          /* write requests in flight */
    uint64_t total;           /* bytes submitted over the sender's life */
    int error;                /* first failed submit (a libuv error), or 0 */
    sender_written_cb on_written;
};

void sender_init(struct sender *s, struct transport *tr, sender_written_cb on_written);

/* Queue N bytes at P inside chunk C (a reference is taken; no copy). */
void sender_ref(struct sender *s, struct chunk *c, const char *p, size_t n);
/* Queue a copy of N bytes at P. */
void sender_copy(struct sender *s, const void *p, size_t n);
/* Queue N bytes at P, which outlive the write (string literals). */
void sender_static(struct sender *s, const char *p, size_t n);

/* Bytes queued but not yet submitted. */
size_t sender_queued(const struct sender *s);

/* Submit what was queued as one write. What the socket takes at once is
 * written directly (no callback follows for it); the rest goes to libuv and
 * its completion calls on_written. Returns 0 (also when nothing was queued)
 * or a libuv error; on error the batch is dropped and no callback runs.
 * An error sticks: a batch that failed while pieces were being queued
 * (a full batch is submitted on its own) is reported by the next flush,
 * and nothing more is submitted. */
int sender_flush(struct sender *s);

/* Drop what was queued and not submitted (the stream is being closed). */
void sender_discard(struct sender *s);

/* Free this thread's cache of batches (at thread exit). */
void sender_trim(void);

#endif
