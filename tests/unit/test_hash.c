/* Unit tests for hash.h: FNV-1a against the published test vectors, and the
 * properties its callers rely on (pieces chain, case folding). */
#include "hash.h"
#include "unit.h"

static void test_fnv64_vectors(void)
{
    CHECK(hash_fnv64_str("") == 0xcbf29ce484222325ull);
    CHECK(hash_fnv64_str("a") == 0xaf63dc4c8601ec8cull);
    CHECK(hash_fnv64_str("foobar") == 0x85944171f73967e8ull);
    CHECK(hash_fnv64(HASH_FNV64_BASIS, "foobar", 6) == 0x85944171f73967e8ull);
    /* Hashing in pieces is hashing the whole (route.c chains host and route). */
    CHECK(hash_fnv64(hash_fnv64(HASH_FNV64_BASIS, "foo", 3), "bar", 3) ==
          hash_fnv64_str("foobar"));
    CHECK(hash_fnv64(HASH_FNV64_BASIS, "ab\0c", 4) != hash_fnv64_str("ab"));
}

static void test_fnv32_vectors(void)
{
    CHECK(hash_fnv32_str("") == 0x811c9dc5u);
    CHECK(hash_fnv32_str("a") == 0xe40c292cu);
    CHECK(hash_fnv32_str("foobar") == 0xbf9cf968u);
}

static void test_fnv32_nocase(void)
{
    /* Lower-case letters are unchanged by the fold, so it matches plain FNV on them. */
    CHECK(hash_fnv32_nocase("foobar", 6) == 0xbf9cf968u);
    CHECK(hash_fnv32_nocase("Content-Length", 14) == hash_fnv32_nocase("content-length", 14));
    CHECK(hash_fnv32_nocase("HOST", 4) == hash_fnv32_nocase("host", 4));
    CHECK(hash_fnv32_nocase("host", 4) != hash_fnv32_nocase("hose", 4));
    CHECK(hash_fnv32_nocase("hostX", 4) == hash_fnv32_str("host")); /* only LEN bytes */
}

int main(void)
{
    RUN(test_fnv64_vectors);
    RUN(test_fnv32_vectors);
    RUN(test_fnv32_nocase);
    return unit_summary("hash");
}
