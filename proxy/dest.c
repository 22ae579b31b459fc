/*
 * dest — the forward-mode destination check: --deny-dest blocks and the
 * proxy's own listeners, on resolved socket addresses.
 */
#include "dest.h"

#include <netinet/in.h>
#include <string.h>

/* An address reduced to what comparing needs: family (IPv4-mapped IPv6
 * becomes IPv4), address bytes and port. */
struct flat {
    int family;
    unsigned char addr[16];
    int port;
};

static int flatten(const struct sockaddr *sa, struct flat *f)
{
    memset(f, 0, sizeof *f);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        f->family = AF_INET;
        memcpy(f->addr, &in->sin_addr, 4);
        f->port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        f->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            f->family = AF_INET;
            memcpy(f->addr, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            f->family = AF_INET6;
            memcpy(f->addr, &in6->sin6_addr, 16);
        }
        return 0;
    }
    return -1;
}

static int is_unspecified(const struct flat *f)
{
    static const unsigned char zero[16];
    return memcmp(f->addr, zero, f->family == AF_INET ? 4 : 16) == 0;
}

static int is_loopback(const struct flat *f)
{
    static const unsigned char one6[16] = {[15] = 1};
    return f->family == AF_INET ? f->addr[0] == 127 : memcmp(f->addr, one6, 16) == 0;
}

static int same_addr(const struct flat *a, const struct flat *b)
{
    return a->family == b->family && memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static int is_local(const struct dest_policy *p, const struct flat *d)
{
    if (is_loopback(d))
        return 1;
    for (size_t i = 0; i < p->n_local; i++) {
        struct flat l;
        if (flatten((const struct sockaddr *)&p->local[i], &l) == 0 && same_addr(&l, d))
            return 1;
    }
    return 0;
}

static int is_self(const struct dest_policy *p, const struct flat *d)
{
    for (size_t i = 0; i < p->n_own; i++) {
        struct flat o;
        if (flatten((const struct sockaddr *)&p->own[i], &o) != 0 || o.port != d->port)
            continue;
        /* connect() to 0.0.0.0 or :: reaches this host. */
        if (is_unspecified(d) || same_addr(&o, d))
            return 1;
        if (is_unspecified(&o) && is_local(p, d))
            return 1;
    }
    return 0;
}

enum dest_verdict dest_check(const struct dest_policy *p, const struct sockaddr *sa)
{
    struct flat d;
    if (flatten(sa, &d) != 0)
        return DEST_DENIED;
    if (is_self(p, &d))
        return DEST_SELF;
    for (size_t i = 0; i < p->n_deny; i++)
        if (cidr_contains(&p->deny[i], sa))
            return DEST_DENIED;
    return DEST_OK;
}
