/*
 * libFuzzer target for the rule parser: rule text reaches the proxy from
 * files and from PUT /rules, so any bytes must parse or fail cleanly. A
 * good set is also normalized, re-parsed (the normal form must be good and
 * stable) and matched once, to reach the matcher with odd compiled forms.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy \
 *     tests/fuzz/fuzz_rules.c proxy/rules*.c proxy/glob.c proxy/cidr.c \
 *     proxy/catalog.c proxy/units.c proxy/util.c proxy/http.c proxy/dist.c \
 *     proxy/ratelimit.c -lm -o build/fuzz_rules
 *   build/fuzz_rules -max_len=512 tests/unit/rules_golden
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rules_diags d = {0};
    struct rules *rs = rules_parse((const char *)data, size, "fuzz", 1, &d);
    for (size_t i = 0; i < d.n; i++)
        free(rules_diag_format("fuzz", &d.items[i]));
    if (rs && d.errors)
        abort(); /* a set despite errors */
    rules_diags_free(&d);
    if (!rs)
        return 0;

    struct sbuf norm = {0};
    for (size_t i = 0; i < rules_count(rs); i++)
        sbuf_printf(&norm, "%s\n", rule_normalized(rules_at(rs, i)));
    struct rules *again = rules_parse(norm.data ? norm.data : "", norm.len, "fuzz", 1, NULL);
    if (!again || rules_count(again) != rules_count(rs))
        abort(); /* the normal form must be a good file */
    for (size_t i = 0; i < rules_count(rs); i++)
        if (strcmp(rule_normalized(rules_at(again, i)), rule_normalized(rules_at(rs, i))) != 0)
            abort(); /* ... with the same normal form */
    rules_unref(again);
    sbuf_free(&norm);

    struct http_head head;
    http_head_init(&head, 4096);
    http_head_add_field(&head, "X-A", 3, "b c", 3);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000001)};
    struct rules_exchange x = {"GET", 3, "api.example.com", 15, "/api/x", 6, &head,
                               (struct sockaddr *)&sin, 503};
    struct rules_verdict v;
    rules_match(rs, RULES_REQUEST, &x, &v);
    rules_match(rs, RULES_RESPONSE, &x, &v);
    http_head_free(&head);
    rules_unref(rs);
    return 0;
}
