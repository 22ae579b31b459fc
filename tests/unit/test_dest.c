/* Unit tests for dest: --deny-dest blocks and the proxy's own listeners,
 * on IPv4, IPv6 and IPv4-mapped addresses, with specific and wildcard binds. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "dest.h"
#include "unit.h"

static struct sockaddr_storage addr(const char *ip, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &in6->sin6_addr);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &in->sin_addr);
    }
    return ss;
}

static int check(const struct dest_policy *p, const char *ip, int port)
{
    struct sockaddr_storage ss = addr(ip, port);
    return (int)dest_check(p, (const struct sockaddr *)&ss);
}

static void test_deny_blocks(void)
{
    struct cidr deny[2];
    cidr_parse("169.254.0.0/16", 14, &deny[0]);
    cidr_parse("fd00::/8", 8, &deny[1]);
    struct dest_policy p = {deny, 2, NULL, 0, NULL, 0};
    CHECK_INT(check(&p, "169.254.169.254", 80), DEST_DENIED);
    CHECK_INT(check(&p, "::ffff:169.254.1.1", 80), DEST_DENIED);
    CHECK_INT(check(&p, "fd12::1", 443), DEST_DENIED);
    CHECK_INT(check(&p, "10.0.0.1", 80), DEST_OK);
    CHECK_INT(check(&p, "2001:db8::1", 80), DEST_OK);
}

static void test_own_specific_listener(void)
{
    struct sockaddr_storage own[2] = {addr("127.0.0.1", 8080), addr("::1", 9090)};
    struct dest_policy p = {NULL, 0, own, 2, NULL, 0};
    CHECK_INT(check(&p, "127.0.0.1", 8080), DEST_SELF);
    CHECK_INT(check(&p, "::ffff:127.0.0.1", 8080), DEST_SELF);
    CHECK_INT(check(&p, "0.0.0.0", 8080), DEST_SELF);
    CHECK_INT(check(&p, "::1", 9090), DEST_SELF);
    CHECK_INT(check(&p, "::", 9090), DEST_SELF);
    CHECK_INT(check(&p, "127.0.0.1", 8081), DEST_OK);
    CHECK_INT(check(&p, "127.0.0.2", 8080), DEST_OK); /* not bound there */
}

static void test_own_wildcard_listener(void)
{
    struct sockaddr_storage own[1] = {addr("0.0.0.0", 8080)};
    struct sockaddr_storage local[1] = {addr("192.168.7.9", 0)};
    struct dest_policy p = {NULL, 0, own, 1, local, 1};
    CHECK_INT(check(&p, "127.0.0.1", 8080), DEST_SELF);
    CHECK_INT(check(&p, "127.0.1.1", 8080), DEST_SELF);
    CHECK_INT(check(&p, "192.168.7.9", 8080), DEST_SELF);
    CHECK_INT(check(&p, "192.168.7.10", 8080), DEST_OK);
    CHECK_INT(check(&p, "127.0.0.1", 80), DEST_OK);
}

int main(void)
{
    RUN(test_deny_blocks);
    RUN(test_own_specific_listener);
    RUN(test_own_wildcard_listener);
    return unit_summary("dest");
}
