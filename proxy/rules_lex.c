/*
 * rules_lex — the tokenizer of the rule language. It knows about lines,
 * continuations, comments and quoted strings, and nothing of what the words
 * mean.
 *
 *  - A `\` that is the last character of a physical line joins the next
 *    line to this one, where it reads as a space. It works between tokens
 *    only: a quoted string never spans lines, and a `\` at the end of a
 *    comment is part of the comment.
 *  - `#` outside a quoted string starts a comment that runs to the end of
 *    the physical line.
 *  - "..." is a string with the escapes \" \\ \n \t; anything else after a
 *    backslash is an error, as is a raw control character other than a tab.
 *  - Pieces written without space between them form one token, so that
 *    `header User-Agent="*curl *"` is a single argument.
 *
 * Columns count characters, not bytes: UTF-8 continuation bytes do not
 * advance them, so a message points where an editor would.
 */
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

void rules_lex_init(struct rules_lexer *lx, const char *text, size_t len)
{
    lx->p = text;
    lx->end = text + len;
    lx->line = 1;
    lx->col = 1;
}

static void advance(struct rules_lexer *lx)
{
    unsigned char c = (unsigned char)*lx->p++;
    if (c == '\n') {
        lx->line++;
        lx->col = 1;
    } else if ((c & 0xc0) != 0x80) {
        lx->col++;
    }
}

static int is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

/* Is the lexer at a `\` that ends its physical line (or the text)? Returns
 * how many bytes the continuation spans (`\`, optional CR, LF), else 0. */
static size_t at_continuation(const struct rules_lexer *lx)
{
    const char *p = lx->p;
    if (p == lx->end || *p != '\\')
        return 0;
    if (p + 1 == lx->end)
        return 1;
    if (p[1] == '\n')
        return 2;
    if (p[1] == '\r' && p + 2 < lx->end && p[2] == '\n')
        return 3;
    return 0;
}

/* A `\` followed by nothing but blanks up to the end of the line: the
 * author meant a continuation. Returns how many bytes it spans, else 0. */
static size_t blank_continuation(const struct rules_lexer *lx)
{
    const char *p = lx->p;
    if (p == lx->end || *p != '\\')
        return 0;
    for (p++; p != lx->end && (*p == ' ' || *p == '\t' || *p == '\r'); p++)
        ;
    if (p != lx->end && *p != '\n')
        return 0;
    return (size_t)(p - lx->p) + (p != lx->end);
}

/* Bytes that end a bare word. */
static int ends_word(const struct rules_lexer *lx)
{
    unsigned char c = (unsigned char)*lx->p;
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#' || c == '"' ||
           at_continuation(lx) || blank_continuation(lx);
}

/* Read a quoted string starting at the opening quote; append its decoded
 * text to OUT. On an error, report it, set *bad and stop at the end of the
 * physical line at the latest. */
static void lex_string(struct rules_lexer *lx, struct sbuf *out, int *bad, struct rules_diags *d)
{
    int qline = lx->line, qcol = lx->col, reported = 0;
    advance(lx);
    for (;;) {
        size_t cont = at_continuation(lx);
        if (cont) {
            /* A string may not span lines; but the author clearly meant the
             * next line to be part of it, so read on there rather than
             * reporting every word of that line as well. */
            if (!reported)
                rules_diag_add(d, 1, qline, qcol,
                               "unterminated string: a quoted string cannot continue on the next "
                               "line");
            reported = *bad = 1;
            for (size_t i = 0; i < cont; i++)
                advance(lx);
            continue;
        }
        if (lx->p == lx->end || *lx->p == '\n') {
            if (!reported)
                rules_diag_add(d, 1, qline, qcol,
                               "unterminated string: missing closing '\"' before the end of the "
                               "line");
            *bad = 1;
            return;
        }
        unsigned char c = (unsigned char)*lx->p;
        if (c == '"') {
            advance(lx);
            return;
        }
        if (c == '\\') {
            char e = lx->p[1], decoded;
            switch (e) {
            case '"': decoded = '"'; break;
            case '\\': decoded = '\\'; break;
            case 'n': decoded = '\n'; break;
            case 't': decoded = '\t'; break;
            default:
                if ((unsigned char)e >= 0x20 && (unsigned char)e < 0x7f)
                    rules_diag_add(d, 1, lx->line, lx->col,
                                   "unknown escape '\\%c' in string (expected \\\", \\\\, \\n or \\t)",
                                   e);
                else
                    rules_diag_add(d, 1, lx->line, lx->col,
                                   "unknown escape in string (expected \\\", \\\\, \\n or \\t)");
                *bad = 1;
                decoded = e;
            }
            sbuf_putc(out, decoded);
            advance(lx);
            advance(lx);
            continue;
        }
        if (is_control(c) || c == '\r') {
            rules_diag_add(d, 1, lx->line, lx->col,
                           "control character 0x%02x in string (write \\n or \\t for a line break "
                           "or a tab)",
                           c);
            *bad = 1;
            advance(lx);
            continue;
        }
        sbuf_putc(out, (char)c);
        advance(lx);
    }
}

static void push_token(struct rules_line *ln, const struct rules_token *t)
{
    if (ln->n == ln->cap) {
        ln->cap = ln->cap ? ln->cap * 2 : 8;
        ln->tok = xrealloc(ln->tok, ln->cap * sizeof *ln->tok);
    }
    ln->tok[ln->n++] = *t;
}

int rules_lex_line(struct rules_lexer *lx, struct rules_line *ln, struct rules_diags *d)
{
    memset(ln, 0, sizeof *ln);
    if (lx->p == lx->end)
        return 0;
    struct sbuf src = {0};
    const char *last_end = NULL; /* raw end of the previous token */
    int joined = 0;              /* a continuation since the previous token */

    while (lx->p != lx->end) {
        unsigned char c = (unsigned char)*lx->p;
        size_t cont;
        if (c == ' ' || c == '\t' || c == '\r') {
            advance(lx);
        } else if (c == '\n') {
            advance(lx);
            break;
        } else if (c == '#') {
            while (lx->p != lx->end && *lx->p != '\n')
                advance(lx);
        } else if ((cont = at_continuation(lx)) != 0) {
            for (size_t i = 0; i < cont; i++)
                advance(lx);
            joined = 1;
        } else if ((cont = blank_continuation(lx)) != 0) {
            rules_diag_add(d, 1, lx->line, lx->col,
                           "'\\' continues a line only as its very last character: remove the "
                           "blanks after it");
            for (size_t i = 0; i < cont; i++)
                advance(lx);
            joined = 1;
        } else if (is_control(c)) {
            rules_diag_add(d, 1, lx->line, lx->col, "control character 0x%02x outside a string",
                           c);
            advance(lx);
        } else {
            struct rules_token t = {.line = lx->line, .col = lx->col};
            const char *start = lx->p;
            struct sbuf text = {0};
            do {
                if (*lx->p == '"') {
                    lex_string(lx, &text, &t.bad, d);
                    t.quoted = 1;
                } else {
                    while (lx->p != lx->end && !ends_word(lx)) {
                        unsigned char w = (unsigned char)*lx->p;
                        if (is_control(w)) {
                            /* Reported and dropped; the word goes on, so
                             * one stray byte makes one error. */
                            rules_diag_add(d, 1, lx->line, lx->col,
                                           "control character 0x%02x outside a string", w);
                            t.bad = 1;
                        } else {
                            sbuf_putc(&text, (char)w);
                        }
                        advance(lx);
                    }
                }
            } while (lx->p != lx->end && (*lx->p == '"' || !ends_word(lx)));
            t.len = text.len;
            t.text = sbuf_steal(&text);
            push_token(ln, &t);

            if (last_end && joined)
                sbuf_putc(&src, ' ');
            else if (last_end)
                sbuf_append(&src, last_end, (size_t)(start - last_end));
            sbuf_append(&src, start, (size_t)(lx->p - start));
            last_end = lx->p;
            joined = 0;
            ln->end_line = lx->line;
            ln->end_col = lx->col;
        }
    }
    ln->source = sbuf_steal(&src);
    return 1;
}

void rules_line_free(struct rules_line *ln)
{
    for (size_t i = 0; i < ln->n; i++)
        free(ln->tok[i].text);
    free(ln->tok);
    free(ln->source);
    memset(ln, 0, sizeof *ln);
}
