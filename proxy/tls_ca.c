/*
 * tls_ca — the local CA: create it on disk, load it, mint leaf certificates
 * and keep them in a bounded LRU cache. See tls_ca.h for the contract.
 *
 * Not here: TLS connections, SSL_CTX set-up, anything on the event loop.
 */
#include "tls_ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "util.h"

#define CA_LIFETIME_S (3650L * 24 * 3600)
#define NAME_MAX_LEN 253
#define HASH_BUCKETS_MIN 64
#define HASH_BUCKETS_MAX (1u << 20) /* chains get longer past this; memory stays sane */

/* One cached leaf: in a hash chain by name and in the recency list. */
struct leaf {
    char *name; /* normalised: lower case, no brackets */
    X509 *cert;
    time_t renew_at;
    struct leaf *hnext;
    struct leaf *prev, *next; /* prev is more recent */
};

struct tls_ca {
    X509 *cert;
    EVP_PKEY *key;
    EVP_PKEY *leaf_key;
    pthread_mutex_t lock; /* guards everything below */
    struct leaf **buckets;
    size_t nbuckets;
    struct leaf *head, *tail; /* most and least recently used */
    size_t count, max;
    unsigned long minted;
};

/* ---- errors ---------------------------------------------------------- */

/* Format a message into ERR and append OpenSSL's most recent reason, if
 * any; the OpenSSL error queue is cleared either way. */
PRINTF_LIKE(3, 4)
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    if (e && n >= 0 && (size_t)n + 3 < errlen) {
        char reason[200];
        ERR_error_string_n(e, reason, sizeof reason);
        snprintf(err + n, errlen - (size_t)n, " (%s)", reason);
    }
    ERR_clear_error();
}

/* ---- building certificates -------------------------------------------- */

/* A random positive serial of 128 bits (RFC 5280 §4.1.2.2 allows 20 octets;
 * randomness makes every minted certificate distinct to clients). */
static int set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    raw[0] &= 0x7f;
    raw[0] |= 0x40; /* nonzero and always 16 octets long */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A certificate with version 3, a random serial, SUBJECT_CN as its common
 * name (none when NULL), PUBKEY, and validity from BEFORE to AFTER seconds
 * relative to now. */
static X509 *new_cert(const char *subject_cn, EVP_PKEY *pubkey, long before, long after)
{
    time_t now = time(NULL); /* one reading, so the validity is exact */
    X509 *x = X509_new();
    if (!x || !X509_set_version(x, X509_VERSION_3) || set_random_serial(x) != 0 ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, before, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 0, after, &now) || !X509_set_pubkey(x, pubkey))
        goto fail;
    X509_NAME *n = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"statusproxy",
                                    -1, -1, 0))
        goto fail;
    if (subject_cn && !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                                  (const unsigned char *)subject_cn, -1, -1, 0))
        goto fail;
    return x;
fail:
    X509_free(x);
    return NULL;
}

static EVP_PKEY *new_p256_key(void)
{
    return EVP_EC_gen("P-256");
}

/* The self-signed CA certificate for KEY. */
static X509 *make_ca_cert(EVP_PKEY *key)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        str_copy(host, sizeof host, "unknown host");
    char cn[64]; /* a CN is at most 64 characters: the host name is cut to fit */
    snprintf(cn, sizeof cn, "statusproxy local CA (%.*s)",
             (int)(sizeof cn - sizeof "statusproxy local CA ()"), host);
    X509 *x = new_cert(cn, key, -3600, CA_LIFETIME_S);
    if (!x || !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
        add_ext(x, x, NID_subject_key_identifier, "hash") != 0 ||
        add_ext(x, x, NID_authority_key_identifier, "keyid:always") != 0 ||
        X509_sign(x, key, EVP_sha256()) == 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* ---- writing and reading files ----------------------------------------- */

static char *dir_file(const char *dir, const char *file)
{
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", file);
}

/* Write the PEM in BIO to PATH, which must not exist yet (O_EXCL), with
 * MODE. On failure the half-written file is removed. */
static int write_new_file(const char *path, BIO *bio, mode_t mode, char *err, size_t errlen)
{
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        fail(err, errlen, "%s: %s", path, strerror(e));
        return e == EEXIST ? TLS_CA_EXISTS : -1;
    }
    for (long off = 0; off < len;) {
        ssize_t w = write(fd, data + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fail(err, errlen, "%s: write: %s", path, strerror(w < 0 ? errno : EIO));
            goto fail;
        }
        off += w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        fail(err, errlen, "%s: close: %s", path, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(path);
    return -1;
}

static int ensure_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(dir, 0700) == 0)
        return 0;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    fail(err, errlen, "%s: cannot create the directory: %s", dir,
         errno == EEXIST ? "a file of that name exists" : strerror(errno));
    return -1;
}

/* Refuse early, before generating anything, when either file exists. */
static int refuse_existing(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        fail(err, errlen, "%s already exists; not overwriting it (remove both CA files to "
                          "make a new CA)", path);
        return TLS_CA_EXISTS;
    }
    return 0;
}

int tls_ca_create(const char *dir, char *err, size_t errlen)
{
    char *cert_path = dir_file(dir, TLS_CA_CERT_FILE);
    char *key_path = dir_file(dir, TLS_CA_KEY_FILE);
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    BIO *kbio = BIO_new(BIO_s_mem()), *cbio = BIO_new(BIO_s_mem());
    int rc = -1;
    ERR_clear_error();
    if (ensure_dir(dir, err, errlen) != 0)
        goto out;
    if ((rc = refuse_existing(key_path, err, errlen)) != 0 ||
        (rc = refuse_existing(cert_path, err, errlen)) != 0)
        goto out;
    rc = -1;
    if (!kbio || !cbio || !(key = new_p256_key()) || !(cert = make_ca_cert(key)) ||
        !PEM_write_bio_PrivateKey(kbio, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509(cbio, cert)) {
        fail(err, errlen, "creating the CA failed");
        goto out;
    }
    /* The key first: if its file cannot be made, no orphan certificate. */
    if ((rc = write_new_file(key_path, kbio, 0600, err, errlen)) != 0)
        goto out;
    if ((rc = write_new_file(cert_path, cbio, 0644, err, errlen)) != 0)
        unlink(key_path);
out:
    BIO_free(kbio);
    BIO_free(cbio);
    X509_free(cert);
    EVP_PKEY_free(key);
    free(cert_path);
    free(key_path);
    return rc;
}

/* No passphrase prompts: the proxy runs unattended, and a prompt on the
 * terminal from inside a loader would hang it. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    UNUSED(buf);
    UNUSED(size);
    UNUSED(rwflag);
    UNUSED(u);
    return -1;
}

/* Read the private key once, checking on the opened file (not the path,
 * which could change in between) that only its owner may read it. */
static EVP_PKEY *load_key(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fail(err, errlen, "%s: cannot open the CA private key: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    EVP_PKEY *key = NULL;
    if (fstat(fileno(f), &st) != 0) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
    } else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        fail(err, errlen, "%s: the CA private key is accessible by group or others "
                          "(mode %04o); run: chmod 600 %s", path,
             (unsigned)(st.st_mode & 07777), path);
    } else if (!(key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL))) {
        fail(err, errlen, "%s: not an unencrypted PEM private key", path);
    }
    fclose(f);
    return key;
}

static X509 *load_cert(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fail(err, errlen, "%s: cannot open the CA certificate: %s", path, strerror(errno));
        return NULL;
    }
    X509 *x = PEM_read_X509(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (!x) {
        fail(err, errlen, "%s: not a PEM certificate", path);
    } else if (X509_check_ca(x) < 1) {
        fail(err, errlen, "%s: not a CA certificate (basicConstraints CA:TRUE missing)", path);
    } else if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        fail(err, errlen, "%s: the CA certificate has expired", path);
    } else {
        return x;
    }
    X509_free(x);
    return NULL;
}

struct tls_ca *tls_ca_load(const char *dir, size_t cache_max, char *err, size_t errlen)
{
    char *cert_path = dir_file(dir, TLS_CA_CERT_FILE);
    char *key_path = dir_file(dir, TLS_CA_KEY_FILE);
    struct tls_ca *ca = NULL;
    ERR_clear_error();
    X509 *cert = load_cert(cert_path, err, errlen);
    EVP_PKEY *key = cert ? load_key(key_path, err, errlen) : NULL;
    EVP_PKEY *leaf_key = NULL;
    if (!key)
        goto out;
    if (X509_check_private_key(cert, key) != 1) {
        fail(err, errlen, "%s does not belong to the certificate %s", key_path, cert_path);
        goto out;
    }
    if (!(leaf_key = new_p256_key())) {
        fail(err, errlen, "generating the leaf key failed");
        goto out;
    }
    ca = xcalloc(1, sizeof *ca);
    ca->cert = cert;
    ca->key = key;
    ca->leaf_key = leaf_key;
    ca->max = cache_max ? cache_max : TLS_CA_CACHE_DEFAULT;
    ca->nbuckets = HASH_BUCKETS_MIN;
    while (ca->nbuckets < ca->max && ca->nbuckets < HASH_BUCKETS_MAX)
        ca->nbuckets *= 2;
    ca->buckets = xcalloc(ca->nbuckets, sizeof *ca->buckets);
    pthread_mutex_init(&ca->lock, NULL);
    cert = NULL;
    key = NULL;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    free(cert_path);
    free(key_path);
    return ca;
}

/* ---- minting leaves ------------------------------------------------------ */

/* NAME without brackets, lower case, into OUT; its kind in *IP_FAMILY (0 for
 * a DNS name). -1 when it is neither a host name nor an IP literal. */
static int normalise_name(const char *name, char *out, size_t outlen, int *ip_family)
{
    size_t n = strlen(name);
    if (n >= 2 && name[0] == '[' && name[n - 1] == ']') {
        name++;
        n -= 2;
    }
    if (n == 0 || n > NAME_MAX_LEN || n >= outlen)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[n] = '\0';
    unsigned char addr[16];
    if (inet_pton(AF_INET, out, addr) == 1) {
        *ip_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, out, addr) == 1) {
        *ip_family = AF_INET6;
        return 0;
    }
    *ip_family = 0;
    /* Letters, digits, '-', '.', '_' (seen in real internal names) and a
     * leading "*." wildcard; nothing that could change the meaning of
     * the SAN or the subject. */
    for (size_t i = 0; i < n; i++) {
        char c = out[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                 c == '_' || (c == '*' && i == 0 && out[1] == '.');
        if (!ok)
            return -1;
    }
    return 0;
}

/* One dNSName or iPAddress entry for NAME; NULL when it cannot be built. */
static GENERAL_NAME *san_entry(const char *name, int ip_family)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    if (!gn)
        return NULL;
    if (ip_family) {
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
        if (!ip) {
            GENERAL_NAME_free(gn);
            return NULL;
        }
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        if (!dns || !ASN1_STRING_set(dns, name, -1)) {
            ASN1_IA5STRING_free(dns);
            GENERAL_NAME_free(gn);
            return NULL;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
    }
    return gn;
}

/* The subjectAltName holding the N names (each a dNSName, or an iPAddress
 * where FAMILIES[i] says so). */
static int add_san(X509 *x, const char *const *names, const int *families, size_t n)
{
    GENERAL_NAMES *sans = GENERAL_NAMES_new();
    int ok = sans != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        GENERAL_NAME *gn = san_entry(names[i], families[i]);
        ok = gn && sk_GENERAL_NAME_push(sans, gn);
        if (!ok)
            GENERAL_NAME_free(gn);
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, 0) == 1;
    GENERAL_NAMES_free(sans);
    return ok ? 0 : -1;
}

/* A leaf for the N NAMES (normalised; kinds in FAMILIES), named after the
 * first. */
static X509 *mint_names(struct tls_ca *ca, const char *const *names, const int *families,
                        size_t n)
{
    /* Clients read names from the SAN only (RFC 6125); the CN is for people
     * and limited to 64 characters. */
    const char *name = names[0];
    X509 *x = new_cert(strlen(name) <= 64 ? name : NULL, ca->leaf_key,
                       -TLS_CA_LEAF_BACKDATE_S, TLS_CA_LEAF_LIFETIME_S);
    if (!x || !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
        add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") != 0 ||
        add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") != 0 ||
        add_ext(x, ca->cert, NID_subject_key_identifier, "hash") != 0 ||
        add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") != 0 ||
        add_san(x, names, families, n) != 0 || X509_sign(x, ca->key, EVP_sha256()) == 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static X509 *mint(struct tls_ca *ca, const char *name, int ip_family)
{
    return mint_names(ca, &name, &ip_family, 1);
}

/* ---- the cache (callers hold ca->lock) ------------------------------------ */

static size_t hash_name(const char *s, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h & (nbuckets - 1));
}

static void list_unlink(struct tls_ca *ca, struct leaf *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        ca->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        ca->tail = l->prev;
    l->prev = l->next = NULL;
}

static void list_push_front(struct tls_ca *ca, struct leaf *l)
{
    l->prev = NULL;
    l->next = ca->head;
    if (ca->head)
        ca->head->prev = l;
    ca->head = l;
    if (!ca->tail)
        ca->tail = l;
}

static void cache_remove(struct tls_ca *ca, struct leaf *l)
{
    struct leaf **pp = &ca->buckets[hash_name(l->name, ca->nbuckets)];
    while (*pp != l)
        pp = &(*pp)->hnext;
    *pp = l->hnext;
    list_unlink(ca, l);
    ca->count--;
    X509_free(l->cert);
    free(l->name);
    free(l);
}

static struct leaf *cache_find(struct tls_ca *ca, const char *name)
{
    for (struct leaf *l = ca->buckets[hash_name(name, ca->nbuckets)]; l; l = l->hnext)
        if (strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

/* Take CERT's reference into the cache under NAME, evicting the least
 * recently used entry when full. */
static void cache_insert(struct tls_ca *ca, const char *name, X509 *cert)
{
    if (ca->count >= ca->max)
        cache_remove(ca, ca->tail);
    struct leaf *l = xcalloc(1, sizeof *l);
    l->name = xstrdup(name);
    l->cert = cert;
    l->renew_at = time(NULL) + TLS_CA_LEAF_LIFETIME_S - TLS_CA_LEAF_RENEW_S;
    size_t b = hash_name(name, ca->nbuckets);
    l->hnext = ca->buckets[b];
    ca->buckets[b] = l;
    list_push_front(ca, l);
    ca->count++;
}

/* The cached, still fresh leaf for NAME with a new reference, or NULL. */
static X509 *cache_get(struct tls_ca *ca, const char *name)
{
    struct leaf *l = cache_find(ca, name);
    if (!l)
        return NULL;
    if (time(NULL) >= l->renew_at) {
        cache_remove(ca, l);
        return NULL;
    }
    list_unlink(ca, l);
    list_push_front(ca, l);
    X509_up_ref(l->cert);
    return l->cert;
}

X509 *tls_ca_leaf(struct tls_ca *ca, const char *name, char *err, size_t errlen)
{
    char norm[NAME_MAX_LEN + 1];
    int family;
    ERR_clear_error();
    if (normalise_name(name, norm, sizeof norm, &family) != 0) {
        fail(err, errlen, "'%.*s' is not a host name or IP address", 80, name);
        return NULL;
    }
    pthread_mutex_lock(&ca->lock);
    X509 *x = cache_get(ca, norm);
    pthread_mutex_unlock(&ca->lock);
    if (x)
        return x;
    /* Signing happens outside the lock so other names are not held up; if
     * another thread minted this name meanwhile, its certificate wins and
     * the cache keeps one per name. */
    X509 *fresh = mint(ca, norm, family);
    if (!fresh) {
        fail(err, errlen, "minting a certificate for %s failed", norm);
        return NULL;
    }
    pthread_mutex_lock(&ca->lock);
    x = cache_get(ca, norm);
    if (!x) {
        ca->minted++;
        cache_insert(ca, norm, fresh);
        X509_up_ref(fresh);
        x = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&ca->lock);
    X509_free(fresh);
    return x;
}

X509 *tls_ca_leaf_names(struct tls_ca *ca, const char *const *names, size_t n, char *err,
                        size_t errlen)
{
    if (n == 0 || n > TLS_CA_NAMES_MAX) {
        fail(err, errlen, "a certificate needs 1 to %d names", TLS_CA_NAMES_MAX);
        return NULL;
    }
    char(*norm)[NAME_MAX_LEN + 1] = xcalloc(n, sizeof *norm);
    const char **list = xcalloc(n, sizeof *list);
    int *families = xcalloc(n, sizeof *families);
    size_t k = 0;
    X509 *x = NULL;
    ERR_clear_error();
    for (size_t i = 0; i < n; i++) {
        if (normalise_name(names[i], norm[k], sizeof norm[k], &families[k]) != 0) {
            fail(err, errlen, "'%.*s' is not a host name or IP address", 80, names[i]);
            goto out;
        }
        int dup = 0;
        for (size_t j = 0; j < k; j++)
            dup |= strcmp(norm[j], norm[k]) == 0;
        if (!dup) {
            list[k] = norm[k];
            k++;
        }
    }
    x = mint_names(ca, list, families, k);
    if (!x) {
        fail(err, errlen, "minting a certificate for %s failed", list[0]);
        goto out;
    }
    pthread_mutex_lock(&ca->lock);
    ca->minted++;
    pthread_mutex_unlock(&ca->lock);
out:
    free(norm);
    free(list);
    free(families);
    return x;
}

EVP_PKEY *tls_ca_leaf_key(const struct tls_ca *ca)
{
    return ca->leaf_key;
}

X509 *tls_ca_cert(const struct tls_ca *ca)
{
    return ca->cert;
}

void tls_ca_stats(struct tls_ca *ca, unsigned long *minted, size_t *cached)
{
    pthread_mutex_lock(&ca->lock);
    if (minted)
        *minted = ca->minted;
    if (cached)
        *cached = ca->count;
    pthread_mutex_unlock(&ca->lock);
}

void tls_ca_free(struct tls_ca *ca)
{
    if (!ca)
        return;
    while (ca->tail)
        cache_remove(ca, ca->tail);
    free(ca->buckets);
    pthread_mutex_destroy(&ca->lock);
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    EVP_PKEY_free(ca->leaf_key);
    free(ca);
}
