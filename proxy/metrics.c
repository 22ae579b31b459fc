/*
 * metrics — counters keyed by strings in small open-addressing maps.
 * The responses counter is keyed by "final\tupstream\tscheme\trule" so that
 * one map serves every label set; labels are split again when rendering.
 * The scheme multiplies the series by three at most (http, https, tunnel).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "fault.h"
#include "hash.h"
#include "util.h"

/* Upper bounds of the duration histogram, in seconds. */
static const double bucket_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,   1,    2.5,   5,    10};
#define NBUCKETS (sizeof bucket_bounds / sizeof bucket_bounds[0])

struct countmap {
    char **keys;
    uint64_t *values;
    size_t cap, n;
    unsigned grown;          /* times the slots moved (see struct last_response) */
};

static void countmap_grow(struct countmap *m);

/* The slot of KEY, added with a count of 0 when missing. */
static size_t countmap_slot(struct countmap *m, const char *key)
{
    if ((m->n + 1) * 2 > m->cap)
        countmap_grow(m);
    size_t i = hash_fnv32_str(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (strcmp(m->keys[i], key) == 0)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = xstrdup(key);
    m->values[i] = 0;
    m->n++;
    return i;
}

static void countmap_add(struct countmap *m, const char *key, uint64_t v)
{
    size_t i = countmap_slot(m, key); /* may grow the map: index after */
    m->values[i] += v;
}

static void countmap_grow(struct countmap *m)
{
    struct countmap bigger = {0};
    bigger.cap = m->cap ? m->cap * 2 : 16;
    bigger.keys = xcalloc(bigger.cap, sizeof *bigger.keys);
    bigger.values = xcalloc(bigger.cap, sizeof *bigger.values);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = hash_fnv32_str(m->keys[i]) & (bigger.cap - 1);
        while (bigger.keys[j])
            j = (j + 1) & (bigger.cap - 1);
        bigger.keys[j] = m->keys[i];
        bigger.values[j] = m->values[i];
        bigger.n++;
    }
    free(m->keys);
    free(m->values);
    bigger.grown = m->grown + 1;
    *m = bigger;
}

/* Add every entry of FROM into TO and empty FROM (keeping its memory). */
static void countmap_drain(struct countmap *from, struct countmap *to)
{
    for (size_t i = 0; i < from->cap; i++) {
        if (from->keys[i] && from->values[i]) {
            countmap_add(to, from->keys[i], from->values[i]);
            from->values[i] = 0;
        }
    }
}

static void countmap_free(struct countmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

/* Entries in key order, for stable output. */
static int cmp_keys(const void *a, const void *b)
{
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static size_t countmap_sorted(const struct countmap *m, size_t **order)
{
    size_t n = 0;
    char ***refs = xmalloc((m->n + 1) * sizeof *refs);
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            refs[n++] = &m->keys[i];
    qsort(refs, n, sizeof *refs, cmp_keys);
    *order = xmalloc((n + 1) * sizeof **order);
    for (size_t i = 0; i < n; i++)
        (*order)[i] = (size_t)(refs[i] - m->keys);
    free(refs);
    return n;
}

struct counters {
    struct countmap responses; /* "final\tupstream\tscheme\trule" */
    struct countmap errors;    /* upstream error names */
    struct countmap rules;     /* rule name -> hits */
    uint64_t buckets[NBUCKETS + 1];
    double duration_sum;
    uint64_t requests;
    uint64_t dropped;
};

static void counters_drain(struct counters *from, struct counters *to)
{
    countmap_drain(&from->responses, &to->responses);
    countmap_drain(&from->errors, &to->errors);
    countmap_drain(&from->rules, &to->rules);
    for (size_t i = 0; i <= NBUCKETS; i++) {
        to->buckets[i] += from->buckets[i];
        from->buckets[i] = 0;
    }
    to->duration_sum += from->duration_sum;
    to->requests += from->requests;
    to->dropped += from->dropped;
    from->duration_sum = 0;
    from->requests = from->dropped = 0;
}

static void counters_free(struct counters *c)
{
    countmap_free(&c->responses);
    countmap_free(&c->errors);
    countmap_free(&c->rules);
}

#define MAX_WORKERS 64

/* The responses slot of the latest exchange's labels: exchanges in a row
 * mostly share them, and then the key need not be built and hashed again.
 * Valid while the map has not grown since (draining keeps the slots). */
struct last_response {
    int valid;
    unsigned grown;
    int final_code, upstream_code;
    enum audit_scheme scheme;
    size_t rule_len;
    char rule[AUDIT_MAX_RULE + 1];
    size_t slot;
};

struct metrics_local {
    struct counters c;
    unsigned connections;
    struct last_response last;
};

struct metrics {
    pthread_mutex_t lock;
    struct counters c;
    int64_t since_ms;
    unsigned connections[MAX_WORKERS];
    unsigned upstreams[MAX_WORKERS];
    struct metrics_local *slots[MAX_WORKERS];
};

struct metrics *metrics_new(void)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->since_ms = time_now_ms();
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    counters_free(&m->c);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct metrics_local *metrics_local_new(void)
{
    return xcalloc(1, sizeof(struct metrics_local));
}

void metrics_local_free(struct metrics_local *l)
{
    if (!l)
        return;
    counters_free(&l->c);
    free(l);
}

static int is_upstream_error(const char *error, size_t len)
{
    static const char *const names[] = {"connect_refused", "connect_timeout", "connect_failed",
                                        "unreachable",     "dns",             "timeout",
                                        "bad_response",    "invalid_status",  "upstream_closed",
                                        "upstream_reset"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && memcmp(error, names[i], len) == 0)
            return 1;
    return 0;
}

int metrics_is_upstream_error(const char *error)
{
    return is_upstream_error(error, strlen(error));
}

/* The responses slot for E's labels ("final\tupstream\tscheme\trule"). */
static size_t response_slot(struct metrics_local *l, const struct audit_entry *e,
                            const char *rule, size_t rlen)
{
    struct last_response *last = &l->last;
    int final_code = e->final_code >= 0 ? e->final_code : -1;
    int upstream_code = e->upstream_code >= 0 ? e->upstream_code : -1;
    enum audit_scheme scheme = (unsigned)e->scheme < AUDIT_SCHEME_COUNT ? e->scheme
                                                                        : AUDIT_SCHEME_HTTP;
    if (last->valid && last->grown == l->c.responses.grown && last->final_code == final_code &&
        last->scheme == scheme &&
        last->upstream_code == upstream_code && last->rule_len == rlen &&
        memcmp(last->rule, rule, rlen) == 0)
        return last->slot;
    char key[160];
    size_t k = 0;
    if (final_code >= 0)
        k += str_dec(key + k, (uint64_t)final_code);
    key[k++] = '\t';
    if (upstream_code >= 0)
        k += str_dec(key + k, (uint64_t)upstream_code);
    key[k++] = '\t';
    const char *sname = audit_scheme_name(scheme);
    size_t slen = strlen(sname);
    memcpy(key + k, sname, slen);
    k += slen;
    key[k++] = '\t';
    memcpy(key + k, rule, rlen + 1);
    size_t slot = countmap_slot(&l->c.responses, key);
    *last = (struct last_response){1, l->c.responses.grown, final_code, upstream_code, scheme,
                                   rlen, "", slot};
    memcpy(last->rule, rule, rlen + 1);
    return slot;
}

void metrics_record(struct metrics_local *l, const struct audit_entry *e, const char *also_rule)
{
    char rule[AUDIT_MAX_RULE + 1];
    size_t rlen = e->rule.len < AUDIT_MAX_RULE ? e->rule.len : AUDIT_MAX_RULE;
    memcpy(rule, e->rule.s, rlen);
    rule[rlen] = '\0';
    size_t slot = response_slot(l, e, rule, rlen); /* may grow the map */
    l->c.responses.values[slot]++;
    if (rlen)
        countmap_add(&l->c.rules, rule, 1);
    if (also_rule && also_rule[0])
        countmap_add(&l->c.rules, also_rule, 1);
    if (e->error.len && is_upstream_error(e->error.s, e->error.len)) {
        char error[AUDIT_MAX_ERROR + 1];
        size_t elen = e->error.len < AUDIT_MAX_ERROR ? e->error.len : AUDIT_MAX_ERROR;
        memcpy(error, e->error.s, elen);
        error[elen] = '\0';
        countmap_add(&l->c.errors, error, 1);
    }
    double secs = (double)e->duration_us / 1e6;
    size_t b = 0;
    while (b < NBUCKETS && secs > bucket_bounds[b])
        b++;
    l->c.buckets[b]++;
    l->c.duration_sum += secs;
    l->c.requests++;
}

void metrics_add_dropped(struct metrics_local *l, uint64_t n)
{
    l->c.dropped += n;
}

void metrics_set_connections(struct metrics_local *l, unsigned n)
{
    l->connections = n;
}

void metrics_publish(struct metrics_local *l, struct metrics *m, unsigned upstreams)
{
    pthread_mutex_lock(&m->lock);
    counters_drain(&l->c, &m->c);
    size_t slot = 0;
    while (slot < MAX_WORKERS && m->slots[slot] && m->slots[slot] != l)
        slot++;
    if (slot < MAX_WORKERS) {
        m->slots[slot] = l;
        m->connections[slot] = l->connections;
        m->upstreams[slot] = upstreams;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Split "f0\tf1\t...\tfN-1" into N fields (pointers into BUF); the last
 * takes the rest. */
static void split_key(char *buf, char **f, size_t n)
{
    f[0] = buf;
    for (size_t i = 1; i < n; i++) {
        f[i] = strchr(f[i - 1], '\t');
        *f[i]++ = '\0';
    }
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void put_label(struct sbuf *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sbuf_putc(o, '\\');
        if (*v == '\n') {
            sbuf_puts(o, "\\n");
            continue;
        }
        sbuf_putc(o, *v);
    }
}

char *metrics_prometheus(struct metrics *m, uint64_t dropped_db)
{
    struct sbuf o = {0};
    size_t *order;
    pthread_mutex_lock(&m->lock);
    sbuf_puts(&o, "# HELP statusproxy_responses_total Answers sent to clients, by final "
                  "status, upstream status, the rule that acted and the scheme.\n"
                  "# TYPE statusproxy_responses_total counter\n");
    size_t n = countmap_sorted(&m->c.responses, &order);
    for (size_t i = 0; i < n; i++) {
        char key[160];
        snprintf(key, sizeof key, "%s", m->c.responses.keys[order[i]]);
        char *f[4]; /* final, upstream, scheme, rule */
        split_key(key, f, 4);
        int code = f[0][0] ? atoi(f[0]) : -1;
        sbuf_printf(&o, "statusproxy_responses_total{code=\"%s\",class=\"%s\",upstream_code=\"%s\",rule=\"",
                    f[0], code >= 0 ? catalog_class_name(code) : "", f[1]);
        put_label(&o, f[3]);
        sbuf_printf(&o, "\",scheme=\"%s\"} %llu\n", f[2],
                    (unsigned long long)m->c.responses.values[order[i]]);
    }
    free(order);
    sbuf_puts(&o, "# HELP statusproxy_request_duration_seconds Time from request head to the "
                  "end of the answer, every exchange.\n"
                  "# TYPE statusproxy_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        cum += m->c.buckets[b];
        sbuf_printf(&o, "statusproxy_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                    bucket_bounds[b], (unsigned long long)cum);
    }
    cum += m->c.buckets[NBUCKETS];
    sbuf_printf(&o, "statusproxy_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)cum);
    sbuf_printf(&o, "statusproxy_request_duration_seconds_sum %.6f\n", m->c.duration_sum);
    sbuf_printf(&o, "statusproxy_request_duration_seconds_count %llu\n", (unsigned long long)cum);
    sbuf_puts(&o, "# HELP statusproxy_upstream_errors_total Exchanges that failed on the "
                  "upstream side, by error.\n"
                  "# TYPE statusproxy_upstream_errors_total counter\n");
    n = countmap_sorted(&m->c.errors, &order);
    for (size_t i = 0; i < n; i++)
        sbuf_printf(&o, "statusproxy_upstream_errors_total{error=\"%s\"} %llu\n",
                    m->c.errors.keys[order[i]], (unsigned long long)m->c.errors.values[order[i]]);
    free(order);
    unsigned conns = 0;
    for (size_t s = 0; s < MAX_WORKERS; s++)
        conns += m->connections[s];
    sbuf_printf(&o, "# HELP statusproxy_active_connections Client connections open now.\n"
                    "# TYPE statusproxy_active_connections gauge\n"
                    "statusproxy_active_connections %u\n",
                conns);
    sbuf_printf(&o, "# HELP statusproxy_faults_active Exchanges held by a delay, hang, throttle "
                    "or slow-head now.\n"
                    "# TYPE statusproxy_faults_active gauge\n"
                    "statusproxy_faults_active %llu\n"
                    "# HELP statusproxy_faults_overflow_total Faults skipped because "
                    "--max-active-faults was reached.\n"
                    "# TYPE statusproxy_faults_overflow_total counter\n"
                    "statusproxy_faults_overflow_total %llu\n",
                (unsigned long long)fault_active(), (unsigned long long)fault_overflow());
    sbuf_puts(&o, "# HELP statusproxy_rule_hits_total Exchanges each rule acted on.\n"
                  "# TYPE statusproxy_rule_hits_total counter\n");
    n = countmap_sorted(&m->c.rules, &order);
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(&o, "statusproxy_rule_hits_total{rule=\"");
        put_label(&o, m->c.rules.keys[order[i]]);
        sbuf_printf(&o, "\"} %llu\n", (unsigned long long)m->c.rules.values[order[i]]);
    }
    free(order);
    sbuf_printf(&o, "# HELP statusproxy_records_dropped_total Exchange records lost because "
                    "the audit writer fell behind.\n"
                    "# TYPE statusproxy_records_dropped_total counter\n"
                    "statusproxy_records_dropped_total %llu\n",
                (unsigned long long)(dropped_db > m->c.dropped ? dropped_db : m->c.dropped));
    pthread_mutex_unlock(&m->lock);
    return sbuf_steal(&o);
}

static void json_counts(struct sbuf *o, const struct countmap *map)
{
    size_t *order;
    size_t n = countmap_sorted(map, &order);
    sbuf_putc(o, '{');
    for (size_t i = 0; i < n; i++) {
        sbuf_printf(o, "%s\"", i ? ", " : "");
        sbuf_json_escape(o, map->keys[order[i]], strlen(map->keys[order[i]]));
        sbuf_printf(o, "\": %llu", (unsigned long long)map->values[order[i]]);
    }
    sbuf_putc(o, '}');
    free(order);
}

char *metrics_stats_json(struct metrics *m, uint64_t dropped_db)
{
    struct sbuf o = {0};
    struct countmap codes = {0}, classes = {0}, schemes = {0};
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->c.responses.cap; i++) {
        const char *k = m->c.responses.keys[i];
        if (!k)
            continue;
        char code[8];
        size_t len = strcspn(k, "\t");
        snprintf(code, sizeof code, "%.*s", (int)(len < 7 ? len : 7), k);
        countmap_add(&codes, code[0] ? code : "none", m->c.responses.values[i]);
        countmap_add(&classes, code[0] ? catalog_class_name(atoi(code)) : "none",
                     m->c.responses.values[i]);
        char key[160], *f[4];
        snprintf(key, sizeof key, "%s", k);
        split_key(key, f, 4);
        countmap_add(&schemes, f[2], m->c.responses.values[i]);
    }
    char since[32];
    time_format_iso(m->since_ms, since, sizeof since);
    unsigned conns = 0;
    for (size_t s = 0; s < MAX_WORKERS; s++)
        conns += m->connections[s];
    sbuf_printf(&o, "{\"since\": \"%s\", \"requests\": %llu, \"codes\": ", since,
                (unsigned long long)m->c.requests);
    json_counts(&o, &codes);
    sbuf_puts(&o, ", \"classes\": ");
    json_counts(&o, &classes);
    sbuf_puts(&o, ", \"schemes\": ");
    json_counts(&o, &schemes);
    sbuf_puts(&o, ", \"upstream_errors\": ");
    json_counts(&o, &m->c.errors);
    sbuf_puts(&o, ", \"rules\": ");
    json_counts(&o, &m->c.rules);
    sbuf_printf(&o, ", \"dropped\": %llu, \"active_connections\": %u",
                (unsigned long long)(dropped_db > m->c.dropped ? dropped_db : m->c.dropped),
                conns);
    sbuf_printf(&o, ", \"faults\": {\"active\": %llu, \"skipped\": %llu, \"max_active\": ",
                (unsigned long long)fault_active(), (unsigned long long)fault_overflow());
    if (fault_max_active())
        sbuf_printf(&o, "%llu}}\n", (unsigned long long)fault_max_active());
    else
        sbuf_puts(&o, "null}}\n");
    pthread_mutex_unlock(&m->lock);
    countmap_free(&codes);
    countmap_free(&classes);
    countmap_free(&schemes);
    return sbuf_steal(&o);
}
