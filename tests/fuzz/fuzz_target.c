/*
 * libFuzzer target for what the proxy parses out of a request head by
 * itself: request-targets (every form), authorities (Host, CONNECT) and the
 * token / field-value grammar. Any bytes must parse or fail cleanly, and a
 * parse that succeeds must describe a slice of its input.
 *
 *   make fuzz   (or: make build/fuzz/fuzz_target && build/fuzz/fuzz_target)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    for (int connect = 0; connect <= 1; connect++) {
        struct target t;
        const char *why = NULL;
        if (target_parse(s, size, connect, &t, &why) == 0) {
            if (t.path && (t.path < s || t.path + t.path_len > s + size))
                abort(); /* the path must point into the input */
            if (t.path_only_len > t.path_len)
                abort();
            if (t.form == TARGET_AUTHORITY && (t.port < 1 || t.port > 65535))
                abort();
            char buf[300];
            target_format_authority(t.host, t.port, 1, buf, sizeof buf);
        } else if (!why) {
            abort(); /* a refusal always says why */
        }
    }
    char host[256];
    int port;
    if (target_parse_authority(s, size, host, sizeof host, &port, 80) == 0 &&
        (strlen(host) == 0 || port < 1 || port > 65535))
        abort();
    (void)http_is_token(s, size);
    (void)http_is_field_value(s, size);
    return 0;
}
