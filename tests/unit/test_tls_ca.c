/* Unit tests for tls_ca: creating a CA on disk, loading it (permissions,
 * mismatched files), minting leaves that verify against the CA, and the
 * LRU cache. Each test works in its own temporary directory. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls_ca.h"
#include "tls_engine.h"
#include "unit.h"
#include "util.h"

static char *make_tmpdir(void)
{
    char *d = xstrdup("/tmp/test_tls_ca.XXXXXX");
    if (!mkdtemp(d)) {
        perror("mkdtemp");
        exit(1);
    }
    return d;
}

static void remove_dir(const char *d)
{
    char *cmd = xasprintf("rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", d);
    free(cmd);
}

/* A fresh CA in a new directory's "ca" subdirectory; returns the subdir. */
static char *new_ca_dir(char **root)
{
    *root = make_tmpdir();
    char *dir = xasprintf("%s/ca", *root);
    char err[256] = "";
    int rc = tls_ca_create(dir, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err);
    return dir;
}

/* Remove what new_ca_dir made and free its names. */
static void drop_ca_dir(char *dir, char *root)
{
    remove_dir(root);
    free(dir);
    free(root);
}

static struct tls_ca *load_ok(const char *dir, size_t max)
{
    char err[512] = "";
    struct tls_ca *ca = tls_ca_load(dir, max, err, sizeof err);
    CHECK(ca != NULL);
    if (!ca)
        fprintf(stderr, "  %s\n", err);
    return ca;
}

static int file_mode(const char *dir, const char *file)
{
    char *p = xasprintf("%s/%s", dir, file);
    struct stat st;
    int mode = stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
    free(p);
    return mode;
}

static void test_create_writes_files(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    CHECK_INT(file_mode(dir, TLS_CA_KEY_FILE), 0600);
    CHECK_INT(file_mode(dir, "") & 0777, 0700); /* the directory itself */
    CHECK(file_mode(dir, TLS_CA_CERT_FILE) >= 0);
    struct tls_ca *ca = load_ok(dir, 0);
    if (ca) {
        X509 *c = tls_ca_cert(ca);
        CHECK_INT(X509_check_ca(c) >= 1, 1);
        CHECK(X509_get_key_usage(c) & KU_KEY_CERT_SIGN);
        CHECK(X509_get0_subject_key_id(c) != NULL);
        char cn[128] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, cn, sizeof cn);
        CHECK(strncmp(cn, "statusproxy local CA (", 22) == 0);
        /* about ten years */
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(c), X509_get0_notAfter(c));
        CHECK(days >= 3649 && days <= 3651);
        CHECK_INT(EVP_PKEY_get_bits(tls_ca_leaf_key(ca)), 256);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

static void test_create_refuses_existing(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    char *key = xasprintf("%s/%s", dir, TLS_CA_KEY_FILE);
    FILE *f = fopen(key, "r");
    char before[1024] = "", after[1024] = "";
    size_t nb = f ? fread(before, 1, sizeof before, f) : 0;
    if (f)
        fclose(f);
    char err[512] = "";
    CHECK_INT(tls_ca_create(dir, err, sizeof err), TLS_CA_EXISTS);
    CHECK(strstr(err, key) != NULL);
    CHECK(strstr(err, "already exists") != NULL);
    f = fopen(key, "r");
    size_t na = f ? fread(after, 1, sizeof after, f) : 0;
    if (f)
        fclose(f);
    CHECK(nb > 0 && nb == na && memcmp(before, after, nb) == 0);
    free(key);
    drop_ca_dir(dir, root);
}

/* Verify LEAF against a store holding only CA's certificate, for a server
 * named HOST (a DNS name or an IP literal). Returns X509_V_OK or the error. */
static int verify_leaf(struct tls_ca *ca, X509 *leaf, const char *host)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, tls_ca_cert(ca));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    else
        X509_VERIFY_PARAM_set1_host(param, host, 0);
    int rc = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

/* The single SAN of X as text: "DNS:name" or "IP:addr". */
static void san_text(X509 *x, char *out, size_t len)
{
    out[0] = '\0';
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (!names)
        return;
    if (sk_GENERAL_NAME_num(names) == 1) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, 0);
        int type;
        ASN1_STRING *v = GENERAL_NAME_get0_value(gn, &type);
        if (type == GEN_DNS) {
            snprintf(out, len, "DNS:%.*s", ASN1_STRING_length(v),
                     (const char *)ASN1_STRING_get0_data(v));
        } else if (type == GEN_IPADD) {
            char buf[INET6_ADDRSTRLEN] = "?";
            int fam = ASN1_STRING_length(v) == 4 ? AF_INET : AF_INET6;
            inet_ntop(fam, ASN1_STRING_get0_data(v), buf, sizeof buf);
            snprintf(out, len, "IP:%s", buf);
        }
    }
    GENERAL_NAMES_free(names);
}

static void check_leaf(struct tls_ca *ca, const char *name, const char *verify_as,
                       const char *want_san)
{
    char err[256] = "", san[300];
    X509 *leaf = tls_ca_leaf(ca, name, err, sizeof err);
    CHECK(leaf != NULL);
    if (!leaf) {
        fprintf(stderr, "  %s: %s\n", name, err);
        return;
    }
    CHECK_INT(verify_leaf(ca, leaf, verify_as), X509_V_OK);
    san_text(leaf, san, sizeof san);
    CHECK_STR(san, want_san);
    CHECK(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER);
    CHECK_INT(X509_check_ca(leaf), 0);
    /* The same key for every leaf of this process. */
    CHECK_INT(EVP_PKEY_eq(X509_get0_pubkey(leaf), tls_ca_leaf_key(ca)), 1);
    /* authorityKeyIdentifier names the CA's key */
    const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(leaf);
    const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(tls_ca_cert(ca));
    CHECK(akid && skid && ASN1_OCTET_STRING_cmp(akid, skid) == 0);
    /* notBefore an hour back, notAfter seven days on */
    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf));
    CHECK_INT((long)days * 86400 + secs, TLS_CA_LEAF_BACKDATE_S + TLS_CA_LEAF_LIFETIME_S);
    /* a 128-bit serial (16 octets) */
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
    CHECK_INT(BN_num_bytes(bn), 16);
    BN_free(bn);
    X509_free(leaf);
}

static void test_leaf_verifies_with_sans(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 0);
    if (ca) {
        check_leaf(ca, "api.example.test", "api.example.test", "DNS:api.example.test");
        check_leaf(ca, "Mixed.Case.Test", "mixed.case.test", "DNS:mixed.case.test");
        check_leaf(ca, "127.0.0.1", "127.0.0.1", "IP:127.0.0.1");
        check_leaf(ca, "::1", "::1", "IP:::1");
        check_leaf(ca, "[2001:db8::5]", "2001:db8::5", "IP:2001:db8::5");
        /* a leaf for one name does not pass for another */
        char err[256];
        X509 *leaf = tls_ca_leaf(ca, "a.example.test", err, sizeof err);
        CHECK(leaf != NULL);
        if (leaf)
            CHECK_INT(verify_leaf(ca, leaf, "b.example.test"), X509_V_ERR_HOSTNAME_MISMATCH);
        X509_free(leaf);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

static void test_leaf_rejected_by_other_ca(void)
{
    char *root1, *root2;
    char *dir1 = new_ca_dir(&root1), *dir2 = new_ca_dir(&root2);
    struct tls_ca *ca1 = load_ok(dir1, 0), *ca2 = load_ok(dir2, 0);
    if (ca1 && ca2) {
        char err[256];
        X509 *leaf = tls_ca_leaf(ca1, "x.test", err, sizeof err);
        CHECK_INT(verify_leaf(ca2, leaf, "x.test"), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
        CHECK_INT(verify_leaf(ca1, leaf, "x.test"), X509_V_OK);
        X509_free(leaf);
        /* each process (here: each loaded CA) has its own leaf key */
        CHECK_INT(EVP_PKEY_eq(tls_ca_leaf_key(ca1), tls_ca_leaf_key(ca2)), 0);
    }
    tls_ca_free(ca1);
    tls_ca_free(ca2);
    drop_ca_dir(dir1, root1);
    drop_ca_dir(dir2, root2);
}

static void test_bad_names(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 0);
    static const char *bad[] = {"", "a b", "evil,DNS:other", "x/y", "[]", "a\nb"};
    for (size_t i = 0; ca && i < ARRAY_LEN(bad); i++) {
        char err[256] = "";
        X509 *x = tls_ca_leaf(ca, bad[i], err, sizeof err);
        CHECK(x == NULL);
        CHECK(strstr(err, "not a host name or IP address") != NULL);
        X509_free(x);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

/* One leaf for several names (the TLS listener's): each name verifies,
 * duplicates are dropped, a bad name is refused, and the engine accepts the
 * leaf with the process's leaf key (and refuses another key). */
static void test_leaf_for_several_names(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 0);
    if (ca) {
        char err[256] = "";
        const char *names[] = {"localhost", "127.0.0.1", "api.test", "LOCALHOST", "::1"};
        X509 *leaf = tls_ca_leaf_names(ca, names, ARRAY_LEN(names), err, sizeof err);
        CHECK(leaf != NULL);
        if (leaf) {
            CHECK_INT(verify_leaf(ca, leaf, "localhost"), X509_V_OK);
            CHECK_INT(verify_leaf(ca, leaf, "api.test"), X509_V_OK);
            CHECK_INT(verify_leaf(ca, leaf, "other.test"), X509_V_ERR_HOSTNAME_MISMATCH);
            CHECK_INT(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
            CHECK_INT(X509_check_ip_asc(leaf, "::1", 0), 1);
            GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
            CHECK_INT(sk_GENERAL_NAME_num(sans), 4);
            GENERAL_NAMES_free(sans);
            struct tls_engine_config *cfg =
                tls_engine_server_config_cert(leaf, tls_ca_leaf_key(ca), tls_ca_cert(ca), err,
                                              sizeof err);
            CHECK(cfg != NULL);
            tls_engine_config_free(cfg);
            EVP_PKEY *other = EVP_EC_gen("P-256");
            cfg = tls_engine_server_config_cert(leaf, other, NULL, err, sizeof err);
            CHECK(cfg == NULL && err[0]);
            EVP_PKEY_free(other);
        }
        X509_free(leaf);
        const char *bad[] = {"localhost", "a b"};
        err[0] = '\0';
        CHECK(tls_ca_leaf_names(ca, bad, 2, err, sizeof err) == NULL);
        CHECK(strstr(err, "'a b' is not a host name") != NULL);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

static void test_cache_hit_and_eviction(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 3);
    if (ca) {
        char err[256];
        unsigned long minted;
        size_t cached;
        X509 *a1 = tls_ca_leaf(ca, "a.test", err, sizeof err);
        X509 *a2 = tls_ca_leaf(ca, "A.TEST", err, sizeof err);
        CHECK(a1 != NULL && a1 == a2); /* the same certificate, minted once */
        tls_ca_stats(ca, &minted, &cached);
        CHECK_INT(minted, 1);
        X509 *b = tls_ca_leaf(ca, "b.test", err, sizeof err);
        X509 *c = tls_ca_leaf(ca, "c.test", err, sizeof err);
        X509 *a3 = tls_ca_leaf(ca, "a.test", err, sizeof err); /* a is now most recent */
        CHECK(a3 == a1);
        X509 *d = tls_ca_leaf(ca, "d.test", err, sizeof err); /* evicts b, the oldest */
        tls_ca_stats(ca, &minted, &cached);
        CHECK_INT(minted, 4);
        CHECK_INT(cached, 3);
        X509 *a4 = tls_ca_leaf(ca, "a.test", err, sizeof err);
        CHECK(a4 == a1);
        X509 *b2 = tls_ca_leaf(ca, "b.test", err, sizeof err); /* minted again */
        CHECK(b2 != NULL && b2 != b);
        CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(b), X509_get0_serialNumber(b2)) != 0);
        tls_ca_stats(ca, &minted, &cached);
        CHECK_INT(minted, 5);
        CHECK_INT(cached, 3);
        /* certificates handed out outlive their eviction and the CA */
        X509 *all[] = {a1, a2, a3, a4, b, b2, c, d};
        tls_ca_free(ca);
        ca = NULL;
        CHECK_INT(X509_check_ca(b), 0);
        for (size_t i = 0; i < ARRAY_LEN(all); i++)
            X509_free(all[i]);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

static void test_key_permissions(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    char *key = xasprintf("%s/%s", dir, TLS_CA_KEY_FILE);
    static const int refused[] = {0644, 0640, 0604, 0660};
    for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
        CHECK_INT(chmod(key, (mode_t)refused[i]), 0);
        char err[512] = "";
        struct tls_ca *ca = tls_ca_load(dir, 0, err, sizeof err);
        CHECK(ca == NULL);
        char *hint = xasprintf("run: chmod 600 %s", key);
        CHECK(strstr(err, hint) != NULL);
        if (!strstr(err, hint))
            fprintf(stderr, "  got: %s\n", err);
        free(hint);
        tls_ca_free(ca);
    }
    CHECK_INT(chmod(key, 0600), 0);
    struct tls_ca *ca = load_ok(dir, 0);
    tls_ca_free(ca);
    CHECK_INT(chmod(key, 0400), 0);
    ca = load_ok(dir, 0);
    tls_ca_free(ca);
    free(key);
    drop_ca_dir(dir, root);
}

static void test_missing_files(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    char *key = xasprintf("%s/%s", dir, TLS_CA_KEY_FILE);
    char *cert = xasprintf("%s/%s", dir, TLS_CA_CERT_FILE);
    char err[512] = "";
    CHECK_INT(unlink(key), 0);
    CHECK(tls_ca_load(dir, 0, err, sizeof err) == NULL);
    CHECK(strstr(err, key) != NULL);
    CHECK(strstr(err, "No such file") != NULL);
    CHECK_INT(unlink(cert), 0);
    CHECK(tls_ca_load(dir, 0, err, sizeof err) == NULL);
    CHECK(strstr(err, cert) != NULL);
    free(key);
    free(cert);
    drop_ca_dir(dir, root);
}

static void test_mismatched_key_refused(void)
{
    char *root1, *root2;
    char *dir1 = new_ca_dir(&root1), *dir2 = new_ca_dir(&root2);
    /* dir1's certificate with dir2's key */
    char *cmd = xasprintf("cp -p '%s/%s' '%s/%s'", dir2, TLS_CA_KEY_FILE, dir1, TLS_CA_KEY_FILE);
    CHECK_INT(system(cmd), 0);
    char err[512] = "";
    struct tls_ca *ca = tls_ca_load(dir1, 0, err, sizeof err);
    CHECK(ca == NULL);
    CHECK(strstr(err, "does not belong to the certificate") != NULL);
    tls_ca_free(ca);
    free(cmd);
    drop_ca_dir(dir1, root1);
    drop_ca_dir(dir2, root2);
}

static void test_not_a_ca_refused(void)
{
    /* A leaf certificate (CA:FALSE) in place of ca.pem is refused. */
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 0);
    if (ca) {
        char err[512] = "";
        X509 *leaf = tls_ca_leaf(ca, "leaf.test", err, sizeof err);
        char *cert = xasprintf("%s/%s", dir, TLS_CA_CERT_FILE);
        FILE *f = fopen(cert, "w");
        CHECK(f && PEM_write_X509(f, leaf));
        if (f)
            fclose(f);
        CHECK(tls_ca_load(dir, 0, err, sizeof err) == NULL);
        CHECK(strstr(err, "not a CA certificate") != NULL);
        X509_free(leaf);
        free(cert);
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

struct hammer {
    struct tls_ca *ca;
    X509 *got[20];
    int failures;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 20; i++) {
            char name[32], err[256];
            snprintf(name, sizeof name, "host%d.test", i);
            X509 *x = tls_ca_leaf(h->ca, name, err, sizeof err);
            if (!x)
                h->failures++;
            if (round == 0)
                h->got[i] = x;
            else
                X509_free(x);
        }
    }
    return NULL;
}

/* Four threads asking for the same names at once: every name is minted and
 * cached once, and every thread ends up with that one certificate. */
static void test_threads_share_cache(void)
{
    char *root;
    char *dir = new_ca_dir(&root);
    struct tls_ca *ca = load_ok(dir, 0);
    if (ca) {
        struct hammer h[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            memset(&h[i], 0, sizeof h[i]);
            h[i].ca = ca;
            pthread_create(&t[i], NULL, hammer_thread, &h[i]);
        }
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        unsigned long minted;
        size_t cached;
        tls_ca_stats(ca, &minted, &cached);
        CHECK_INT(minted, 20);
        CHECK_INT(cached, 20);
        for (int n = 0; n < 20; n++) {
            char name[32], err[256];
            snprintf(name, sizeof name, "host%d.test", n);
            X509 *now = tls_ca_leaf(ca, name, err, sizeof err);
            for (int i = 0; i < 4; i++) {
                /* a thread that lost a minting race got the winner's */
                CHECK(h[i].got[n] != NULL && h[i].got[n] == now);
            }
            X509_free(now);
        }
        for (int i = 0; i < 4; i++) {
            CHECK_INT(h[i].failures, 0);
            for (int n = 0; n < 20; n++)
                X509_free(h[i].got[n]);
        }
    }
    tls_ca_free(ca);
    drop_ca_dir(dir, root);
}

int main(void)
{
    RUN(test_create_writes_files);
    RUN(test_create_refuses_existing);
    RUN(test_leaf_verifies_with_sans);
    RUN(test_leaf_rejected_by_other_ca);
    RUN(test_bad_names);
    RUN(test_leaf_for_several_names);
    RUN(test_cache_hit_and_eviction);
    RUN(test_key_permissions);
    RUN(test_missing_files);
    RUN(test_mismatched_key_refused);
    RUN(test_not_a_ca_refused);
    RUN(test_threads_share_cache);
    return unit_summary("tls_ca");
}
