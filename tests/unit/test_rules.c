/*
 * Unit tests for rules: every valid form and its normalized text, every
 * error and warning with its exact line and column, and the matching
 * semantics (phases, first match, every/after/limit counts, seeded chance
 * and delays, enable/disable, hits, reference counts, threads).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>

#include "http.h"
#include "rules.h"
#include "unit.h"

#define SEED 42

static struct rules *parse_seed(const char *text, uint64_t seed, struct rules_diags *d)
{
    return rules_parse(text, strlen(text), "t.rules", seed, d);
}

static void dump(const struct rules_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        char *s = rules_diag_format("t.rules", &d->items[i]);
        fprintf(stderr, "    %s\n", s);
        free(s);
    }
}

/* Parse TEXT expecting exactly one error, at LINE:COL, whose message
 * contains WANT (and no warnings unless ALLOW_WARNINGS). */
static int expect_error(const char *text, int line, int col, const char *want)
{
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, SEED, &d);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.items[i].is_error && d.items[i].line == line && d.items[i].col == col &&
            strstr(d.items[i].message, want))
            found = 1;
    int ok = rs == NULL && found && d.errors == 1;
    if (!ok) {
        fprintf(stderr, "  for: %s\n  want one error %d:%d containing \"%s\", got:\n", text, line,
                col, want);
        dump(&d);
    }
    rules_unref(rs);
    rules_diags_free(&d);
    return ok;
}

/* Parse TEXT expecting success with exactly one diagnostic: a warning at LINE:COL. */
static int expect_warning(const char *text, int line, int col, const char *want)
{
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, SEED, &d);
    int ok = rs != NULL && d.n == 1 && !d.items[0].is_error && d.items[0].line == line &&
             d.items[0].col == col && strstr(d.items[0].message, want);
    if (!ok) {
        fprintf(stderr, "  for: %s\n  want one warning %d:%d containing \"%s\", got:\n", text,
                line, col, want);
        dump(&d);
    }
    rules_unref(rs);
    rules_diags_free(&d);
    return ok;
}

/* Parse one clean rule (no diagnostics at all) and compare its normal form. */
static int expect_normal(const char *text, const char *want)
{
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, SEED, &d);
    int ok = rs != NULL && d.n == 0 && rules_count(rs) == 1 &&
             strcmp(rule_normalized(rules_at(rs, 0)), want) == 0;
    if (!ok) {
        fprintf(stderr, "  for: %s\n  want: %s\n  got:  %s\n", text, want,
                rs && rules_count(rs) ? rule_normalized(rules_at(rs, 0)) : "(no rule)");
        dump(&d);
    }
    rules_unref(rs);
    rules_diags_free(&d);
    return ok;
}

#define ERR_AT(text, line, col, want) CHECK(expect_error(text, line, col, want))
#define WARN_AT(text, line, col, want) CHECK(expect_warning(text, line, col, want))
#define NORMAL(text, want) CHECK(expect_normal(text, want))

/* ---- exchanges ---- */

struct xch {
    struct rules_exchange x;
    struct http_head head;
    struct sockaddr_storage client;
};

static void xch_init(struct xch *e, const char *method, const char *host, const char *path)
{
    memset(e, 0, sizeof *e);
    http_head_init(&e->head, 1 << 16);
    e->x.method = method;
    e->x.method_len = strlen(method);
    e->x.host = host;
    e->x.host_len = strlen(host);
    e->x.path = path;
    e->x.path_len = strlen(path);
    e->x.request = &e->head;
    struct sockaddr_in *in = (struct sockaddr_in *)&e->client;
    in->sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &in->sin_addr);
    e->x.client = (struct sockaddr *)&e->client;
}

static void xch_header(struct xch *e, const char *name, const char *value)
{
    http_head_add_field(&e->head, name, strlen(name), value, strlen(value));
}

static void xch_client(struct xch *e, const char *ip)
{
    memset(&e->client, 0, sizeof e->client);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e->client;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &in6->sin6_addr);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&e->client;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &in->sin_addr);
    }
}

static void xch_free(struct xch *e)
{
    http_head_free(&e->head);
}

/* The name of the rule that applies to X in PHASE, or "-" when none does. */
static const char *match_name(struct rules *rs, enum rules_phase phase, const struct xch *e)
{
    struct rules_verdict v;
    if (!rules_match(rs, phase, &e->x, &v))
        return "-";
    return rule_name(v.rule);
}

/* Parse TEXT, which must be clean. */
static struct rules *load(const char *text, uint64_t seed)
{
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, seed, &d);
    if (!rs || d.n) {
        fprintf(stderr, "  unexpected diagnostics for: %s\n", text);
        dump(&d);
    }
    rules_diags_free(&d);
    return rs;
}

/* Does rule RULE of RS match a request-phase GET / on REQ times? Returns
 * the pattern as a string of '1' and '0' into BUF. */
static const char *pattern(struct rules *rs, enum rules_phase phase, struct xch *e, int n,
                           char *buf)
{
    for (int i = 0; i < n; i++) {
        struct rules_verdict v;
        buf[i] = rules_match(rs, phase, &e->x, &v) ? '1' : '0';
    }
    buf[n] = '\0';
    return buf;
}

/* ================= parsing: valid forms ================= */

static void test_empty_file_and_comments(void)
{
    struct rules_diags d = {0};
    struct rules *rs = parse_seed("", SEED, &d);
    CHECK(rs != NULL);
    CHECK_INT(rules_count(rs), 0);
    CHECK_INT(rules_has_phase(rs, RULES_REQUEST), 0);
    CHECK_INT(rules_has_phase(rs, RULES_RESPONSE), 0);
    rules_unref(rs);
    rs = parse_seed("# only a comment\n\n   \t\n# rule x => reset\n", SEED, &d);
    CHECK(rs != NULL);
    CHECK_INT(rules_count(rs), 0);
    CHECK_INT(d.n, 0);
    rules_unref(rs);
    rules_diags_free(&d);
}

static void test_design_examples(void)
{
    NORMAL("rule flaky-pay  method POST path /pay/* chance 10%  => abort 503 set-header "
           "Retry-After \"5\"",
           "rule flaky-pay method POST path /pay/* chance 10% => abort 503 set-header "
           "Retry-After \"5\"");
    NORMAL("rule hide-404   status 404                          => set-status 200",
           "rule hide-404 status 404 => set-status 200");
    NORMAL("rule mask-5xx   status 5xx host api.internal        => set-status 503 reason \"Try "
           "Later\"",
           "rule mask-5xx status 5xx host api.internal => set-status 503 reason \"Try Later\"");
    NORMAL("rule slow       path /search every 3                => delay 100ms..400ms",
           "rule slow path /search every 3 => delay 100ms..400ms");
    NORMAL("rule retry-test method GET path /orders limit 2     => abort 503 body "
           "\"{\\\"error\\\":\\\"down\\\"}\"",
           "rule retry-test method GET path /orders limit 2 => abort 503 body "
           "\"{\\\"error\\\":\\\"down\\\"}\"");
    NORMAL("rule cut        path /files/* status 200 chance 1%  => truncate 1024",
           "rule cut path /files/* status 200 chance 1% => truncate 1KB");
}

static void test_rule_without_matchers(void)
{
    NORMAL("rule all => delay 1s", "rule all => delay 1s");
}

static void test_name_characters(void)
{
    NORMAL("rule A.b_c-9 => reset", "rule A.b_c-9 => reset");
}

static void test_normalized_matchers(void)
{
    NORMAL("rule r method GET,POST,PUT => reset", "rule r method GET,POST,PUT => reset");
    NORMAL("rule r host *.Example.COM => reset", "rule r host *.example.com => reset");
    NORMAL("rule r path \"/a b\" => reset", "rule r path \"/a b\" => reset");
    NORMAL("rule r path /a\"#\"b => reset", "rule r path \"/a#b\" => reset");
    NORMAL("rule r header X-Debug => reset", "rule r header X-Debug => reset");
    NORMAL("rule r header X-Debug=on* header Accept => reset",
           "rule r header X-Debug=on* header Accept => reset");
    NORMAL("rule r header User-Agent=\"*curl 7*\" => reset",
           "rule r header User-Agent=\"*curl 7*\" => reset");
    NORMAL("rule r header \"Cookie=a=b\" => reset", "rule r header Cookie=a=b => reset");
    NORMAL("rule r client 127.0.0.1 => reset", "rule r client 127.0.0.1 => reset");
    NORMAL("rule r client 127.0.0.1/32 => reset", "rule r client 127.0.0.1 => reset");
    NORMAL("rule r client 10.0.0.0/8 => reset", "rule r client 10.0.0.0/8 => reset");
    NORMAL("rule r client 2001:DB8::/32 => reset", "rule r client 2001:db8::/32 => reset");
    NORMAL("rule r status 5XX,500-504,404 => set-status 200",
           "rule r status 5xx,500-504,404 => set-status 200");
    NORMAL("rule r chance 0.5% => reset", "rule r chance 0.5% => reset");
    NORMAL("rule r chance 10.000% => reset", "rule r chance 10% => reset");
    NORMAL("rule r chance 0% => reset", "rule r chance 0% => reset");
    NORMAL("rule r chance 100% => reset", "rule r chance 100% => reset");
    NORMAL("rule r chance 0.000001% => reset", "rule r chance 0.000001% => reset");
    NORMAL("rule r every 3 after 0 limit 10 => reset", "rule r every 3 after 0 limit 10 => reset");
}

static void test_normalized_actions(void)
{
    NORMAL("rule r => abort 503 reason \"Back \\\"soon\\\"\" body \"a\\tb\\nc\\\\\"",
           "rule r => abort 503 reason \"Back \\\"soon\\\"\" body \"a\\tb\\nc\\\\\"");
    NORMAL("rule r => set-header X-A \"1\" set-header X-B \"\" del-header X-C del-header X-D",
           "rule r => set-header X-A \"1\" set-header X-B \"\" del-header X-C del-header X-D");
    NORMAL("rule r => delay 2000ms", "rule r => delay 2s");
    NORMAL("rule r => delay 1500ms..2s", "rule r => delay 1500ms..2s");
    NORMAL("rule r => delay 2s..2s", "rule r => delay 2s");
    NORMAL("rule r => delay 0..1m", "rule r => delay 0ms..1m");
    NORMAL("rule r => throttle 65536/s", "rule r => throttle 64KB/s");
    NORMAL("rule r => throttle 1MiB/s", "rule r => throttle 1MB/s");
    NORMAL("rule r => truncate 0", "rule r => truncate 0");
    NORMAL("rule r => truncate 4KiB", "rule r => truncate 4KB");
    NORMAL("rule r => delay 1s reset", "rule r => delay 1s reset");
    NORMAL("rule r => reset delay 1s", "rule r => reset delay 1s");
    NORMAL("rule r => abort 200", "rule r => abort 200");
    NORMAL("rule r => set-status 200 reason \"\"", "rule r => set-status 200 reason \"\"");
}

static void test_continuation_lines(void)
{
    const char *text = "# leading comment\n"
                       "rule long method GET \\\n"
                       "          path /x \\\n"
                       "   => abort 503   # trailing comment\n"
                       "rule next => reset\n";
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, SEED, &d);
    CHECK(rs != NULL);
    CHECK_INT(rules_count(rs), 2);
    const struct rule *r = rules_at(rs, 0);
    CHECK_STR(rule_name(r), "long");
    CHECK_INT(rule_line(r), 2);
    CHECK_STR(rule_source(r), "rule long method GET path /x => abort 503");
    CHECK_STR(rule_normalized(r), "rule long method GET path /x => abort 503");
    CHECK_INT(rule_line(rules_at(rs, 1)), 5);
    rules_unref(rs);
    rules_diags_free(&d);
}

static void test_source_keeps_spacing_as_written(void)
{
    struct rules *rs = load("  rule  s   path /x  =>  set-status 200 # why\n", SEED);
    CHECK_STR(rule_source(rules_at(rs, 0)), "rule  s   path /x  =>  set-status 200");
    CHECK_STR(rule_actions_text(rules_at(rs, 0)), "set-status 200");
    rules_unref(rs);
}

static void test_comment_backslash_does_not_continue(void)
{
    struct rules *rs = load("rule a => reset # not continued \\\nrule b => reset\n", SEED);
    CHECK_INT(rules_count(rs), 2);
    rules_unref(rs);
}

static void test_crlf_and_final_line_without_newline(void)
{
    struct rules *rs = load("rule a path /x \\\r\n => reset\r\nrule b => reset", SEED);
    CHECK_INT(rules_count(rs), 2);
    CHECK_STR(rule_normalized(rules_at(rs, 0)), "rule a path /x => reset");
    CHECK_STR(rule_normalized(rules_at(rs, 1)), "rule b => reset");
    rules_unref(rs);
}

static void test_hash_inside_string_is_text(void)
{
    NORMAL("rule r => abort 503 body \"# not a comment\"",
           "rule r => abort 503 body \"# not a comment\"");
}

static void test_actions_text(void)
{
    struct rules *rs = load("rule r method GET => abort 503 set-header Retry-After \"5\"", SEED);
    CHECK_STR(rule_actions_text(rules_at(rs, 0)), "abort 503 set-header Retry-After \"5\"");
    rules_unref(rs);
}

static void test_action_struct(void)
{
    struct rules *rs = load("rule a => abort 503 reason \"Later\" body \" \\n {\\\"e\\\":1}\" "
                            "set-header Retry-After \"5\" set-header X-Y \"z\" del-header Server "
                            "delay 100ms..400ms throttle 1KB/s\n"
                            "rule b => set-status 200 truncate 10\n"
                            "rule c => reset\n",
                            SEED);
    const struct rule_actions *a = rule_get_actions(rules_at(rs, 0));
    CHECK_INT(a->abort_code, 503);
    CHECK_INT(a->set_status, 0);
    CHECK_STR(a->reason, "Later");
    CHECK_STR(a->body, " \n {\"e\":1}");
    CHECK_INT(a->body_len, 10);
    CHECK_INT(a->body_is_json, 1);
    CHECK_INT(a->n_set_headers, 2);
    CHECK_STR(a->set_headers[0].name, "Retry-After");
    CHECK_STR(a->set_headers[0].value, "5");
    CHECK_STR(a->set_headers[1].name, "X-Y");
    CHECK_INT(a->n_del_headers, 1);
    CHECK_STR(a->del_headers[0].name, "Server");
    CHECK(a->del_headers[0].value == NULL);
    CHECK_INT(a->has_delay, 1);
    CHECK_INT(a->delay_min_ms, 100);
    CHECK_INT(a->delay_max_ms, 400);
    CHECK_INT(a->throttle_bps, 1024);
    CHECK_INT(a->reset, 0);
    CHECK_INT(a->truncate, -1);

    a = rule_get_actions(rules_at(rs, 1));
    CHECK_INT(a->abort_code, 0);
    CHECK_INT(a->set_status, 200);
    CHECK(a->reason == NULL);
    CHECK(a->body == NULL);
    CHECK_INT(a->has_delay, 0);
    CHECK_INT(a->throttle_bps, 0);
    CHECK_INT(a->truncate, 10);

    a = rule_get_actions(rules_at(rs, 2));
    CHECK_INT(a->reset, 1);
    CHECK_INT(a->truncate, -1);
    rules_unref(rs);
}

static void test_body_is_json(void)
{
    const char *texts[] = {"\"[1,2]\"", "\"{}\"", "\"\\n\\t {\\\"a\\\":1}\"", "\"x{\"", "\"\"",
                           "\"   \""};
    int want[] = {1, 1, 1, 0, 0, 0};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
        char text[128];
        snprintf(text, sizeof text, "rule r => abort 503 body %s", texts[i]);
        struct rules *rs = load(text, SEED);
        CHECK_INT(rule_get_actions(rules_at(rs, 0))->body_is_json, want[i]);
        rules_unref(rs);
    }
}

static void test_phases(void)
{
    struct rules *rs = load("rule q path /x => delay 1s\nrule s status 5xx => set-status 503\n",
                            SEED);
    CHECK_INT(rule_phase(rules_at(rs, 0)), RULES_REQUEST);
    CHECK_INT(rule_phase(rules_at(rs, 1)), RULES_RESPONSE);
    CHECK_INT(rules_has_phase(rs, RULES_REQUEST), 1);
    CHECK_INT(rules_has_phase(rs, RULES_RESPONSE), 1);
    rules_unref(rs);
    rs = load("rule s status 200 => delay 1s\n", SEED);
    CHECK_INT(rules_has_phase(rs, RULES_REQUEST), 0);
    CHECK_INT(rules_has_phase(rs, RULES_RESPONSE), 1);
    rules_unref(rs);
}

static void test_normalized_form_reparses_to_itself(void)
{
    const char *text =
        "rule a method GET,HEAD host *.Example.com path \"/a b/*\" header X=\"1 2\" header Y "
        "client ::1 status 5xx,404 chance 2.5% every 2 after 1 limit 3 => set-status 503 "
        "reason \"R \\\"q\\\"\" set-header Retry-After \"5\" del-header Server delay 1s..3s "
        "throttle 2KB/s\n"
        "rule b host \"reset\" => abort 502 body \"{\\\"x\\\":\\\"\\\\\\\\\\\"}\"\n"
        "rule c header X=\"=>\" => truncate 1MB\n";
    struct rules *rs = load(text, SEED);
    CHECK(rs != NULL);
    struct sbuf all = {0};
    for (size_t i = 0; rs && i < rules_count(rs); i++)
        sbuf_printf(&all, "%s\n", rule_normalized(rules_at(rs, i)));
    struct rules *again = load(all.data ? all.data : "", SEED);
    CHECK(again != NULL);
    CHECK_INT(rules_count(again), 3);
    for (size_t i = 0; again && i < rules_count(again); i++)
        CHECK_STR(rule_normalized(rules_at(again, i)), rule_normalized(rules_at(rs, i)));
    sbuf_free(&all);
    rules_unref(rs);
    rules_unref(again);
}

static void test_delay_with_reset_is_allowed(void)
{
    NORMAL("rule r path /x => delay 5s reset", "rule r path /x => delay 5s reset");
}

static void test_throttle_with_abort_is_allowed(void)
{
    NORMAL("rule r => abort 503 throttle 10/s", "rule r => abort 503 throttle 10/s");
}

static void test_response_rule_with_body_codes_may_truncate(void)
{
    NORMAL("rule r status 200,204 => truncate 10", "rule r status 200,204 => truncate 10");
    NORMAL("rule r status 2xx => throttle 1KB/s", "rule r status 2xx => throttle 1KB/s");
}

static void test_required_header_present_gives_no_warning(void)
{
    NORMAL("rule r => abort 301 set-header location \"/new\"",
           "rule r => abort 301 set-header location \"/new\"");
    NORMAL("rule r => set-status 401 set-header WWW-Authenticate \"Basic\"",
           "rule r => set-status 401 set-header WWW-Authenticate \"Basic\"");
    NORMAL("rule r => abort 405 set-header Allow \"GET\"",
           "rule r => abort 405 set-header Allow \"GET\"");
    NORMAL("rule r => abort 407 set-header Proxy-Authenticate \"Basic\"",
           "rule r => abort 407 set-header Proxy-Authenticate \"Basic\"");
    NORMAL("rule r => abort 426 set-header Upgrade \"h2c\"",
           "rule r => abort 426 set-header Upgrade \"h2c\"");
}

static void test_utf8_text_and_columns(void)
{
    NORMAL("rule r => abort 503 reason \"Réessayer\"", "rule r => abort 503 reason \"Réessayer\"");
    /* "é" is one column: the error points at the character, not the byte. */
    ERR_AT("rule r => abort 503 body \"é\" metod", 1, 30, "unknown action 'metod'");
}

/* ================= parsing: errors ================= */

static void test_error_unknown_matcher_suggests(void)
{
    ERR_AT("rule r metod GET => reset", 1, 8, "unknown matcher 'metod' (did you mean 'method'?)");
    ERR_AT("rule r Path /x => reset", 1, 8, "did you mean 'path'?");
    ERR_AT("rule r frobnicate => reset", 1, 8, "unknown matcher 'frobnicate'");
    /* The words after an unknown one are skipped up to the next keyword. */
    ERR_AT("rule r metod GET POST path /x => reset", 1, 8, "metod");
}

static void test_error_unknown_action_suggests(void)
{
    ERR_AT("rule r => abrot 503", 1, 11, "unknown action 'abrot' (did you mean 'abort'?)");
    ERR_AT("rule r => set_status 200", 1, 11, "did you mean 'set-status'?");
    ERR_AT("rule r => delay 1s deley 2s", 1, 20, "did you mean 'delay'?");
    ERR_AT("rule r => patth /x", 1, 11, "did you mean the matcher 'path'?");
}

static void test_error_matcher_after_arrow(void)
{
    ERR_AT("rule r => reset path /x", 1, 17, "'path' is a matcher: matchers go before '=>'");
}

static void test_error_missing_arrow(void)
{
    ERR_AT("rule r path /x", 1, 15, "missing '=>'");
    ERR_AT("rule r", 1, 7, "missing '=>'");
    ERR_AT("rule r path /x abort 503", 1, 16, "missing '=>' before 'abort'");
    ERR_AT("rule r path /x \\\n   abort 503", 2, 4, "missing '=>' before 'abort'");
}

static void test_error_second_arrow(void)
{
    ERR_AT("rule r => reset => delay 1s", 1, 17, "only one '=>'");
}

static void test_error_no_action(void)
{
    ERR_AT("rule r path /x =>", 1, 16, "has no action after '=>'");
    ERR_AT("rule r =>   # nothing\n", 1, 8, "has no action");
}

static void test_error_line_start(void)
{
    ERR_AT("rul r => reset", 1, 1, "did you mean 'rule'?");
    ERR_AT("  path /x => reset", 1, 3, "expected 'rule NAME");
    ERR_AT("\"rule\" r => reset", 1, 1, "expected 'rule NAME");
}

static void test_error_rule_name(void)
{
    ERR_AT("rule", 1, 1, "missing rule name");
    ERR_AT("rule => reset", 1, 1, "missing rule name");
    ERR_AT("rule a/b => reset", 1, 6, "invalid rule name 'a/b'");
    ERR_AT("rule \"a\" => reset", 1, 6, "invalid rule name");
}

static void test_names_may_be_keywords(void)
{
    NORMAL("rule reset => reset", "rule reset => reset");
    NORMAL("rule path path /x => delay 1s", "rule path path /x => delay 1s");
    NORMAL("rule status status 500 => set-status 503", "rule status status 500 => set-status 503");
    /* ... unless a value follows, which means the name was left out. */
    ERR_AT("rule path /x => reset", 1, 1, "missing rule name");
    ERR_AT("rule status 503 => reset", 1, 1, "missing rule name");
}

/* The name index grows and rehashes: a duplicate among thousands is found,
 * and distinct names are never taken for duplicates. */
static void test_duplicate_names_among_many(void)
{
    struct sbuf b = {0};
    for (int i = 0; i < 5000; i++)
        sbuf_printf(&b, "rule r%d => reset\n", i);
    sbuf_puts(&b, "rule r4321 => reset\n");
    ERR_AT(b.data, 5001, 6, "duplicate rule name 'r4321' (first defined at line 4322)");
    sbuf_free(&b);
}

static void test_error_duplicate_name_points_at_second(void)
{
    ERR_AT("rule a => reset\n# gap\nrule  a => delay 1s\n", 3, 7,
           "duplicate rule name 'a' (first defined at line 1)");
}

static void test_error_strings(void)
{
    ERR_AT("rule r => abort 503 body \"abc", 1, 26, "unterminated string");
    ERR_AT("rule r => abort 503 body \"abc\nrule s => reset", 1, 26, "unterminated string");
    ERR_AT("rule r => abort 503 body \"abc \\\n def\"", 1, 26, "unterminated string");
    ERR_AT("rule r => abort 503 body \"a\\qb\"", 1, 28, "unknown escape '\\q'");
    ERR_AT("rule r => abort 503 body \"a\x01\"", 1, 28, "control character 0x01 in string");
}

static void test_error_control_character_outside_string(void)
{
    ERR_AT("rule r\x02 => reset", 1, 7, "control character 0x02 outside a string");
}

static void test_error_lone_backslash(void)
{
    ERR_AT("rule r path /x \\ \n => reset", 1, 16, "continues a line only as its very last");
}

static void test_error_duplicate_matchers(void)
{
    ERR_AT("rule r path /a path /b => reset", 1, 16, "duplicate matcher 'path'");
    ERR_AT("rule r method GET host a method POST => reset", 1, 26, "duplicate matcher 'method'");
    const char *words[] = {"host a", "client ::1", "status 200", "chance 1%", "every 2",
                           "after 2", "limit 2"};
    for (size_t i = 0; i < ARRAY_LEN(words); i++) {
        char text[128];
        snprintf(text, sizeof text, "rule r %s %s => delay 1s", words[i], words[i]);
        ERR_AT(text, 1, (int)(8 + strlen(words[i]) + 1), "duplicate matcher");
    }
}

static void test_header_may_repeat(void)
{
    NORMAL("rule r header A header B=x header A=y => reset",
           "rule r header A header B=x header A=y => reset");
}

static void test_error_duplicate_actions(void)
{
    const char *acts[] = {"abort 503", "set-status 200", "reason \"x\"", "delay 1s",
                          "throttle 1KB/s", "truncate 10"};
    for (size_t i = 0; i < ARRAY_LEN(acts); i++) {
        char text[128];
        snprintf(text, sizeof text, "rule r => %s %s", acts[i], acts[i]);
        ERR_AT(text, 1, (int)(11 + strlen(acts[i]) + 1), "duplicate action");
    }
    ERR_AT("rule r => reset reset", 1, 17, "duplicate action 'reset'");
    ERR_AT("rule r => abort 503 body \"a\" body \"b\"", 1, 30, "duplicate action 'body'");
}

static void test_error_missing_values(void)
{
    ERR_AT("rule r method => reset", 1, 8, "missing value after 'method'");
    ERR_AT("rule r header => reset", 1, 8, "missing value after 'header'");
    ERR_AT("rule r path host x => reset", 1, 8, "missing value after 'path'");
    ERR_AT("rule r => abort", 1, 11, "missing value after 'abort' (expected a status code");
    ERR_AT("rule r => abort delay 1s", 1, 11, "missing value after 'abort'");
    ERR_AT("rule r => set-header X-A", 1, 22, "missing value after 'X-A'");
    ERR_AT("rule r => set-header", 1, 11, "missing value after 'set-header'");
}

static void test_error_status_codes_of_actions(void)
{
    ERR_AT("rule r => abort 101", 1, 17, "can never be the target");
    ERR_AT("rule r => abort 100", 1, 17, "can never be the target");
    ERR_AT("rule r => set-status 103", 1, 22, "can never be the target");
    ERR_AT("rule r => abort 600", 1, 17, "outside 200-599");
    ERR_AT("rule r => abort 99", 1, 17, "outside 200-599");
    ERR_AT("rule r => abort 0", 1, 17, "outside 200-599");
    ERR_AT("rule r => abort 05030", 1, 17, "outside 200-599");
    ERR_AT("rule r => set-status OK", 1, 22, "needs a status code 200-599, got 'OK'");
    ERR_AT("rule r => abort -503", 1, 17, "needs a status code");
}

static void test_warning_non_catalogue_target(void)
{
    WARN_AT("rule r => abort 299", 1, 17, "status 299 is not in the catalogue");
    WARN_AT("rule r status 5xx => set-status 520", 1, 33, "status 520 is not in the catalogue");
}

static void test_warning_required_headers(void)
{
    int codes[] = {301, 302, 303, 307, 308};
    for (size_t i = 0; i < ARRAY_LEN(codes); i++) {
        char text[64];
        snprintf(text, sizeof text, "rule r => abort %d", codes[i]);
        WARN_AT(text, 1, 17, "should carry Location");
    }
    WARN_AT("rule r status 200 => set-status 401", 1, 33, "should carry WWW-Authenticate");
    WARN_AT("rule r => abort 405 set-header X \"y\"", 1, 17, "should carry Allow");
    WARN_AT("rule r => abort 407", 1, 17, "should carry Proxy-Authenticate");
    WARN_AT("rule r => \\\n  abort 426", 2, 9, "should carry Upgrade");
}

static void test_warning_method_case(void)
{
    WARN_AT("rule r method GET,post => reset", 1, 15, "did you mean 'POST'?");
    NORMAL("rule r method PROPFIND,M-SEARCH => reset", "rule r method PROPFIND,M-SEARCH => reset");
}

static void test_warning_path_without_slash(void)
{
    WARN_AT("rule r path pay/* => reset", 1, 13, "does not start with '/'");
    WARN_AT("rule r path /search?q=* => reset", 1, 13, "looks like it has a query");
}

static void test_error_methods(void)
{
    ERR_AT("rule r method GET,,POST => reset", 1, 15, "empty method");
    ERR_AT("rule r method GET, => reset", 1, 15, "empty method");
    ERR_AT("rule r method GE(T => reset", 1, 15, "not a valid method token");
}

static void test_error_globs(void)
{
    ERR_AT("rule r path \"\" => reset", 1, 13, "empty path glob");
    ERR_AT("rule r host \"\" => reset", 1, 13, "empty host glob");
    ERR_AT("rule r host api.local:8080 => reset", 1, 13, "without its port");
    ERR_AT("rule r header X-A= => reset", 1, 15, "empty value glob");
    ERR_AT("rule r header X-A=\"\" => reset", 1, 15, "empty value glob");
    NORMAL("rule r host ::1 => reset", "rule r host ::1 => reset");
}

static void test_error_header_names(void)
{
    ERR_AT("rule r header Bad:Name => reset", 1, 15, "'Bad:Name' is not a valid header name");
    ERR_AT("rule r header =x => reset", 1, 15, "is not a valid header name");
    ERR_AT("rule r => set-header \"X A\" \"v\"", 1, 22, "'X A' is not a valid header name");
    ERR_AT("rule r => del-header X(", 1, 22, "not a valid header name");
}

static void test_error_framing_headers(void)
{
    ERR_AT("rule r => set-header Content-Length \"3\"", 1, 22, "framing header Content-Length");
    ERR_AT("rule r => set-header transfer-encoding \"chunked\"", 1, 22,
           "framing header Transfer-Encoding");
    ERR_AT("rule r => del-header Connection", 1, 22, "framing header Connection");
    ERR_AT("rule r => del-header CONTENT-LENGTH", 1, 22, "framing header");
}

static void test_error_repeated_header_actions(void)
{
    ERR_AT("rule r => set-header X-A \"1\" set-header x-a \"2\"", 1, 41,
           "already changed by 'set-header'");
    ERR_AT("rule r => del-header X-A del-header X-A", 1, 37, "already changed by 'del-header'");
    ERR_AT("rule r => set-header X-A \"1\" del-header X-A", 1, 41, "already changed by");
}

static void test_error_head_text(void)
{
    ERR_AT("rule r => reason \"a\\nb\"", 1, 18, "a reason phrase may not contain a line break");
    ERR_AT("rule r => reason \"a\\tb\"", 1, 18, "control characters");
    ERR_AT("rule r => set-header X \"a\\nb\"", 1, 24, "a header value may not contain a line");
    ERR_AT("rule r => reason Busy", 1, 18, "needs a quoted string here");
    ERR_AT("rule r => set-header X 5", 1, 24, "needs a quoted string here");
    ERR_AT("rule r => abort 503 body x", 1, 26, "needs a quoted string");
}

static void test_error_client(void)
{
    ERR_AT("rule r client 10.0.0.0/33 => reset", 1, 15, "invalid address or CIDR block");
    ERR_AT("rule r client localhost => reset", 1, 15, "invalid address or CIDR block");
    ERR_AT("rule r client 10.1.2.3/8 => reset", 1, 15, "did you mean 10.0.0.0/8?");
}

static void test_error_status_spec(void)
{
    ERR_AT("rule r status 6xx => reset", 1, 15, "outside 1xx-5xx");
    ERR_AT("rule r status 600 => reset", 1, 15, "status 600 is outside 100-599");
    ERR_AT("rule r status 99 => reset", 1, 15, "outside 100-599");
    ERR_AT("rule r status 504-500 => reset", 1, 15, "reversed");
    ERR_AT("rule r status 500-600 => reset", 1, 15, "status 600 is outside");
    ERR_AT("rule r status 500,,502 => reset", 1, 15, "empty item");
    ERR_AT("rule r status 5xx, => reset", 1, 15, "empty item");
    ERR_AT("rule r status abc => reset", 1, 15, "invalid status 'abc'");
    ERR_AT("rule r status 50x => reset", 1, 15, "invalid status '50x'");
}

static void test_error_chance(void)
{
    ERR_AT("rule r chance 150% => reset", 1, 15, "outside 0-100%");
    ERR_AT("rule r chance 100.5% => reset", 1, 15, "outside 0-100%");
    ERR_AT("rule r chance -1% => reset", 1, 15, "outside 0-100%");
    ERR_AT("rule r chance 10 => reset", 1, 15, "needs a percentage with '%'");
    ERR_AT("rule r chance 0.1 => reset", 1, 15, "needs a percentage with '%'");
    ERR_AT("rule r chance % => reset", 1, 15, "invalid percentage");
    ERR_AT("rule r chance 5.% => reset", 1, 15, "invalid percentage");
    ERR_AT("rule r chance .5% => reset", 1, 15, "invalid percentage");
    ERR_AT("rule r chance 1e2% => reset", 1, 15, "invalid percentage");
    ERR_AT("rule r chance 1.1234567% => reset", 1, 15, "more than 6 decimals");
}

static void test_error_counts(void)
{
    ERR_AT("rule r every 0 => reset", 1, 14, "'every 0' can never hold");
    ERR_AT("rule r limit 0 => reset", 1, 14, "'limit 0' can never hold");
    ERR_AT("rule r after -1 => reset", 1, 14, "invalid count '-1'");
    ERR_AT("rule r every x => reset", 1, 14, "invalid count 'x'");
    ERR_AT("rule r limit 99999999999999999999 => reset", 1, 14, "invalid count");
    NORMAL("rule r after 0 => reset", "rule r after 0 => reset");
}

static void test_error_values_of_actions(void)
{
    ERR_AT("rule r => delay 5", 1, 17, "invalid duration '5'");
    ERR_AT("rule r => delay 1.5s", 1, 17, "invalid duration");
    ERR_AT("rule r => delay 5s..1s", 1, 17, "MIN greater than MAX");
    ERR_AT("rule r => delay 1s..", 1, 17, "invalid duration '' in delay range");
    ERR_AT("rule r => delay 1x..2s", 1, 17, "invalid duration '1x' in delay range");
    ERR_AT("rule r => throttle 64KB", 1, 20, "invalid rate '64KB'");
    ERR_AT("rule r => throttle 0/s", 1, 20, "invalid rate");
    ERR_AT("rule r => truncate 1x", 1, 20, "invalid byte count '1x'");
    ERR_AT("rule r => truncate -1", 1, 20, "invalid byte count");
}

static void test_error_body_without_abort(void)
{
    ERR_AT("rule r => body \"x\"", 1, 11, "'body' needs 'abort'");
    ERR_AT("rule r status 200 => set-status 204 body \"x\"", 1, 37, "'body' needs 'abort'");
}

static void test_error_body_on_bodiless_abort(void)
{
    ERR_AT("rule r => abort 204 body \"x\"", 1, 21, "a 204 answer carries no body");
    ERR_AT("rule r => abort 304 body \"x\"", 1, 21, "a 304 answer carries no body");
}

static void test_error_abort_with_set_status(void)
{
    ERR_AT("rule r => abort 503 set-status 200", 1, 21,
           "'set-status' cannot be combined with 'abort'");
    ERR_AT("rule r => set-status 200 abort 503", 1, 26,
           "'abort' cannot be combined with 'set-status'");
}

static void test_error_reset_with_writers(void)
{
    const char *writers[] = {"abort 503",      "set-status 200", "reason \"x\"",
                             "set-header X \"y\"", "del-header X",  "throttle 1KB/s",
                             "truncate 10"};
    for (size_t i = 0; i < ARRAY_LEN(writers); i++) {
        char text[128];
        snprintf(text, sizeof text, "rule r => reset %s", writers[i]);
        ERR_AT(text, 1, 17, "cannot be combined with 'reset'");
        snprintf(text, sizeof text, "rule r => %s reset", writers[i]);
        ERR_AT(text, 1, (int)(11 + strlen(writers[i]) + 1), "'reset' cannot be combined");
    }
}

static void test_error_truncate_with_abort(void)
{
    ERR_AT("rule r => abort 503 truncate 10", 1, 21, "'truncate' cannot be combined with 'abort'");
}

static void test_error_body_actions_without_body(void)
{
    ERR_AT("rule r status 204 => truncate 10", 1, 22, "the statuses this rule matches carry no");
    ERR_AT("rule r status 204,304 => throttle 1KB/s", 1, 26, "carry no body");
    ERR_AT("rule r status 1xx => truncate 10", 1, 22, "carry no body");
    ERR_AT("rule r status 200 => set-status 204 truncate 10", 1, 37, "a 204 answer carries no");
    ERR_AT("rule r => set-status 304 throttle 1KB/s", 1, 26, "a 304 answer carries no body");
    ERR_AT("rule r => abort 204 throttle 1KB/s", 1, 21, "a 204 answer carries no body");
}

static void test_errors_are_all_collected_in_order(void)
{
    const char *text = "rule a metod GET => reset\n"
                       "rule ok => delay 1s\n"
                       "rule b => abort 101\n"
                       "rule c path /x\n"
                       "rule a => abort 301\n";
    struct rules_diags d = {0};
    struct rules *rs = parse_seed(text, SEED, &d);
    CHECK(rs == NULL);
    CHECK_INT(d.errors, 4);
    CHECK_INT(d.n, 5);
    int want_lines[] = {1, 3, 4, 5, 5};
    int want_errors[] = {1, 1, 1, 1, 0};
    for (size_t i = 0; i < d.n && i < 5; i++) {
        CHECK_INT(d.items[i].line, want_lines[i]);
        CHECK_INT(d.items[i].is_error, want_errors[i]);
    }
    rules_diags_free(&d);
}

static void test_one_rule_many_errors(void)
{
    struct rules_diags d = {0};
    struct rules *rs =
        parse_seed("rule r chance 150% every 0 => delay 5s..1s throttle 1 reset abort 503", SEED,
                   &d);
    CHECK(rs == NULL);
    CHECK_INT(d.errors, 6); /* chance, every, delay, throttle, reset with throttle and abort */
    rules_diags_free(&d);
}

static void test_error_in_continued_line_points_at_physical_line(void)
{
    ERR_AT("rule r method GET \\\n    path /x \\\n    status 6xx => set-status 503", 3, 12,
           "outside 1xx-5xx");
}

static void test_diag_format(void)
{
    struct rules_diag e = {3, 7, 1, "boom"}, w = {1, 2, 0, "hmm"}, z = {0, 0, 1, "gone"};
    char *s = rules_diag_format("f.rules", &e);
    CHECK_STR(s, "f.rules:3:7: error: boom");
    free(s);
    s = rules_diag_format("f.rules", &w);
    CHECK_STR(s, "f.rules:1:2: warning: hmm");
    free(s);
    s = rules_diag_format("f.rules", &z);
    CHECK_STR(s, "f.rules: error: gone");
    free(s);
}

static void test_diags_may_be_null(void)
{
    struct rules *rs = parse_seed("rule r => reset", SEED, NULL);
    CHECK(rs != NULL);
    rules_unref(rs);
    CHECK(parse_seed("rule r", SEED, NULL) == NULL);
}

static void test_load_file(void)
{
    struct rules_diags d = {0};
    CHECK(rules_load_file("/nonexistent/dir/x.rules", SEED, &d) == NULL);
    CHECK_INT(d.n, 1);
    CHECK_INT(d.errors, 1);
    CHECK_INT(d.items[0].line, 0);
    CHECK(strstr(d.items[0].message, "cannot read") != NULL);
    rules_diags_free(&d);

    char path[] = "/tmp/test_rules_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("rule a => delay 1s\nrule b status 5xx => set-status 503\n", f);
    fclose(f);
    struct rules *rs = rules_load_file(path, SEED, &d);
    CHECK(rs != NULL);
    CHECK_INT(rules_count(rs), 2);
    CHECK_INT(d.n, 0);
    rules_unref(rs);
    rules_diags_free(&d);
    remove(path);
}

/* ================= matching ================= */

static void test_first_match_in_file_order(void)
{
    struct rules *rs = load("rule one path /a/* => delay 1s\n"
                            "rule two path /a/b => delay 2s\n"
                            "rule three path /c => delay 3s\n",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/a/b");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "one");
    e.x.path = "/c";
    e.x.path_len = 2;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "three");
    e.x.path = "/d";
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    CHECK_INT(rule_hits(rules_at(rs, 0)), 1);
    CHECK_INT(rule_hits(rules_at(rs, 1)), 0);
    CHECK_INT(rule_hits(rules_at(rs, 2)), 1);
    xch_free(&e);
    rules_unref(rs);
}

static void test_phases_are_separate(void)
{
    struct rules *rs = load("rule resp status 503 => set-status 500\n"
                            "rule req path /x => delay 1s\n",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/x");
    e.x.status = 503;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "req");
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "resp");
    e.x.status = 200;
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "-");
    xch_free(&e);
    rules_unref(rs);
}

static void test_rule_without_matchers_matches_everything(void)
{
    struct rules *rs = load("rule all => delay 1s", SEED);
    struct xch e;
    xch_init(&e, "DELETE", "x", "/y");
    e.x.request = NULL;
    e.x.client = NULL;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "all");
    xch_free(&e);
    rules_unref(rs);
}

static void test_match_method_case_sensitive(void)
{
    struct rules *rs = load("rule m method GET,POST => delay 1s", SEED);
    struct xch e;
    const char *methods[] = {"GET", "POST", "get", "PUT", "GETX", "GE"};
    const char *want[] = {"m", "m", "-", "-", "-", "-"};
    for (size_t i = 0; i < ARRAY_LEN(methods); i++) {
        xch_init(&e, methods[i], "h", "/");
        CHECK_STR(match_name(rs, RULES_REQUEST, &e), want[i]);
        xch_free(&e);
    }
    rules_unref(rs);
}

static void test_match_host_case_insensitive(void)
{
    struct rules *rs = load("rule h host *.Example.com => delay 1s", SEED);
    struct xch e;
    const char *hosts[] = {"api.example.com", "API.EXAMPLE.COM", "example.com", "a.b.example.com",
                           "example.com.evil"};
    const char *want[] = {"h", "h", "-", "h", "-"};
    for (size_t i = 0; i < ARRAY_LEN(hosts); i++) {
        xch_init(&e, "GET", hosts[i], "/");
        CHECK_STR(match_name(rs, RULES_REQUEST, &e), want[i]);
        xch_free(&e);
    }
    xch_init(&e, "GET", "", "/");
    e.x.host = NULL;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    xch_free(&e);
    rules_unref(rs);
}

static void test_match_path_glob(void)
{
    struct rules *rs = load("rule p path /pay/*/confirm => delay 1s\nrule q path /v?/x => delay 1s",
                            SEED);
    struct xch e;
    const char *paths[] = {"/pay/1/confirm", "/pay/a/b/confirm", "/pay/confirm", "/PAY/1/confirm",
                           "/v1/x", "/v12/x"};
    const char *want[] = {"p", "p", "-", "-", "q", "-"};
    for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
        xch_init(&e, "GET", "h", paths[i]);
        CHECK_STR(match_name(rs, RULES_REQUEST, &e), want[i]);
        xch_free(&e);
    }
    rules_unref(rs);
}

static void test_match_headers(void)
{
    struct rules *rs = load("rule both header x-debug header X-Mode=fast* => delay 1s\n"
                            "rule val header Accept=*json* => delay 1s\n"
                            "rule present header X-Debug => delay 1s\n",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    xch_header(&e, "X-DEBUG", "");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "present");
    xch_header(&e, "x-mode", "slow");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "present");
    xch_header(&e, "X-Mode", "fastest"); /* a second field of that name may match */
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "both");
    xch_free(&e);

    xch_init(&e, "GET", "h", "/");
    xch_header(&e, "Accept", "text/html");
    xch_header(&e, "accept", "application/json");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "val");
    xch_free(&e);

    xch_init(&e, "GET", "h", "/");
    xch_header(&e, "Accept", "APPLICATION/JSON"); /* values compare case-sensitively */
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    e.x.request = NULL;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    xch_free(&e);

    /* A field marked removed is not seen. */
    xch_init(&e, "GET", "h", "/");
    xch_header(&e, "X-Debug", "1");
    http_head_remove(&e.head, "x-debug");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    xch_free(&e);
    rules_unref(rs);
}

static void test_match_client(void)
{
    struct rules *rs = load("rule lan client 10.0.0.0/8 => delay 1s\n"
                            "rule six client 2001:db8::/32 => delay 1s\n"
                            "rule lo client 127.0.0.1 => delay 1s\n",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    const char *ips[] = {"10.9.8.7", "::ffff:10.1.1.1", "2001:db8::1", "127.0.0.1",
                         "::ffff:127.0.0.1", "127.0.0.2", "::1"};
    const char *want[] = {"lan", "lan", "six", "lo", "lo", "-", "-"};
    for (size_t i = 0; i < ARRAY_LEN(ips); i++) {
        xch_client(&e, ips[i]);
        CHECK_STR(match_name(rs, RULES_REQUEST, &e), want[i]);
    }
    e.x.client = NULL;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    xch_free(&e);
    rules_unref(rs);
}

static void test_match_status(void)
{
    struct rules *rs = load("rule s status 404,500-502,3xx => set-status 200", SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    int codes[] = {404, 500, 501, 502, 503, 300, 399, 200, 0, 99, 600, 999, -1};
    const char *want[] = {"s", "s", "s", "s", "-", "s", "s", "-", "-", "-", "-", "-", "-"};
    for (size_t i = 0; i < ARRAY_LEN(codes); i++) {
        e.x.status = codes[i];
        CHECK_STR(match_name(rs, RULES_RESPONSE, &e), want[i]);
    }
    xch_free(&e);
    rules_unref(rs);
}

static void test_all_static_matchers_must_hold(void)
{
    struct rules *rs = load("rule all method POST host api path /pay header X-A client ::1 "
                            "status 5xx => set-status 503",
                            SEED);
    struct xch e;
    xch_init(&e, "POST", "api", "/pay");
    xch_header(&e, "X-A", "1");
    xch_client(&e, "::1");
    e.x.status = 502;
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "all");
    e.x.method = "PUT";
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "-");
    e.x.method = "POST";
    e.x.status = 404;
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "-");
    e.x.status = 502;
    xch_client(&e, "::2");
    CHECK_STR(match_name(rs, RULES_RESPONSE, &e), "-");
    xch_free(&e);
    rules_unref(rs);
}

static void test_every(void)
{
    struct rules *rs = load("rule e path /x every 3 => delay 1s", SEED);
    struct xch e, other;
    char buf[32];
    xch_init(&e, "GET", "h", "/x");
    xch_init(&other, "GET", "h", "/y");
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 4, buf), "0010");
    /* Exchanges the static matchers reject do not count. */
    CHECK_STR(pattern(rs, RULES_REQUEST, &other, 5, buf), "00000");
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 8, buf), "01001001");
    CHECK_INT(rule_hits(rules_at(rs, 0)), 4);
    xch_free(&e);
    xch_free(&other);
    rules_unref(rs);
}

static void test_after(void)
{
    struct rules *rs = load("rule a after 2 => delay 1s\nrule z after 0 => delay 1s", SEED);
    struct xch e;
    char buf[32];
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "z");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "z");
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 3, buf), "111");
    CHECK_INT(rule_hits(rules_at(rs, 0)), 3);
    CHECK_INT(rule_hits(rules_at(rs, 1)), 2);
    xch_free(&e);
    rules_unref(rs);
}

static void test_every_and_after_share_one_counter(void)
{
    /* n = 1..10; every 2 holds at even n, after 3 at n > 3: 4, 6, 8, 10. */
    struct rules *rs = load("rule r every 2 after 3 => delay 1s", SEED);
    struct xch e;
    char buf[32];
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 10, buf), "0001010101");
    xch_free(&e);
    rules_unref(rs);
}

static void test_limit(void)
{
    struct rules *rs = load("rule l limit 2 => abort 503\nrule rest => delay 1s", SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "l");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "l");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "rest");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "rest");
    CHECK_INT(rule_hits(rules_at(rs, 0)), 2);
    rules_unref(rs);

    /* A reload is a new set: the limit starts over. */
    rs = load("rule l limit 2 => abort 503\nrule rest => delay 1s", SEED);
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "l");
    xch_free(&e);
    rules_unref(rs);
}

static void test_limit_counts_only_when_other_matchers_hold(void)
{
    struct rules *rs = load("rule l every 2 limit 2 => abort 503", SEED);
    struct xch e;
    char buf[32];
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 8, buf), "01010000");
    xch_free(&e);
    rules_unref(rs);
}

/* The chance pattern of a 30% rule over N exchanges. */
static void chance_pattern(uint64_t seed, int n, char *buf)
{
    struct rules *rs = load("rule c chance 30% => delay 1s", seed);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    pattern(rs, RULES_REQUEST, &e, n, buf);
    xch_free(&e);
    rules_unref(rs);
}

static void test_chance_is_reproducible_from_the_seed(void)
{
    char a[1001], b[1001], c[1001];
    chance_pattern(7, 1000, a);
    chance_pattern(7, 1000, b);
    chance_pattern(8, 1000, c);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0);
}

static void test_chance_frequency(void)
{
    /* 10000 draws at p = 0.1: mean 1000, sd 30; allow 4 sd. */
    const uint64_t seeds[] = {1, 2, 3, 12345678901234567ULL};
    for (size_t s = 0; s < ARRAY_LEN(seeds); s++) {
        struct rules *rs = load("rule c chance 10% => delay 1s", seeds[s]);
        struct xch e;
        xch_init(&e, "GET", "h", "/");
        int hits = 0;
        struct rules_verdict v;
        for (int i = 0; i < 10000; i++)
            hits += rules_match(rs, RULES_REQUEST, &e.x, &v);
        if (hits < 880 || hits > 1120)
            fprintf(stderr, "  seed %llu: %d hits\n", (unsigned long long)seeds[s], hits);
        CHECK(hits >= 880 && hits <= 1120);
        CHECK_INT(rule_hits(rules_at(rs, 0)), hits);
        xch_free(&e);
        rules_unref(rs);
    }
    /* A small probability: 0.5% of 100000 is 500, sd ~22. */
    struct rules *rs = load("rule c chance 0.5% => delay 1s", 99);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    int hits = 0;
    struct rules_verdict v;
    for (int i = 0; i < 100000; i++)
        hits += rules_match(rs, RULES_REQUEST, &e.x, &v);
    CHECK(hits >= 410 && hits <= 590);
    xch_free(&e);
    rules_unref(rs);
}

static void test_chance_bounds(void)
{
    struct rules *rs = load("rule never chance 0% => delay 1s\nrule always chance 100% => delay 2s",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    for (int i = 0; i < 2000; i++)
        CHECK_STR(match_name(rs, RULES_REQUEST, &e), "always");
    xch_free(&e);
    rules_unref(rs);
}

static void test_chance_independent_of_other_rules(void)
{
    /* A rule's draws are keyed by its name, not its position. */
    char a[201], b[201];
    struct rules *rs = load("rule c chance 30% => delay 1s", 5);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    pattern(rs, RULES_REQUEST, &e, 200, a);
    rules_unref(rs);
    rs = load("rule other path /nope => delay 1s\nrule c chance 30% => delay 1s", 5);
    pattern(rs, RULES_REQUEST, &e, 200, b);
    CHECK_STR(a, b);
    xch_free(&e);
    rules_unref(rs);
}

static void test_delay_range(void)
{
    struct rules *rs = load("rule d => delay 100ms..103ms", 3);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    int seen[4] = {0};
    uint64_t first[50];
    for (int i = 0; i < 1000; i++) {
        struct rules_verdict v;
        CHECK_INT(rules_match(rs, RULES_REQUEST, &e.x, &v), 1);
        CHECK(v.delay_ms >= 100 && v.delay_ms <= 103);
        if (v.delay_ms >= 100 && v.delay_ms <= 103)
            seen[v.delay_ms - 100]++;
        if (i < 50)
            first[i] = v.delay_ms;
    }
    for (int k = 0; k < 4; k++)
        CHECK(seen[k] > 150 && seen[k] < 350);
    rules_unref(rs);

    /* The same seed gives the same delays. */
    rs = load("rule d => delay 100ms..103ms", 3);
    for (int i = 0; i < 50; i++) {
        struct rules_verdict v;
        rules_match(rs, RULES_REQUEST, &e.x, &v);
        CHECK_INT(v.delay_ms, first[i]);
    }
    xch_free(&e);
    rules_unref(rs);
}

static void test_delay_fixed_and_none(void)
{
    struct rules *rs = load("rule f path /f => delay 250ms\nrule n => set-status 200", SEED);
    struct xch e;
    struct rules_verdict v;
    xch_init(&e, "GET", "h", "/f");
    CHECK_INT(rules_match(rs, RULES_REQUEST, &e.x, &v), 1);
    CHECK_INT(v.delay_ms, 250);
    CHECK(v.actions == rule_get_actions(v.rule));
    e.x.path = "/g";
    e.x.path_len = 2;
    CHECK_INT(rules_match(rs, RULES_REQUEST, &e.x, &v), 1);
    CHECK_STR(rule_name(v.rule), "n");
    CHECK_INT(v.delay_ms, 0);
    xch_free(&e);
    rules_unref(rs);
}

static void test_enable_disable(void)
{
    struct rules *rs = load("rule a => delay 1s\nrule b => delay 2s", SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    CHECK_INT(rule_enabled(rules_at(rs, 0)), 1);
    CHECK_INT(rules_set_enabled(rs, "a", 0), 0);
    CHECK_INT(rule_enabled(rules_at(rs, 0)), 0);
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "b");
    CHECK_INT(rules_set_enabled(rs, "b", 0), 0);
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    CHECK_INT(rules_set_enabled(rs, "a", 1), 0);
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "a");
    CHECK_INT(rules_set_enabled(rs, "nope", 1), -1);
    CHECK_INT(rule_hits(rules_at(rs, 0)), 1);
    CHECK_INT(rule_hits(rules_at(rs, 1)), 1);
    xch_free(&e);
    rules_unref(rs);
}

static void test_disabled_rule_does_not_count(void)
{
    struct rules *rs = load("rule e every 2 => delay 1s", SEED);
    struct xch e;
    char buf[16];
    xch_init(&e, "GET", "h", "/");
    rules_set_enabled(rs, "e", 0);
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 3, buf), "000");
    rules_set_enabled(rs, "e", 1);
    CHECK_STR(pattern(rs, RULES_REQUEST, &e, 4, buf), "0101");
    xch_free(&e);
    rules_unref(rs);
}

static void test_later_rules_do_not_count_when_an_earlier_one_applies(void)
{
    struct rules *rs = load("rule first limit 2 => delay 1s\nrule second every 2 => delay 2s",
                            SEED);
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "first");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "first");
    /* second sees its 1st and 2nd exchanges only now. */
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "-");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "second");
    xch_free(&e);
    rules_unref(rs);
}

static void test_find(void)
{
    struct rules *rs = load("rule a => delay 1s\nrule b status 500 => set-status 503", SEED);
    CHECK(rules_find(rs, "b") == rules_at(rs, 1));
    CHECK(rules_find(rs, "c") == NULL);
    CHECK(rules_at(rs, 2) == NULL);
    rules_unref(rs);
}

static void test_refcount(void)
{
    struct rules *rs = load("rule a => delay 1s", SEED);
    CHECK(rules_ref(rs) == rs);
    rules_ref(rs);
    rules_unref(rs);
    rules_unref(rs);
    CHECK_STR(rule_name(rules_at(rs, 0)), "a"); /* still referenced once */
    rules_unref(rs);                            /* freed here; ASan checks for leaks */
    rules_unref(NULL);
}

struct worker {
    struct rules *rs;
    int matched;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct xch e;
    xch_init(&e, "GET", "h", "/");
    struct rules_verdict v;
    for (int i = 0; i < 20000; i++)
        if (rules_match(w->rs, RULES_REQUEST, &e.x, &v) && strcmp(rule_name(v.rule), "l") == 0)
            w->matched++;
    xch_free(&e);
    rules_unref(w->rs);
    return NULL;
}

static void test_threads_share_one_set(void)
{
    struct rules *rs = load("rule l limit 1000 => abort 503\nrule e every 4 => delay 1s", SEED);
    struct worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){rules_ref(rs), 0};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += w[i].matched;
    }
    CHECK_INT(total, 1000);
    CHECK_INT(rule_hits(rules_at(rs, 0)), 1000);
    /* 80000 - 1000 exchanges reached rule e: exactly a quarter applied. */
    CHECK_INT(rule_hits(rules_at(rs, 1)), 79000 / 4);
    rules_unref(rs);
}

/* `scheme` (DESIGN §9) selects on the exchange's scheme: a blind tunnel's
 * CONNECT is neither http nor https. */
static void test_scheme_matcher(void)
{
    struct rules *rs = load("rule tls scheme https => abort 503\n"
                            "rule plain scheme HTTP path /p => abort 502\n"
                            "rule any => abort 500\n",
                            SEED);
    CHECK(rs != NULL);
    if (!rs)
        return;
    struct xch e;
    xch_init(&e, "GET", "h.example", "/p");
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "plain");
    e.x.scheme = AUDIT_SCHEME_HTTPS;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "tls");
    xch_free(&e);
    xch_init(&e, "CONNECT", "h.example", "");
    e.x.scheme = AUDIT_SCHEME_TUNNEL;
    CHECK_STR(match_name(rs, RULES_REQUEST, &e), "any");
    xch_free(&e);
    rules_unref(rs);
    ERR_AT("rule x scheme ftp => reset", 1, 15, "invalid scheme 'ftp'");
    ERR_AT("rule x scheme tunnel => reset", 1, 15, "'scheme tunnel' cannot be matched");
}

int main(void)
{
    RUN(test_scheme_matcher);
    RUN(test_empty_file_and_comments);
    RUN(test_design_examples);
    RUN(test_rule_without_matchers);
    RUN(test_name_characters);
    RUN(test_normalized_matchers);
    RUN(test_normalized_actions);
    RUN(test_continuation_lines);
    RUN(test_source_keeps_spacing_as_written);
    RUN(test_comment_backslash_does_not_continue);
    RUN(test_crlf_and_final_line_without_newline);
    RUN(test_hash_inside_string_is_text);
    RUN(test_actions_text);
    RUN(test_action_struct);
    RUN(test_body_is_json);
    RUN(test_phases);
    RUN(test_normalized_form_reparses_to_itself);
    RUN(test_delay_with_reset_is_allowed);
    RUN(test_throttle_with_abort_is_allowed);
    RUN(test_response_rule_with_body_codes_may_truncate);
    RUN(test_required_header_present_gives_no_warning);
    RUN(test_utf8_text_and_columns);

    RUN(test_error_unknown_matcher_suggests);
    RUN(test_error_unknown_action_suggests);
    RUN(test_error_matcher_after_arrow);
    RUN(test_error_missing_arrow);
    RUN(test_error_second_arrow);
    RUN(test_error_no_action);
    RUN(test_error_line_start);
    RUN(test_error_rule_name);
    RUN(test_names_may_be_keywords);
    RUN(test_error_duplicate_name_points_at_second);
    RUN(test_duplicate_names_among_many);
    RUN(test_error_strings);
    RUN(test_error_control_character_outside_string);
    RUN(test_error_lone_backslash);
    RUN(test_error_duplicate_matchers);
    RUN(test_header_may_repeat);
    RUN(test_error_duplicate_actions);
    RUN(test_error_missing_values);
    RUN(test_error_status_codes_of_actions);
    RUN(test_warning_non_catalogue_target);
    RUN(test_warning_required_headers);
    RUN(test_warning_method_case);
    RUN(test_warning_path_without_slash);
    RUN(test_error_methods);
    RUN(test_error_globs);
    RUN(test_error_header_names);
    RUN(test_error_framing_headers);
    RUN(test_error_repeated_header_actions);
    RUN(test_error_head_text);
    RUN(test_error_client);
    RUN(test_error_status_spec);
    RUN(test_error_chance);
    RUN(test_error_counts);
    RUN(test_error_values_of_actions);
    RUN(test_error_body_without_abort);
    RUN(test_error_body_on_bodiless_abort);
    RUN(test_error_abort_with_set_status);
    RUN(test_error_reset_with_writers);
    RUN(test_error_truncate_with_abort);
    RUN(test_error_body_actions_without_body);
    RUN(test_errors_are_all_collected_in_order);
    RUN(test_one_rule_many_errors);
    RUN(test_error_in_continued_line_points_at_physical_line);
    RUN(test_diag_format);
    RUN(test_diags_may_be_null);
    RUN(test_load_file);

    RUN(test_first_match_in_file_order);
    RUN(test_phases_are_separate);
    RUN(test_rule_without_matchers_matches_everything);
    RUN(test_match_method_case_sensitive);
    RUN(test_match_host_case_insensitive);
    RUN(test_match_path_glob);
    RUN(test_match_headers);
    RUN(test_match_client);
    RUN(test_match_status);
    RUN(test_all_static_matchers_must_hold);
    RUN(test_every);
    RUN(test_after);
    RUN(test_every_and_after_share_one_counter);
    RUN(test_limit);
    RUN(test_limit_counts_only_when_other_matchers_hold);
    RUN(test_chance_is_reproducible_from_the_seed);
    RUN(test_chance_frequency);
    RUN(test_chance_bounds);
    RUN(test_chance_independent_of_other_rules);
    RUN(test_delay_range);
    RUN(test_delay_fixed_and_none);
    RUN(test_enable_disable);
    RUN(test_disabled_rule_does_not_count);
    RUN(test_later_rules_do_not_count_when_an_earlier_one_applies);
    RUN(test_find);
    RUN(test_refcount);
    RUN(test_threads_share_one_set);
    return unit_summary("rules");
}
