/*
 * rules_diag — the list of errors and warnings that reading a rule file
 * produces. The tokenizer (rules_lex.c) and the parser (rules_parse.c) both
 * add to it, so it lives apart from either: the parser uses the tokenizer,
 * and neither has to reach back into the other. It knows nothing of the
 * rule language; ordering the list for display is the parser's business.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

void rules_diag_add(struct rules_diags *d, int is_error, int line, int col, const char *fmt, ...)
{
    d->items = xrealloc(d->items, (d->n + 1) * sizeof *d->items);
    struct rules_diag *g = &d->items[d->n++];
    struct sbuf b = {0};
    va_list ap;
    va_start(ap, fmt);
    sbuf_vprintf(&b, fmt, ap);
    va_end(ap);
    g->line = line;
    g->col = col;
    g->is_error = is_error;
    g->message = sbuf_steal(&b);
    if (is_error)
        d->errors++;
}

void rules_diags_free(struct rules_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->items[i].message);
    free(d->items);
    memset(d, 0, sizeof *d);
}

char *rules_diag_format(const char *file, const struct rules_diag *d)
{
    const char *kind = d->is_error ? "error" : "warning";
    if (!file)
        file = "rules";
    if (d->line <= 0)
        return xasprintf("%s: %s: %s", file, kind, d->message);
    return xasprintf("%s:%d:%d: %s: %s", file, d->line, d->col, kind, d->message);
}
