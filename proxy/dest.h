/*
 * dest — where forward mode may connect (DESIGN §12): never to a block of
 * --deny-dest, never to one of the proxy's own listeners. Checked on the
 * resolved address, just before connecting, so a name that resolves to a
 * denied or own address is refused as its IP literal would be. Pure: the
 * addresses come from the caller; no I/O, no allocation.
 */
#ifndef STATUSPROXY_DEST_H
#define STATUSPROXY_DEST_H

#include <stddef.h>
#include <sys/socket.h>

#include "cidr.h"

enum dest_verdict {
    DEST_OK,
    DEST_DENIED,   /* in a --deny-dest block */
    DEST_SELF      /* one of the proxy's own listening addresses */
};

struct dest_policy {
    const struct cidr *deny;                /* --deny-dest blocks */
    size_t n_deny;
    const struct sockaddr_storage *own;     /* listen and admin addresses, with ports */
    size_t n_own;
    const struct sockaddr_storage *local;   /* this host's interface addresses, for
                                             * listeners bound to 0.0.0.0 or :: */
    size_t n_local;
};

/* The verdict for connecting to SA (AF_INET or AF_INET6, with its port). An
 * IPv4-mapped IPv6 address counts as the IPv4 address it carries. A
 * destination is the proxy itself when its port is a listener's and its
 * address is the listener's, or is 0.0.0.0 / :: (which reach this host), or
 * is a loopback or local address while the listener is bound to a wildcard. */
enum dest_verdict dest_check(const struct dest_policy *p, const struct sockaddr *sa);

#endif
