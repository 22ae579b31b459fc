/*
 * Unit tests for catalog: every code of the reference list with its exact
 * name and marks, class boundaries, kinds and body rules.
 */
#include <stdlib.h>

#include "catalog.h"
#include "unit.h"

/* The headings of shared/seed/http-status-codes.txt, as written there. */
static const char *const seed_headings[] = {
    "100 Continue", "101 Switching Protocols", "102 Processing (WebDAV)", "103 Early Hints",
    "200 OK", "201 Created", "202 Accepted", "203 Non-Authoritative Information",
    "204 No Content", "205 Reset Content", "206 Partial Content", "207 Multi-Status (WebDAV)",
    "208 Already Reported (WebDAV)", "226 IM Used (HTTP Delta encoding)",
    "300 Multiple Choices", "301 Moved Permanently", "302 Found", "303 See Other",
    "304 Not Modified", "305 Use Proxy Deprecated", "306 unused", "307 Temporary Redirect",
    "308 Permanent Redirect", "400 Bad Request", "401 Unauthorized",
    "402 Payment Required Experimental", "403 Forbidden", "404 Not Found",
    "405 Method Not Allowed", "406 Not Acceptable", "407 Proxy Authentication Required",
    "408 Request Timeout", "409 Conflict", "410 Gone", "411 Length Required",
    "412 Precondition Failed", "413 Payload Too Large", "414 URI Too Long",
    "415 Unsupported Media Type", "416 Range Not Satisfiable", "417 Expectation Failed",
    "418 I'm a teapot", "421 Misdirected Request", "422 Unprocessable Entity (WebDAV)",
    "423 Locked (WebDAV)", "424 Failed Dependency (WebDAV)", "425 Too Early Experimental",
    "426 Upgrade Required", "428 Precondition Required", "429 Too Many Requests",
    "431 Request Header Fields Too Large", "451 Unavailable For Legal Reasons",
    "500 Internal Server Error", "501 Not Implemented", "502 Bad Gateway",
    "503 Service Unavailable", "504 Gateway Timeout", "505 HTTP Version Not Supported",
    "506 Variant Also Negotiates", "507 Insufficient Storage (WebDAV)",
    "508 Loop Detected (WebDAV)", "510 Not Extended", "511 Network Authentication Required",
};

/* Split a heading into code, name, marks and note, the way the list writes them. */
static void parse_heading(const char *line, int *code, char *name, size_t nlen, unsigned *marks,
                          char *note, size_t notelen)
{
    static const struct {
        const char *suffix;
        unsigned bit;
    } suffixes[] = {{" (WebDAV)", CATALOG_WEBDAV},
                    {" Experimental", CATALOG_EXPERIMENTAL},
                    {" Deprecated", CATALOG_DEPRECATED}};
    *code = atoi(line);
    snprintf(name, nlen, "%s", line + 4);
    *marks = 0;
    note[0] = '\0';
    if (strcmp(name, "unused") == 0)
        *marks |= CATALOG_UNUSED;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t n = strlen(name), s = strlen(suffixes[i].suffix);
        if (n > s && strcmp(name + n - s, suffixes[i].suffix) == 0) {
            name[n - s] = '\0';
            *marks |= suffixes[i].bit;
        }
    }
    char *paren = strstr(name, " (");
    if (paren) {
        snprintf(note, notelen, "%.*s", (int)(strlen(paren) - 3), paren + 2);
        *paren = '\0';
    }
}

static int check_heading(const char *line)
{
    int code;
    unsigned marks;
    char name[128], note[128];
    parse_heading(line, &code, name, sizeof name, &marks, note, sizeof note);
    const struct catalog_entry *e = catalog_lookup(code);
    int before = unit_failed_checks;
    CHECK(e != NULL);
    if (!e)
        return 0;
    CHECK_STR(e->name, name);
    CHECK_INT(e->marks, marks);
    CHECK_STR(e->note ? e->note : "", note);
    if (unit_failed_checks != before)
        fprintf(stderr, "  (heading: \"%s\")\n", line);
    return 1;
}

static void test_every_listed_code_has_its_name_and_marks(void)
{
    size_t count;
    catalog_entries(&count);
    CHECK_INT(count, sizeof seed_headings / sizeof seed_headings[0]);
    for (size_t i = 0; i < sizeof seed_headings / sizeof seed_headings[0]; i++)
        check_heading(seed_headings[i]);
}

/* When the shared reference file is reachable, it must agree with the table too. */
static void test_seed_file_agrees_when_present(void)
{
    const char *path = getenv("STATUSPROXY_SEED");
    FILE *f = fopen(path ? path : "../shared/seed/http-status-codes.txt", "r");
    if (!f)
        return;
    char line[1024];
    int headings = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] >= '1' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
            line[2] >= '0' && line[2] <= '9' && line[3] == ' ')
            headings += check_heading(line);
    }
    fclose(f);
    size_t count;
    catalog_entries(&count);
    CHECK_INT(headings, count);
}

static void test_entries_sorted_and_unique(void)
{
    size_t count;
    const struct catalog_entry *e = catalog_entries(&count);
    for (size_t i = 1; i < count; i++)
        CHECK(e[i - 1].code < e[i].code);
}

static void test_class_boundaries(void)
{
    CHECK_INT(catalog_class(99), 0);
    CHECK_INT(catalog_class(100), 1);
    CHECK_INT(catalog_class(199), 1);
    CHECK_INT(catalog_class(200), 2);
    CHECK_INT(catalog_class(599), 5);
    CHECK_INT(catalog_class(600), 0);
    CHECK_INT(catalog_class(0), 0);
    CHECK_INT(catalog_class(-1), 0);
    CHECK_STR(catalog_class_name(99), "invalid");
    CHECK_STR(catalog_class_name(100), "1xx");
    CHECK_STR(catalog_class_name(404), "4xx");
    CHECK_STR(catalog_class_name(599), "5xx");
    CHECK_STR(catalog_class_name(600), "invalid");
}

static void test_kinds(void)
{
    CHECK_INT(catalog_kind(200), CATALOG_STANDARD);
    CHECK_INT(catalog_kind(306), CATALOG_STANDARD);
    CHECK_INT(catalog_kind(299), CATALOG_NONSTANDARD);
    CHECK_INT(catalog_kind(499), CATALOG_NONSTANDARD);
    CHECK_INT(catalog_kind(520), CATALOG_NONSTANDARD);
    CHECK_INT(catalog_kind(100), CATALOG_STANDARD);
    CHECK_INT(catalog_kind(599), CATALOG_NONSTANDARD);
    CHECK_INT(catalog_kind(99), CATALOG_INVALID);
    CHECK_INT(catalog_kind(600), CATALOG_INVALID);
    CHECK_STR(catalog_kind_name(CATALOG_NONSTANDARD), "non-standard");
}

static void test_body_rules(void)
{
    CHECK_INT(catalog_body(100), CATALOG_BODY_NONE);
    CHECK_INT(catalog_body(103), CATALOG_BODY_NONE);
    CHECK_INT(catalog_body(204), CATALOG_BODY_NONE);
    CHECK_INT(catalog_body(304), CATALOG_BODY_NONE);
    CHECK_INT(catalog_body(205), CATALOG_BODY_EMPTY);
    CHECK_INT(catalog_body(200), CATALOG_BODY_ALLOWED);
    CHECK_INT(catalog_body(503), CATALOG_BODY_ALLOWED);
}

static void test_reason_phrases(void)
{
    CHECK_STR(catalog_reason(503), "Service Unavailable");
    CHECK_STR(catalog_reason(418), "I'm a teapot");
    CHECK_STR(catalog_reason(299), "Unknown Success");
    CHECK_STR(catalog_reason(520), "Unknown Server Error");
}

static void test_marks_text(void)
{
    char buf[64];
    catalog_marks_text(CATALOG_WEBDAV | CATALOG_DEPRECATED, buf, sizeof buf);
    CHECK_STR(buf, "WebDAV deprecated");
    catalog_marks_text(0, buf, sizeof buf);
    CHECK_STR(buf, "");
}

int main(void)
{
    RUN(test_every_listed_code_has_its_name_and_marks);
    RUN(test_seed_file_agrees_when_present);
    RUN(test_entries_sorted_and_unique);
    RUN(test_class_boundaries);
    RUN(test_kinds);
    RUN(test_body_rules);
    RUN(test_reason_phrases);
    RUN(test_marks_text);
    return unit_summary("catalog");
}
