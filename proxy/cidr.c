/*
 * cidr — parsing leans on inet_pton, which is strict (no leading zeros in
 * IPv4 octets, no zone ids); the prefix is plain decimal digits.
 */
#include "cidr.h"
#include "units.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Clear the bits of ADDR past PREFIX; return whether any was set. */
static int clear_host_bits(uint8_t *addr, unsigned bytes, unsigned prefix)
{
    int had = 0;
    for (unsigned i = 0; i < bytes; i++) {
        unsigned first = i * 8; /* index of this byte's top bit */
        uint8_t keep;
        if (prefix >= first + 8)
            keep = 0xff;
        else if (prefix <= first)
            keep = 0;
        else
            keep = (uint8_t)(0xff << (8 - (prefix - first)));
        if (addr[i] & (uint8_t)~keep)
            had = 1;
        addr[i] &= keep;
    }
    return had;
}

int cidr_parse(const char *s, size_t len, struct cidr *out)
{
    char text[INET6_ADDRSTRLEN + 1];
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    if (alen == 0 || alen >= sizeof text)
        return CIDR_EINVAL;
    memcpy(text, s, alen);
    text[alen] = '\0';

    struct cidr c;
    memset(&c, 0, sizeof c);
    unsigned max;
    if (inet_pton(AF_INET, text, c.addr) == 1) {
        c.family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, text, c.addr) == 1) {
        c.family = AF_INET6;
        max = 128;
    } else {
        return CIDR_EINVAL;
    }

    c.prefix = max;
    if (slash) {
        const char *p = slash + 1, *end = s + len;
        uint64_t v;
        if (end - p > 3 || units_parse_u64(p, (size_t)(end - p), max, &v) != 0)
            return CIDR_EINVAL;
        c.prefix = (unsigned)v;
    }
    int had = clear_host_bits(c.addr, max / 8, c.prefix);
    *out = c;
    return had ? CIDR_EHOSTBITS : 0;
}

/* Does ADDR (BYTES long) start with C's first C->prefix bits? */
static int prefix_eq(const struct cidr *c, const uint8_t *addr)
{
    unsigned whole = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[whole] & mask) == (addr[whole] & mask);
}

int cidr_contains(const struct cidr *c, const struct sockaddr *sa)
{
    uint8_t v6[16];
    const uint8_t *v4 = NULL;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(v6, v4_mapped_prefix, 12);
        memcpy(v6 + 12, &in->sin_addr, 4);
        v4 = v6 + 12;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(v6, &in6->sin6_addr, 16);
        if (memcmp(v6, v4_mapped_prefix, 12) == 0)
            v4 = v6 + 12;
    } else {
        return 0;
    }
    if (c->family == AF_INET)
        return v4 != NULL && prefix_eq(c, v4);
    return prefix_eq(c, v6);
}

void cidr_format(const struct cidr *c, char *buf, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(c->family, c->addr, text, sizeof text))
        text[0] = '\0';
    unsigned max = c->family == AF_INET ? 32 : 128;
    if (c->prefix == max)
        snprintf(buf, len, "%s", text);
    else
        snprintf(buf, len, "%s/%u", text, c->prefix);
}
