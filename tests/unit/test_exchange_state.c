/* Unit tests for the exchange's pure state helpers (conn_int.h): when the
 * answer's head counts as sent, when an answer closes the connection, which
 * rule name an exchange is recorded under, and that the first error stays. */
#include "conn_int.h"
#include "unit.h"

/* The head is on the wire from RESP_SLOW on (a slow head has begun). */
static void test_head_sent_by_state(void)
{
    static const struct {
        enum resp_state resp;
        int sent;
    } cases[] = {
        {RESP_WAIT, 0}, {RESP_HOLD, 0}, {RESP_SLOW, 1}, {RESP_BODY, 1}, {RESP_DONE, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct exchange x = {.resp = cases[i].resp};
        CHECK_INT(exchange_head_sent(&x), cases[i].sent);
    }
}

/* Any one reason closes: asked by an answer, a client without keep-alive,
 * a stopping worker, a client that half-closed. */
static void test_must_close_table(void)
{
    static const struct {
        int close_after, keepalive, stopping, client_eof, want;
    } cases[] = {
        {0, 1, 0, 0, 0}, {1, 1, 0, 0, 1}, {0, 0, 0, 0, 1}, {0, 1, 1, 0, 1}, {0, 1, 0, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn_env env = {.stopping = cases[i].stopping};
        struct conn c = {.env = &env, .close_after = cases[i].close_after,
                         .client_eof = cases[i].client_eof};
        c.x.client_keepalive = cases[i].keepalive;
        CHECK_INT(exchange_must_close(&c), cases[i].want);
    }
}

/* Without a rule verdict the fault header's name (or none) is recorded. */
static void test_rule_name_without_verdict(void)
{
    struct exchange x = {0};
    CHECK(exchange_rule(&x) == NULL);
    CHECK(exchange_rule_name(&x) == NULL);
    x.fault_rule = "fault-header";
    CHECK_STR(exchange_rule_name(&x), "fault-header");
}

static void test_first_error_stays(void)
{
    struct exchange x = {0};
    exchange_set_error(&x, "upstream_closed");
    exchange_set_error(&x, "client_closed");
    CHECK_STR(x.error, "upstream_closed");
}

int main(void)
{
    RUN(test_head_sent_by_state);
    RUN(test_must_close_table);
    RUN(test_rule_name_without_verdict);
    RUN(test_first_error_stays);
    return unit_summary("exchange_state");
}
