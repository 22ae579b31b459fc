/*
 * rules_int — what the rule modules share and nobody else sees: the rule
 * and rule-set structures, the tokenizer that the parser reads from, and the
 * diagnostics helper. rules_diag.c collects errors and warnings, rules_lex.c
 * cuts text into logical lines of tokens, rules_parse.c turns lines into
 * rules, rules.c owns sets and matching. Calls go one way: parse uses lex,
 * and both add to the diagnostics.
 */
#ifndef STATUSPROXY_RULES_INT_H
#define STATUSPROXY_RULES_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "cidr.h"
#include "glob.h"
#include "ratelimit.h"
#include "rules.h"
#include "util.h"

/* ---- diagnostics (rules_diag.c) ---- */

/* Append one error (IS_ERROR 1) or warning at LINE:COL to D. */
void rules_diag_add(struct rules_diags *d, int is_error, int line, int col, const char *fmt, ...)
    PRINTF_LIKE(5, 6);

/* ---- tokens ---- */

/* One argument as the parser sees it: adjacent bare and quoted pieces with
 * no space between them form one token (`Name="a b"` is one token). */
struct rules_token {
    char *text;     /* decoded, NUL-terminated; owned by the line */
    size_t len;
    int line, col;  /* where the token starts */
    int quoted;     /* some piece was a quoted string: never a keyword */
    int bad;        /* the tokenizer already reported an error inside it */
};

/* One logical line: physical lines joined at a trailing `\`, comments dropped. */
struct rules_line {
    struct rules_token *tok;
    size_t n, cap;
    char *source;          /* the tokens as written, a continuation read as one space */
    int end_line, end_col; /* just past the last token */
};

struct rules_lexer {
    const char *p, *end;
    int line, col;
};

void rules_lex_init(struct rules_lexer *lx, const char *text, size_t len);
/* Read the next logical line into *LINE (which the caller frees with
 * rules_line_free; a blank line has n == 0). Returns 0 at the end of the
 * text, else 1. Lexical errors (strings, control characters) go to D. */
int rules_lex_line(struct rules_lexer *lx, struct rules_line *line, struct rules_diags *d);
void rules_line_free(struct rules_line *line);

/* ---- rules ---- */

enum rule_matcher {
    RM_METHOD, RM_HOST, RM_PATH, RM_HEADER, RM_CLIENT, RM_STATUS,
    RM_CHANCE, RM_EVERY, RM_AFTER, RM_LIMIT,
    RM_DURING, RM_CYCLE, RM_RATE_LIMIT, RM_SCHEME,
    RM_COUNT
};

struct rule_method {
    const char *name; /* into rule.methods_text */
    size_t len;
};

struct rule_header_match {
    char *name;
    size_t name_len;
    struct glob *value; /* NULL: the field need only be present */
};

#define RULES_STATUS_WORDS 10 /* 640 bits cover codes 0-599 */

struct rule {
    char *name;
    int line;
    enum rules_phase phase;
    char *source;
    char *normalized;
    size_t actions_off;       /* rule_actions_text is normalized + actions_off */
    unsigned has;             /* bit (1 << RM_*) for each matcher written */

    /* static matchers */
    char *methods_text;
    struct rule_method *methods;
    size_t n_methods;
    struct glob *host, *path;
    struct rule_header_match *headers;
    size_t n_headers;
    struct cidr client;
    uint64_t status_bits[RULES_STATUS_WORDS];
    enum audit_scheme scheme;

    /* counting and chance matchers */
    double chance;            /* probability in [0, 1] */
    uint64_t every, after, limit;

    /* time and rate matchers (DESIGN §10), in milliseconds */
    uint64_t during_start, during_end; /* during_end UINT64_MAX: open */
    uint64_t cycle_period, cycle_on;
    uint64_t rate_n, rate_ms;
    int rate_per_client;
    struct ratelimit *rate;   /* made by rules_set_build */

    struct rule_actions actions;
    struct rules_header_op *set_headers, *del_headers; /* what actions points at; owned */

    /* per-set state, set up by rules_set_build */
    uint64_t chance_key, delay_key;
    _Atomic uint64_t seen;        /* exchanges that passed the static matchers */
    _Atomic uint64_t hits;        /* times the rule applied (also what `limit` caps) */
    _Atomic uint64_t chance_draws, delay_draws;
    atomic_int enabled;
    _Atomic uint64_t epoch_ms;    /* rules_now_ms() when loaded or last enabled */
};

struct rules {
    atomic_uint refs;
    uint64_t seed;
    struct rule **v;              /* file order */
    size_t n;
    struct rule **by_phase[2];    /* the same rules, split by phase, file order kept */
    size_t n_phase[2];
};

/* Take ownership of V[0..n) (rules fully parsed) and make a set with one
 * reference. V may be NULL when N is 0. */
struct rules *rules_set_build(struct rule **v, size_t n, uint64_t seed);
/* Free one rule that never joined a set, or whose set is being freed. */
void rules_rule_free(struct rule *r);

#endif
