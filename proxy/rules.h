/*
 * rules — the rule language of DESIGN §4: parse rule files into an
 * immutable, reference-counted rule set, and match exchanges against it.
 * A set is shared by all worker threads: it is never modified after parsing
 * except for its counters and enabled flags, which are atomics.
 * No event loop, no I/O except rules_load_file.
 */
#ifndef STATUSPROXY_RULES_H
#define STATUSPROXY_RULES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "audit.h"
#include "http.h"

enum rules_phase { RULES_REQUEST, RULES_RESPONSE };

struct rules_header_op {
    const char *name;
    const char *value; /* NULL for del-header */
};

/* How `delay` draws its value (DESIGN §4, §10). */
enum rules_delay_kind { RULES_DELAY_UNIFORM, RULES_DELAY_NORMAL, RULES_DELAY_LOGNORMAL };

/* The broken answers that replace an answer altogether (DESIGN §10). */
enum rules_break { RULES_BREAK_NONE, RULES_BREAK_HANG, RULES_BREAK_EMPTY, RULES_BREAK_GARBAGE };

/* What a rule does; owned by the rule set, valid while the set is referenced. */
struct rule_actions {
    int abort_code;                       /* 0: none; else 200-599 */
    int set_status;                       /* 0: none; else 200-599 */
    const char *reason;                   /* NULL: keep the reason phrase */
    const char *body;                     /* body of an abort answer; NULL: default */
    size_t body_len;
    int body_is_json;                     /* body looks like JSON: application/json */
    const struct rules_header_op *set_headers;
    size_t n_set_headers;
    const struct rules_header_op *del_headers;
    size_t n_del_headers;
    int has_delay;
    uint64_t delay_min_ms, delay_max_ms;  /* equal for a fixed delay */
    enum rules_delay_kind delay_kind;
    double delay_a, delay_b;              /* normal: mean, sd; lognormal: p50, p99 (ms) */
    uint64_t throttle_bps;                /* 0: none; body bytes per second */
    int reset;                            /* close the client with a TCP reset */
    int64_t truncate;                     /* -1: none; else body bytes to send, then close */
    enum rules_break brk;                 /* hang, empty or garbage instead of an answer */
    uint64_t hang_ms;                     /* hang: 0 = until the client leaves */
    uint64_t garbage_bytes;               /* garbage: how many random bytes */
    int bad_chunk;                        /* break the chunked framing after one chunk */
    uint64_t slow_head_ms;                /* 0: none; else spread the head over this */
    int retry_after_auto;                 /* set-header Retry-After auto */
};

struct rule;  /* opaque */
struct rules; /* opaque, reference-counted */

/* One error or warning found while parsing. */
struct rules_diag {
    int line, col;   /* 1-based; 0 when not tied to a position (e.g. unreadable file) */
    int is_error;    /* 0: warning */
    char *message;   /* owned */
};
struct rules_diags {
    struct rules_diag *items; /* owned */
    size_t n, errors;
};
void rules_diags_free(struct rules_diags *d);
/* "FILE:LINE:COL: error: MESSAGE" (or "warning:"); caller frees. */
char *rules_diag_format(const char *file, const struct rules_diag *d);

/* Parse rule-file text. FILENAME is only used in messages. SEED drives
 * `chance` and random delays reproducibly. Returns a set with one reference,
 * or NULL when there was any error; DIAGS (may be NULL) receives errors and
 * warnings and is the caller's to free. */
struct rules *rules_parse(const char *text, size_t len, const char *filename, uint64_t seed,
                          struct rules_diags *diags);
/* Read and parse PATH; an unreadable file is one error at line 0. */
struct rules *rules_load_file(const char *path, uint64_t seed, struct rules_diags *diags);

struct rules *rules_ref(struct rules *rs);
void rules_unref(struct rules *rs); /* NULL is fine; frees with the last reference */

/* The exchange as matchers see it. Strings need not be NUL-terminated. */
struct rules_exchange {
    const char *method;
    size_t method_len;
    const char *host;          /* target host without port, lowercase */
    size_t host_len;
    const char *path;          /* without the query */
    size_t path_len;
    const struct http_head *request; /* request header fields, for `header` */
    const struct sockaddr *client;   /* AF_INET or AF_INET6 (v4-mapped counts as v4) */
    int status;                /* the upstream's status; response phase only */
    enum audit_scheme scheme;  /* http, https (inside TLS) or tunnel (a blind CONNECT) */
};

struct rules_verdict {
    const struct rule *rule;
    const struct rule_actions *actions;
    uint64_t delay_ms;         /* drawn from the rule's delay range; 0 when none */
    uint64_t retry_after_s;    /* rate-limit: whole seconds until the window has room */
    size_t next;               /* where rules_match_next goes on (index in the phase) */
};

/* Find the first enabled rule of PHASE whose matchers all hold, count it
 * (every/after/limit/hits) and draw its chance and delay. Returns 1 with *v
 * filled, or 0 when no rule applies. Thread-safe; allocates nothing. */
int rules_match(struct rules *rs, enum rules_phase phase, const struct rules_exchange *x,
                struct rules_verdict *v);

/* The clock of the time matchers and rate limits: monotonic milliseconds.
 * Tests may inject their own (NULL restores the default); not thread-safe,
 * set it before any matching. */
void rules_set_clock(uint64_t (*now_ms)(void));
uint64_t rules_now_ms(void);

/* Go on after the rule V matched, as if it had not: the later rules of
 * PHASE only (those before it are not evaluated again). Same contract as
 * rules_match; used when --max-active-faults skips V's fault. */
int rules_match_next(struct rules *rs, enum rules_phase phase, const struct rules_exchange *x,
                     struct rules_verdict *v);

/* Does the set have any rule of PHASE (lets callers skip work)? */
int rules_has_phase(const struct rules *rs, enum rules_phase phase);

/* Introspection, for `rules check` and the admin API. */
size_t rules_count(const struct rules *rs);
const struct rule *rules_at(const struct rules *rs, size_t i);
/* The rule named NAME (names are unique in a set), or NULL. */
const struct rule *rules_find(const struct rules *rs, const char *name);
const char *rule_name(const struct rule *r);
enum rules_phase rule_phase(const struct rule *r);
int rule_line(const struct rule *r);
const char *rule_source(const struct rule *r);       /* as written, continuations joined */
const char *rule_normalized(const struct rule *r);   /* canonical one-line form */
const char *rule_actions_text(const struct rule *r); /* canonical actions, for the audit log */
const struct rule_actions *rule_get_actions(const struct rule *r);
int rule_enabled(const struct rule *r);
/* For a rule with `during` or `cycle`: 1, with *ACTIVE (do its time matchers
 * hold at NOW_MS) and *NEXT_MS (milliseconds until that changes; UINT64_MAX:
 * never). 0 for a rule without time matchers. */
int rule_time_state(const struct rule *r, uint64_t now_ms, int *active, uint64_t *next_ms);
uint64_t rule_hits(const struct rule *r);
/* Enable or disable the rule named NAME: 0, or -1 when there is none.
 * Enabling restarts the rule's clock (the time of its `during`/`cycle`). */
int rules_set_enabled(struct rules *rs, const char *name, int enabled);

#endif
