/*
 * hash — FNV-1a, the one string hash behind the proxy's small open-addressing
 * tables (header names, counters, route caps, report keys, rule names) and
 * the per-rule random streams. 32-bit where a table indexes with 32 bits,
 * 64-bit elsewhere. Not for anything an attacker must not steer: the tables
 * using it are bounded or built from operator input.
 */
#ifndef STATUSPROXY_HASH_H
#define STATUSPROXY_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV32_BASIS 2166136261u
#define HASH_FNV32_PRIME 16777619u
#define HASH_FNV64_BASIS 0xcbf29ce484222325ull
#define HASH_FNV64_PRIME 0x100000001b3ull

/* 64-bit FNV-1a of N bytes at S, continuing from H (HASH_FNV64_BASIS to start;
 * a previous result to hash several pieces as one). */
static inline uint64_t hash_fnv64(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * HASH_FNV64_PRIME;
    return h;
}

/* 64-bit FNV-1a of the NUL-terminated S, from HASH_FNV64_BASIS. */
static inline uint64_t hash_fnv64_str(const char *s)
{
    uint64_t h = HASH_FNV64_BASIS;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * HASH_FNV64_PRIME;
    return h;
}

/* 32-bit FNV-1a of the NUL-terminated S. */
static inline uint32_t hash_fnv32_str(const char *s)
{
    uint32_t h = HASH_FNV32_BASIS;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * HASH_FNV32_PRIME;
    return h;
}

/* 32-bit FNV-1a of N bytes at S with ASCII case folded (bit 0x20 set on every
 * byte), so that names equal ignoring case hash alike. */
static inline uint32_t hash_fnv32_nocase(const char *s, size_t n)
{
    uint32_t h = HASH_FNV32_BASIS;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)(s[i] | 0x20)) * HASH_FNV32_PRIME;
    return h;
}

#endif
