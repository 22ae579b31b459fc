/*
 * audit_feed — a test tool: write exchange records read from stdin into a
 * database through the real writer (audit_open, audit_submit, audit_close),
 * so end-to-end tests and measurements get databases made the way the proxy
 * makes them. Not part of the product.
 *
 *   audit_feed --db FILE [--mode all|errors|none] [--retain DURATION]
 *              [--queue N] [--no-wait]
 *
 * One record per line, fields separated by tabs; '#' starts a comment line:
 *   start client method host path upstream_code final_code
 *         [rule action error duration_us bytes_in bytes_out retry_after_ms scheme]
 * start is Unix milliseconds or an ISO 8601 UTC time; a code, rule, action or
 * error that is empty or "-" is absent; scheme is http (the default when
 * empty or "-"), https or tunnel. By default the tool waits for the
 * writer whenever the queue could overflow, so nothing is lost; --no-wait
 * submits as fast as it reads, as the proxy does, and losses are counted.
 * Prints "fed N records, M dropped" and exits 0; 1 when the database cannot
 * be used; 2 on bad usage or a bad line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "report.h"
#include "units.h"
#include "util.h"

#define BATCH 256
#define MAX_FIELDS 15

static int parse_code(const char *s, int *out)
{
    if (!s[0] || strcmp(s, "-") == 0) {
        *out = -1;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 999)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s[0] || strcmp(s, "-") == 0) {
        *out = 0;
        return 0;
    }
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static void copy_field(char *dst, size_t len, const char *s)
{
    snprintf(dst, len, "%s", strcmp(s, "-") == 0 ? "" : s);
}

/* Split LINE in place at tabs; returns the number of fields. */
static size_t split(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        fields[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

static int parse_record(char *line, int64_t now_ms, struct audit_record *r, const char **why)
{
    char *f[MAX_FIELDS];
    static char empty[] = "";
    size_t n = split(line, f, MAX_FIELDS);
    if (n < 7) {
        *why = "expected at least 7 tab-separated fields";
        return -1;
    }
    for (size_t i = n; i < MAX_FIELDS; i++)
        f[i] = empty;
    memset(r, 0, sizeof *r);
    char *end;
    long long ms = strtoll(f[0], &end, 10);
    if (f[0][0] && !*end)
        r->start_ms = ms;
    else if (report_parse_time(f[0], now_ms, &r->start_ms) != 0) {
        *why = "start: expected Unix ms or an ISO 8601 UTC time";
        return -1;
    }
    copy_field(r->client, sizeof r->client, f[1]);
    copy_field(r->method, sizeof r->method, f[2]);
    copy_field(r->host, sizeof r->host, f[3]);
    copy_field(r->path, sizeof r->path, f[4]);
    if (parse_code(f[5], &r->upstream_code) || parse_code(f[6], &r->final_code)) {
        *why = "codes: expected a number 0-999, or - for none";
        return -1;
    }
    copy_field(r->rule, sizeof r->rule, f[7]);
    copy_field(r->action, sizeof r->action, f[8]);
    copy_field(r->error, sizeof r->error, f[9]);
    uint64_t dur;
    uint64_t retry_after = 0;
    if (parse_u64(f[10], &dur) || parse_u64(f[11], &r->bytes_in) ||
        parse_u64(f[12], &r->bytes_out) || parse_u64(f[13], &retry_after)) {
        *why = "duration_us, bytes_in, bytes_out, retry_after_ms: expected numbers";
        return -1;
    }
    r->duration_us = (int64_t)dur;
    r->retry_after_ms = (int64_t)retry_after;
    r->scheme = AUDIT_SCHEME_COUNT;
    if (!f[14][0] || strcmp(f[14], "-") == 0)
        r->scheme = AUDIT_SCHEME_HTTP;
    for (int s = 0; s < AUDIT_SCHEME_COUNT; s++)
        if (strcmp(f[14], audit_scheme_name((enum audit_scheme)s)) == 0)
            r->scheme = (enum audit_scheme)s;
    if (r->scheme == AUDIT_SCHEME_COUNT) {
        *why = "scheme: expected http, https or tunnel";
        return -1;
    }
    return 0;
}

static int usage(const char *msg)
{
    fprintf(stderr, "audit_feed: %s\n", msg);
    return 2;
}

int main(int argc, char **argv)
{
    struct audit_config cfg = {.mode = AUDIT_LOG_ALL};
    int no_wait = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-wait") == 0) {
            no_wait = 1;
            continue;
        }
        if (!v)
            return usage("missing value or unknown option");
        i++;
        if (strcmp(a, "--db") == 0) {
            cfg.db_path = v;
        } else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "all") == 0)
                cfg.mode = AUDIT_LOG_ALL;
            else if (strcmp(v, "errors") == 0)
                cfg.mode = AUDIT_LOG_ERRORS;
            else if (strcmp(v, "none") == 0)
                cfg.mode = AUDIT_LOG_NONE;
            else
                return usage("--mode: expected all, errors or none");
        } else if (strcmp(a, "--retain") == 0) {
            if (units_parse_duration(v, strlen(v), &cfg.retain_ms) != 0)
                return usage("--retain: expected a duration");
        } else if (strcmp(a, "--queue") == 0) {
            cfg.queue_limit = strtoull(v, NULL, 10);
            if (cfg.queue_limit == 0)
                return usage("--queue: expected a positive number");
        } else {
            return usage("unknown option");
        }
    }
    if (!cfg.db_path)
        return usage("--db: required");

    char err[512];
    struct audit *a = audit_open(&cfg, err, sizeof err);
    if (!a) {
        fprintf(stderr, "audit_feed: %s\n", err);
        return 1;
    }
    size_t limit = cfg.queue_limit ? cfg.queue_limit : 65536;
    size_t room = limit; /* what can be submitted before the next flush */
    size_t bsize = limit < BATCH ? limit : BATCH;
    struct audit_record *batch = xcalloc(bsize, sizeof *batch);
    size_t nbatch = 0;
    unsigned long long fed = 0, lineno = 0;
    int64_t now = time_now_ms();
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        const char *why;
        if (parse_record(line, now, &batch[nbatch], &why) != 0) {
            fprintf(stderr, "audit_feed: stdin:%llu: %s\n", lineno, why);
            rc = 2;
            break;
        }
        if (++nbatch < bsize)
            continue;
        if (!no_wait && room < nbatch) {
            audit_flush(a);
            room = limit;
        }
        audit_submit(a, batch, nbatch);
        room -= nbatch < room ? nbatch : room;
        fed += nbatch;
        nbatch = 0;
    }
    if (nbatch && rc == 0) {
        if (!no_wait && room < nbatch)
            audit_flush(a);
        audit_submit(a, batch, nbatch);
        fed += nbatch;
    }
    uint64_t dropped = audit_dropped(a);
    audit_close(a);
    printf("fed %llu records, %llu dropped\n", fed, (unsigned long long)dropped);
    free(line);
    free(batch);
    return rc;
}
