/* Unit tests for options: defaults, each flag, and the messages for bad ones. */
#include "options.h"
#include "unit.h"

static int parse(struct run_options *o, char *err, size_t errlen, int argc, char **argv)
{
    options_defaults(o);
    return options_parse(o, argc, argv, err, errlen);
}

static void test_defaults(void)
{
    struct run_options o;
    char err[256];
    CHECK_INT(parse(&o, err, sizeof err, 0, NULL), 0);
    CHECK_STR(o.listen.text, "127.0.0.1:8080");
    CHECK_STR(o.admin.text, "127.0.0.1:9090");
    CHECK(o.admin_enabled);
    CHECK_STR(o.db_path, "statusproxy.db");
    CHECK_INT(o.header_timeout_ms, 10000);
    CHECK_INT(o.connect_timeout_ms, 5000);
    CHECK_INT(o.response_timeout_ms, 60000);
    CHECK_INT(o.idle_timeout_ms, 60000);
    CHECK_INT(o.tunnel_idle_timeout_ms, 600000);
    CHECK_INT(o.retain_ms, 7 * 86400000LL);
    CHECK_INT(o.workers, 1);
    CHECK_INT(o.max_connections, 10000);
    CHECK_INT(o.n_allow, 2);
    CHECK_INT(o.n_connect_ports, 1);
    CHECK_INT(o.connect_ports[0], 443);
    CHECK_INT(o.log_exchanges, AUDIT_LOG_ALL);
    options_free(&o);
}

static void test_values(void)
{
    struct run_options o;
    char err[256];
    char *argv[] = {"--listen=[::1]:0", "--upstream", "http://Back.End:81/", "--admin", "off",
                    "--seed", "42", "--fault-headers", "--mark-faults", "--log-exchanges",
                    "errors", "--retain", "1h", "--workers", "2", "--allow", "10.0.0.0/8",
                    "--proxy-auth", "u:p", "--header-timeout", "250ms", "--connect-ports",
                    "443,8443", "--tunnel-idle-timeout", "2m"};
    CHECK_INT(parse(&o, err, sizeof err, (int)(sizeof argv / sizeof argv[0]), argv), 0);
    CHECK_STR(o.listen.text, "[::1]:0");
    CHECK_STR(o.upstream_host, "back.end");
    CHECK_INT(o.upstream_port, 81);
    CHECK(!o.admin_enabled);
    CHECK(o.has_seed);
    CHECK_INT(o.seed, 42);
    CHECK(o.fault_headers && o.mark_faults);
    CHECK_INT(o.log_exchanges, AUDIT_LOG_ERRORS);
    CHECK_INT(o.retain_ms, 3600000);
    CHECK_INT(o.workers, 2);
    CHECK_INT(o.n_allow, 1);
    CHECK_STR(o.proxy_auth, "u:p");
    CHECK_INT(o.header_timeout_ms, 250);
    CHECK_INT(o.n_connect_ports, 2);
    CHECK_INT(o.tunnel_idle_timeout_ms, 120000);
    options_free(&o);
}

/* Each bad flag yields -1 and a message that names the flag. */
static void expect_bad(const char *flag, const char *value)
{
    struct run_options o;
    char err[256] = "";
    char *argv[2] = {(char *)flag, (char *)value};
    int rc = parse(&o, err, sizeof err, value ? 2 : 1, argv);
    CHECK_INT(rc, -1);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(flag, "="), flag);
    if (!strstr(err, name)) {
        unit_failed_checks++;
        fprintf(stderr, "  message for %s does not name it: %s\n", flag, err);
    }
    options_free(&o);
}

static void test_bad_flags_name_the_flag(void)
{
    expect_bad("--listen", "nonsense");
    expect_bad("--listen", "1.2.3.4:99999");
    expect_bad("--upstream", "https://x:1/path");
    expect_bad("--upstream", "ftp://x:1");
    expect_bad("--upstream-ca", "");
    expect_bad("--upstream-insecure=1", NULL);
    expect_bad("--upstream", "http://x:1/path");
    expect_bad("--upstream", "x:1");
    expect_bad("--workers", "0");
    expect_bad("--workers", "abc");
    expect_bad("--header-timeout", "5x");
    expect_bad("--header-timeout", "0");
    expect_bad("--tunnel-idle-timeout", "soon");
    expect_bad("--tunnel-idle-timeout", "0");
    expect_bad("--log-exchanges", "maybe");
    expect_bad("--seed", "-1");
    expect_bad("--proxy-auth", "nocolon");
    expect_bad("--admin", "here");
    expect_bad("--max-connections", "0");
    expect_bad("--connect-ports", "0");
    expect_bad("--deny-dest", "10.0.0.1/8");
    expect_bad("--deny-dest", "metadata");
    expect_bad("--max-request-body", "0");
    expect_bad("--max-request-body", "10XB");
    expect_bad("--bogus", NULL);
    expect_bad("--listen", NULL);
    expect_bad("--fault-headers=1", NULL);
}

/* https upstreams: port 443 by default, a CA file, insecure mode. */
static void test_https_upstream(void)
{
    struct run_options o;
    char err[256];
    char *argv[] = {"--upstream", "https://API.example.com", "--upstream-ca", "/tmp/ca.pem",
                    "--upstream-insecure"};
    CHECK_INT(parse(&o, err, sizeof err, 5, argv), 0);
    CHECK_STR(o.upstream_host, "api.example.com");
    CHECK_INT(o.upstream_port, 443);
    CHECK(o.upstream_https);
    CHECK_STR(o.upstream_ca, "/tmp/ca.pem");
    CHECK(o.upstream_insecure);
    options_free(&o);
    char *argv2[] = {"--upstream", "https://[::1]:8443/"};
    CHECK_INT(parse(&o, err, sizeof err, 2, argv2), 0);
    CHECK_STR(o.upstream_host, "::1");
    CHECK_INT(o.upstream_port, 8443);
    CHECK(o.upstream_https);
    CHECK(!o.upstream_insecure);
    options_free(&o);
    char *argv3[] = {"--upstream", "http://plain"};
    CHECK_INT(parse(&o, err, sizeof err, 2, argv3), 0);
    CHECK_INT(o.upstream_port, 80);
    CHECK(!o.upstream_https);
    options_free(&o);
}

static void test_limits_flags(void)
{
    struct run_options o;
    char err[256] = "";
    char *argv[] = {"--deny-dest", "169.254.0.0/16", "--deny-dest=::1", "--max-request-body",
                    "10MB"};
    CHECK_INT(parse(&o, err, sizeof err, 5, argv), 0);
    CHECK_INT((int)o.n_deny_dest, 2);
    CHECK_INT(o.deny_dest[0].prefix, 16);
    CHECK_INT(o.deny_dest[1].prefix, 128);
    CHECK(o.max_request_body == 10ULL * 1024 * 1024);
    options_free(&o);
    CHECK(parse(&o, err, sizeof err, 0, argv) == 0 && o.max_request_body == 0);
    options_free(&o);
}

static void test_help(void)
{
    struct run_options o;
    char err[64];
    char *argv[] = {"--help"};
    CHECK_INT(parse(&o, err, sizeof err, 1, argv), 1);
    options_free(&o);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_values);
    RUN(test_bad_flags_name_the_flag);
    RUN(test_https_upstream);
    RUN(test_limits_flags);
    RUN(test_help);
    return unit_summary("options");
}
