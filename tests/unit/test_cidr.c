/* Unit tests for cidr: parsing (valid and malformed forms, host bits),
 * matching IPv4, IPv6 and v4-mapped addresses, and formatting. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "cidr.h"
#include "unit.h"

static int parse(const char *s, struct cidr *c)
{
    return cidr_parse(s, strlen(s), c);
}

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &in->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &in6->sin6_addr);
    return ss;
}

/* Does block S contain address A (IPv4 or IPv6 text)? */
static int contains(const char *s, const char *a)
{
    struct cidr c;
    if (parse(s, &c) != 0)
        return -1;
    struct sockaddr_storage ss = strchr(a, ':') ? v6(a) : v4(a);
    return cidr_contains(&c, (struct sockaddr *)&ss);
}

static const char *fmt(const char *s)
{
    static char buf[CIDR_STRLEN];
    struct cidr c;
    int rc = parse(s, &c);
    if (rc != 0 && rc != CIDR_EHOSTBITS)
        return "(invalid)";
    cidr_format(&c, buf, sizeof buf);
    return buf;
}

static void test_parse_plain_addresses(void)
{
    struct cidr c;
    CHECK_INT(parse("127.0.0.1", &c), 0);
    CHECK_INT(c.family, AF_INET);
    CHECK_INT(c.prefix, 32);
    CHECK_INT(parse("::1", &c), 0);
    CHECK_INT(c.family, AF_INET6);
    CHECK_INT(c.prefix, 128);
}

static void test_parse_blocks(void)
{
    struct cidr c;
    CHECK_INT(parse("10.0.0.0/8", &c), 0);
    CHECK_INT(c.prefix, 8);
    CHECK_INT(parse("0.0.0.0/0", &c), 0);
    CHECK_INT(c.prefix, 0);
    CHECK_INT(parse("2001:db8::/32", &c), 0);
    CHECK_INT(c.prefix, 32);
    CHECK_INT(parse("::/0", &c), 0);
    CHECK_INT(parse("192.168.1.128/25", &c), 0);
}

static void test_parse_malformed(void)
{
    const char *bad[] = {"",          "/8",          "10.0.0.0/",   "10.0.0.0/33", "::/129",
                         "10.0.0/8",  "10.0.0.256",  "10.0.0.0/8x", "10.0.0.0/-1", "host",
                         "01.2.3.4",  "fe80::1%eth0", "10.0.0.0/8/8", "10.0.0.0 /8", "1.2.3.4/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cidr c;
        int rc = parse(bad[i], &c);
        if (rc != CIDR_EINVAL)
            fprintf(stderr, "  \"%s\" gave %d\n", bad[i], rc);
        CHECK_INT(rc, CIDR_EINVAL);
    }
}

static void test_host_bits_reported_and_cleared(void)
{
    struct cidr c;
    CHECK_INT(parse("10.1.2.3/8", &c), CIDR_EHOSTBITS);
    CHECK_STR(fmt("10.1.2.3/8"), "10.0.0.0/8");
    CHECK_INT(parse("2001:db8::1/32", &c), CIDR_EHOSTBITS);
    CHECK_STR(fmt("2001:db8::1/32"), "2001:db8::/32");
    CHECK_INT(parse("192.168.1.129/25", &c), CIDR_EHOSTBITS);
    CHECK_STR(fmt("192.168.1.129/25"), "192.168.1.128/25");
}

static void test_match_ipv4(void)
{
    CHECK_INT(contains("10.0.0.0/8", "10.255.1.2"), 1);
    CHECK_INT(contains("10.0.0.0/8", "11.0.0.1"), 0);
    CHECK_INT(contains("192.168.1.128/25", "192.168.1.200"), 1);
    CHECK_INT(contains("192.168.1.128/25", "192.168.1.127"), 0);
    CHECK_INT(contains("127.0.0.1", "127.0.0.1"), 1);
    CHECK_INT(contains("127.0.0.1", "127.0.0.2"), 0);
    CHECK_INT(contains("0.0.0.0/0", "8.8.8.8"), 1);
}

static void test_match_ipv6(void)
{
    CHECK_INT(contains("2001:db8::/32", "2001:db8:1::5"), 1);
    CHECK_INT(contains("2001:db8::/32", "2001:db9::5"), 0);
    CHECK_INT(contains("::1", "::1"), 1);
    CHECK_INT(contains("::1", "::2"), 0);
    CHECK_INT(contains("fe80::/10", "febf::1"), 1);
    CHECK_INT(contains("fe80::/10", "fec0::1"), 0);
}

static void test_v4_mapped_matches_ipv4_blocks(void)
{
    CHECK_INT(contains("127.0.0.0/8", "::ffff:127.0.0.1"), 1);
    CHECK_INT(contains("10.0.0.0/8", "::ffff:11.0.0.1"), 0);
    CHECK_INT(contains("127.0.0.1", "::ffff:127.0.0.1"), 1);
    /* Not mapped: an IPv6 address never matches an IPv4 block. */
    CHECK_INT(contains("0.0.0.0/0", "::1"), 0);
    CHECK_INT(contains("0.0.0.0/0", "::127.0.0.1"), 0);
}

static void test_ipv4_matches_mapped_ipv6_blocks(void)
{
    CHECK_INT(contains("::ffff:0:0/96", "10.1.2.3"), 1);
    CHECK_INT(contains("::ffff:10.0.0.0/104", "10.1.2.3"), 1);
    CHECK_INT(contains("::/0", "10.1.2.3"), 1);
    CHECK_INT(contains("2001:db8::/32", "10.1.2.3"), 0);
}

static void test_other_family_never_matches(void)
{
    struct cidr c;
    parse("0.0.0.0/0", &c);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    CHECK_INT(cidr_contains(&c, (struct sockaddr *)&ss), 0);
}

static void test_format(void)
{
    CHECK_STR(fmt("10.0.0.0/8"), "10.0.0.0/8");
    CHECK_STR(fmt("127.0.0.1"), "127.0.0.1");
    CHECK_STR(fmt("127.0.0.1/32"), "127.0.0.1");
    CHECK_STR(fmt("2001:DB8:0:0::/32"), "2001:db8::/32");
    CHECK_STR(fmt("::1/128"), "::1");
    CHECK_STR(fmt("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
}

static void test_length_bounds_the_text(void)
{
    struct cidr c;
    CHECK_INT(cidr_parse("10.0.0.0/8junk", 10, &c), 0);
    CHECK_INT(c.prefix, 8);
    CHECK_INT(cidr_parse("10.0.0.1", 7, &c), CIDR_EINVAL); /* "10.0.0." */
}

int main(void)
{
    RUN(test_parse_plain_addresses);
    RUN(test_parse_blocks);
    RUN(test_parse_malformed);
    RUN(test_host_bits_reported_and_cleared);
    RUN(test_match_ipv4);
    RUN(test_match_ipv6);
    RUN(test_v4_mapped_matches_ipv4_blocks);
    RUN(test_ipv4_matches_mapped_ipv6_blocks);
    RUN(test_other_family_never_matches);
    RUN(test_format);
    RUN(test_length_bounds_the_text);
    return unit_summary("cidr");
}
