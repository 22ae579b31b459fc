/*
 * chunk — reference-counted read buffers. Bytes read from a socket stay in
 * the chunk they arrived in; llhttp's body pointers into it are handed to the
 * other socket's writes, which hold a reference until libuv is done with them.
 * That is how bodies are forwarded without copying.
 * Chunks belong to one thread: each thread keeps its own small free list.
 */
#ifndef STATUSPROXY_CHUNK_H
#define STATUSPROXY_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#define CHUNK_SIZE (64 * 1024)

struct chunk {
    uint32_t refs;
    uint32_t len;            /* bytes filled by the last read */
    struct chunk *next_free;
    char data[CHUNK_SIZE];
};

/* A chunk with one reference (the caller's). Never NULL. */
struct chunk *chunk_new(void);
static inline struct chunk *chunk_ref(struct chunk *c)
{
    c->refs++;
    return c;
}
/* Drop a reference; the last one returns the chunk to this thread's free list. */
void chunk_unref(struct chunk *c);
/* Free this thread's free list (at thread exit). */
void chunk_trim(void);

#endif
