/*
 * cidr — IPv4 and IPv6 address blocks ("10.0.0.0/8", "2001:db8::/32", or a
 * plain address meaning /32 or /128), parsed once and tested against a
 * socket address. Used by the rules' `client` matcher and by `--allow`.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket
 * reports for an IPv4 peer) is the IPv4 address it carries, so it matches
 * IPv4 blocks; an IPv4 address matches IPv6 blocks as its mapped form.
 * Pure functions; no allocation, no I/O.
 */
#ifndef STATUSPROXY_CIDR_H
#define STATUSPROXY_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Public so that callers can keep arrays of blocks (e.g. the allow list). */
struct cidr {
    int family;        /* AF_INET or AF_INET6 */
    unsigned prefix;   /* 0-32 or 0-128 */
    uint8_t addr[16];  /* network address, host bits zero; IPv4 uses addr[0..4) */
};

/* Longest text cidr_format writes, NUL included. */
#define CIDR_STRLEN 64

enum {
    CIDR_EINVAL = -1,   /* not an address or block */
    CIDR_EHOSTBITS = -2 /* a valid block with host bits set, e.g. 10.1.2.3/8 */
};

/* Parse S[0..len): "ADDR" or "ADDR/PREFIX". Returns 0; CIDR_EINVAL; or
 * CIDR_EHOSTBITS, in which case *out holds the block with the host bits
 * cleared (so a caller can suggest it). */
int cidr_parse(const char *s, size_t len, struct cidr *out);

/* 1 when SA (AF_INET or AF_INET6) lies in C, else 0 (also for other families). */
int cidr_contains(const struct cidr *c, const struct sockaddr *sa);

/* Canonical text into BUF (CIDR_STRLEN bytes suffice): the address as
 * inet_ntop writes it, then "/PREFIX" unless the block is one address. */
void cidr_format(const struct cidr *c, char *buf, size_t len);

#endif
