/*
 * main — parses the command line, wires the modules together, and is the
 * one place that exits. Exit status: 0 success, 1 runtime failure, 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca_cli.h"
#include "catalog.h"
#include "db.h"
#include "fault.h"
#include "listen_tls.h"
#include "log.h"
#include "options.h"
#include "report.h"
#include "rules.h"
#include "server.h"
#include "intercept.h"
#include "tls_engine.h"
#include "util.h"

static const char usage_text[] =
    "usage: statusproxy [run] [options]        run the proxy\n"
    "       statusproxy report [options]       statistics from one or more databases\n"
    "       statusproxy rules check FILE       validate a rule file\n"
    "       statusproxy migrate --db FILE      apply pending migrations\n"
    "       statusproxy codes [--format json]  the status catalogue\n"
    "       statusproxy ca init [--dir DIR]    create the local CA for HTTPS\n"
    "Run 'statusproxy run --help' for the proxy's options.\n";

static int cmd_codes(int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
            const char *f = argv[++i];
            if (strcmp(f, "json") == 0)
                json = 1;
            else if (strcmp(f, "table") != 0) {
                fprintf(stderr, "statusproxy codes: --format: expected table or json, got '%s'\n", f);
                return 2;
            }
        } else {
            fprintf(stderr, "statusproxy codes: %s: unknown option\n", argv[i]);
            return 2;
        }
    }
    size_t n;
    const struct catalog_entry *e = catalog_entries(&n);
    struct sbuf out = {0};
    if (json)
        sbuf_puts(&out, "[\n");
    else
        sbuf_printf(&out, "%-4s  %-32s  %-5s  %s\n", "CODE", "NAME", "CLASS", "MARKS");
    for (size_t i = 0; i < n; i++) {
        char marks[64];
        catalog_marks_text(e[i].marks, marks, sizeof marks);
        if (!json) {
            if (e[i].note)
                sbuf_printf(&out, "%-4d  %-32s  %-5s  %s%s(%s)\n", e[i].code, e[i].name,
                            catalog_class_name(e[i].code), marks, marks[0] ? " " : "", e[i].note);
            else
                sbuf_printf(&out, "%-4d  %-32s  %-5s  %s\n", e[i].code, e[i].name,
                            catalog_class_name(e[i].code), marks);
            continue;
        }
        sbuf_printf(&out, "  {\"code\": %d, \"name\": \"", e[i].code);
        sbuf_json_escape(&out, e[i].name, strlen(e[i].name));
        sbuf_printf(&out, "\", \"class\": \"%s\", \"kind\": \"standard\", \"marks\": [",
                    catalog_class_name(e[i].code));
        int first = 1;
        for (size_t m = 0; m < catalog_mark_count(); m++) {
            unsigned bit;
            const char *name = catalog_mark_name(m, &bit);
            if (e[i].marks & bit) {
                sbuf_printf(&out, "%s\"%s\"", first ? "" : ", ", name);
                first = 0;
            }
        }
        sbuf_puts(&out, "], \"note\": ");
        if (e[i].note)
            sbuf_printf(&out, "\"%s\"", e[i].note);
        else
            sbuf_puts(&out, "null");
        sbuf_printf(&out, "}%s\n", i + 1 < n ? "," : "");
    }
    if (json)
        sbuf_puts(&out, "]\n");
    fwrite(out.data, 1, out.len, stdout);
    sbuf_free(&out);
    return 0;
}

/* The TLS client config for --upstream https:// (DESIGN §9), built once
 * and shared by the workers. A CA file that cannot be used is a usage error
 * naming --upstream-ca. Returns 0 or 2. */
static int upstream_tls_setup(struct run_options *o)
{
    if (!o->upstream_https && !o->upstream_ca)
        return 0;
    char err[512];
    struct tls_engine_config *cfg =
        tls_engine_client_config(o->upstream_ca, o->upstream_insecure != 0, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "statusproxy: --upstream-ca: %s\n", err);
        return 2;
    }
    if (!o->upstream_https) {
        tls_engine_config_free(cfg); /* checked, but nothing speaks TLS upstream */
        return 0;
    }
    o->upstream_tls = cfg;
    if (o->upstream_insecure)
        LOG(LOG_WARN, "--upstream-insecure: the certificate of %s is not verified; anyone on "
                      "the path can pose as it", o->upstream_authority);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    struct run_options opts;
    char err[512];
    options_defaults(&opts);
    int rc = options_parse(&opts, argc, argv, err, sizeof err);
    if (rc == 1) {
        fputs(options_help, stdout);
        options_free(&opts);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "statusproxy: %s\n", err);
        options_free(&opts);
        return 2;
    }
    log_set_level((enum log_level)opts.log_level);
    /* The fault headers' stream: reproducible with --seed, else random. */
    fault_set_seed(opts.has_seed ? opts.seed : time_mono_us() ^ ((uint64_t)getpid() << 32));
    fault_set_max_active(opts.max_active_faults);
    if (upstream_tls_setup(&opts) != 0) {
        options_free(&opts);
        return 2;
    }
    if (intercept_setup(&opts, err, sizeof err) != 0 ||
        listen_tls_setup(&opts, err, sizeof err) != 0) {
        fprintf(stderr, "statusproxy: %s\n", err);
        intercept_teardown(&opts);
        tls_engine_config_free(opts.upstream_tls);
        options_free(&opts);
        return 2;
    }
    if (intercept_enabled(&opts) && opts.upstream_insecure)
        LOG(LOG_WARN, "--upstream-insecure: intercepted origins' certificates are not verified");
    int status = server_run(&opts);
    listen_tls_teardown(&opts);
    intercept_teardown(&opts);
    tls_engine_config_free(opts.upstream_tls);
    options_free(&opts);
    return status;
}

/* statusproxy rules check FILE: normalized rules on stdout, diagnostics on
 * stderr; 0 when the file is good, 1 when it has errors, 2 on bad usage. */
static int cmd_rules(int argc, char **argv)
{
    static const char usage[] = "usage: statusproxy rules check FILE";
    if (argc == 0 || strcmp(argv[0], "check") != 0) {
        if (argc == 0)
            fprintf(stderr, "statusproxy rules: missing subcommand (%s)\n", usage);
        else
            fprintf(stderr, "statusproxy rules: unknown subcommand '%s' (%s)\n", argv[0], usage);
        return 2;
    }
    if (argc != 2) {
        fprintf(stderr, "statusproxy rules check: %s (%s)\n",
                argc < 2 ? "missing FILE" : "one FILE only", usage);
        return 2;
    }
    const char *file = argv[1];
    struct rules_diags diags = {0};
    struct rules *rs = rules_load_file(file, 0, &diags);
    for (size_t i = 0; i < diags.n; i++) {
        char *line = rules_diag_format(file, &diags.items[i]);
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    rules_diags_free(&diags);
    if (!rs)
        return 1;
    for (size_t i = 0; i < rules_count(rs); i++)
        printf("%s\n", rule_normalized(rules_at(rs, i)));
    rules_unref(rs);
    return 0;
}

static int cmd_migrate(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--db") != 0) {
            fprintf(stderr, "statusproxy migrate: %s: unknown option\n", argv[i]);
            return 2;
        }
        if (i + 1 >= argc || !argv[i + 1][0]) {
            fprintf(stderr, "statusproxy migrate: --db: missing value\n");
            return 2;
        }
        path = argv[++i];
    }
    if (!path) {
        fprintf(stderr, "statusproxy migrate: --db: required\n");
        return 2;
    }
    char err[512];
    sqlite3 *db = db_open(path, DB_READ_WRITE, err, sizeof err);
    if (!db) {
        fprintf(stderr, "statusproxy migrate: %s\n", err);
        return 1;
    }
    printf("schema version %d\n", db_version(db));
    db_close(db);
    return 0;
}

static const char report_help[] =
    "usage: statusproxy report --db FILE [--db FILE2 ...] [options]\n"
    "  --by VIEW        code (default), class, host, rule, rewrite, minute, route or retry\n"
    "  --since T        from T: a duration back from now (1h, 30m, 7d) or an ISO 8601 UTC time\n"
    "  --until T        until T (same forms)\n"
    "  --host GLOB      only hosts matching GLOB (* and ?, case-insensitive)\n"
    "  --route GLOB     only routes matching GLOB (/users/{n}, /api/*)\n"
    "  --baseline FILE  compare with this database (repeatable)\n"
    "  --baseline-since T --baseline-until T   compare with that window of the --db files\n"
    "  --assert EXPR    a CI gate, e.g. \"5xx < 1%\" or \"p99 < 500ms\" (repeatable);\n"
    "                   exit 0 when all pass, 1 when one fails, 2 when malformed\n"
    "  --top N          the first N rows\n"
    "  --format F       table (default), json, csv or html\n";

static int cmd_report(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(report_help, stdout);
            return 0;
        }
    }
    struct report_options opts;
    char err[512];
    int64_t now = time_now_ms();
    if (report_parse_args(argc, argv, now, &opts, err, sizeof err) != 0) {
        fprintf(stderr, "statusproxy report: %s\n", err);
        return 2;
    }
    struct sbuf out = {0};
    int rc = report_run(&opts, now, &out, err, sizeof err);
    report_options_free(&opts);
    if (rc < 0) {
        fprintf(stderr, "statusproxy report: %s\n", err);
    } else if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
        fprintf(stderr, "statusproxy report: writing the output failed\n");
        rc = -1;
    }
    sbuf_free(&out);
    return rc == 0 ? 0 : 1; /* 1 also when an --assert failed */
}

/* The subcommands: each gets the arguments after its name. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"run", cmd_run},         {"codes", cmd_codes},   {"rules", cmd_rules},
    {"migrate", cmd_migrate}, {"report", cmd_report}, {"ca", ca_cli_main},
};

int main(int argc, char **argv)
{
    /* A bare `statusproxy` or `statusproxy --flag ...` means `run`. */
    if (argc < 2 || strncmp(argv[1], "--", 2) == 0) {
        if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        return cmd_run(argc - 1, argv + 1);
    }
    const char *cmd = argv[1];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    fprintf(stderr, "statusproxy: unknown command '%s'\n%s", cmd, usage_text);
    return 2;
}
