/*
 * Golden tests for the rule parser: each tests/unit/rules_golden/NAME.rules
 * is parsed and what `statusproxy rules check` would print — diagnostics
 * (as "NAME.rules:LINE:COL: ..."), then the normalized rules of a good
 * file — is compared with NAME.out beside it. A good file's normalized
 * text must also parse back to itself.
 *
 * Run from the repository root (make unit does). With UPDATE_GOLDEN=1 the
 * .out files are rewritten instead: review the diff before committing.
 */
#include <dirent.h>
#include <stdlib.h>

#include "rules.h"
#include "unit.h"
#include "util.h"

#define GOLDEN_DIR "tests/unit/rules_golden"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct sbuf b = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sbuf_append(&b, buf, n);
    fclose(f);
    *len = b.len;
    return sbuf_steal(&b);
}

/* What `rules check` prints for TEXT, and the set (NULL on errors). */
static char *check_output(const char *name, const char *text, size_t len, struct rules **out)
{
    struct rules_diags d = {0};
    struct rules *rs = rules_parse(text, len, name, 1, &d);
    struct sbuf b = {0};
    for (size_t i = 0; i < d.n; i++) {
        char *line = rules_diag_format(name, &d.items[i]);
        sbuf_printf(&b, "%s\n", line);
        free(line);
    }
    for (size_t i = 0; rs && i < rules_count(rs); i++)
        sbuf_printf(&b, "%s\n", rule_normalized(rules_at(rs, i)));
    rules_diags_free(&d);
    *out = rs;
    return sbuf_steal(&b);
}

/* Print the first line where GOT and WANT differ. */
static void show_difference(const char *got, const char *want)
{
    int line = 1;
    const char *g = got, *w = want;
    while (*g && *g == *w) {
        if (*g == '\n') {
            line++;
            got = g + 1;
            want = w + 1;
        }
        g++, w++;
    }
    fprintf(stderr, "    first difference at output line %d:\n      got:  %.*s\n      want: %.*s\n",
            line, (int)strcspn(got, "\n"), got, (int)strcspn(want, "\n"), want);
}

static int golden_files;

static void check_one(const char *name)
{
    char rules_path[512], out_path[512];
    snprintf(rules_path, sizeof rules_path, "%s/%s", GOLDEN_DIR, name);
    snprintf(out_path, sizeof out_path, "%s/%.*s.out", GOLDEN_DIR, (int)(strlen(name) - 6), name);
    size_t len, want_len;
    char *text = read_all(rules_path, &len);
    CHECK(text != NULL);
    if (!text)
        return;
    golden_files++;
    struct rules *rs;
    char *got = check_output(name, text, len, &rs);

    if (getenv("UPDATE_GOLDEN")) {
        FILE *f = fopen(out_path, "wb");
        CHECK(f != NULL);
        if (f) {
            fputs(got, f);
            fclose(f);
        }
    } else {
        char *want = read_all(out_path, &want_len);
        if (!want)
            fprintf(stderr, "  %s: missing %s\n", name, out_path);
        CHECK(want != NULL);
        if (want && strcmp(got, want) != 0) {
            fprintf(stderr, "  %s: output differs from %s\n", name, out_path);
            show_difference(got, want);
            CHECK(strcmp(got, want) == 0);
        }
        free(want);
    }

    /* The normal form is itself a good rule file with the same normal form. */
    if (rs) {
        struct sbuf norm = {0};
        for (size_t i = 0; i < rules_count(rs); i++)
            sbuf_printf(&norm, "%s\n", rule_normalized(rules_at(rs, i)));
        struct rules_diags d = {0};
        struct rules *again = rules_parse(norm.data ? norm.data : "", norm.len, name, 1, &d);
        CHECK(again != NULL);
        CHECK_INT(d.errors, 0);
        for (size_t i = 0; again && i < rules_count(rs); i++)
            CHECK_STR(rule_normalized(rules_at(again, i)), rule_normalized(rules_at(rs, i)));
        rules_unref(again);
        rules_diags_free(&d);
        sbuf_free(&norm);
    }
    rules_unref(rs);
    free(got);
    free(text);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Each golden file counts as one test in the summary. */
static void run_golden_files(void)
{
    DIR *dir = opendir(GOLDEN_DIR);
    if (!dir) {
        fprintf(stderr, "cannot open %s (run from the repository root)\n", GOLDEN_DIR);
        unit_failed++;
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 6 && strcmp(e->d_name + len - 6, ".rules") == 0) {
            names = xrealloc(names, (n + 1) * sizeof *names);
            names[n++] = xstrdup(e->d_name);
        }
    }
    closedir(dir);
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        int before = unit_failed_checks;
        unit_current = names[i];
        check_one(names[i]);
        if (unit_failed_checks == before)
            unit_passed++;
        else
            unit_failed++;
        free(names[i]);
    }
    free(names);
}

static void test_enough_golden_files(void)
{
    CHECK(golden_files >= 8);
}

/* The example files shipped in rules/ must be clean: no error, no warning. */
static void test_shipped_rule_files_are_clean(void)
{
    const char *files[] = {"rules/default.rules", "rules/chaos.rules", "rules/mask-errors.rules",
                           "rules/deterministic.rules"};
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        struct rules_diags d = {0};
        struct rules *rs = rules_load_file(files[i], 1, &d);
        if (!rs || d.n)
            fprintf(stderr, "  %s: %zu diagnostics\n", files[i], d.n);
        CHECK(rs != NULL);
        CHECK_INT(d.n, 0);
        rules_unref(rs);
        rules_diags_free(&d);
    }
}

int main(void)
{
    run_golden_files();
    RUN(test_enough_golden_files);
    RUN(test_shipped_rule_files_are_clean);
    return unit_summary("rules_golden");
}
