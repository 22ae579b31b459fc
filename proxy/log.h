/*
 * log — one line per event on stderr: "LEVEL message". Callers that speak
 * for a connection start the message with its id ("c42 ...").
 * LOG() checks the level before the arguments are evaluated.
 */
#ifndef STATUSPROXY_LOG_H
#define STATUSPROXY_LOG_H

#include "util.h"

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern enum log_level log_threshold;

void log_set_level(enum log_level level);
/* Parse "error|warn|info|debug"; 0 on success, -1 otherwise. */
int log_parse_level(const char *s, enum log_level *out);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_LIKE(2, 3);

#define LOG(level, ...)                                                                            \
    do {                                                                                           \
        if ((level) <= log_threshold)                                                              \
            log_msg((level), __VA_ARGS__);                                                         \
    } while (0)

#endif
