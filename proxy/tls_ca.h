/*
 * tls_ca — the local certificate authority the proxy mints TLS certificates
 * with (DESIGN §9): creating one on disk (`statusproxy ca init`), loading it,
 * and minting short-lived leaf certificates for host names and IP addresses,
 * cached per name.
 *
 * Pure OpenSSL: no event loop, no sockets, no logging, never exits. Errors
 * are written into the caller's buffer. A loaded CA may be used from several
 * threads at once (the cache is behind a mutex).
 *
 * Files in DIR: `ca.pem` (the CA certificate, PEM) and `ca-key.pem` (its
 * private key, PKCS#8 PEM, unencrypted, mode 0600).
 */
#ifndef STATUSPROXY_TLS_CA_H
#define STATUSPROXY_TLS_CA_H

#include <stddef.h>

#include <openssl/types.h>

#define TLS_CA_CERT_FILE "ca.pem"
#define TLS_CA_KEY_FILE "ca-key.pem"
/* Default bound of the minted-certificate cache. */
#define TLS_CA_CACHE_DEFAULT 1024
/* Leaf validity: from an hour ago (clients with a slightly slow clock) to
 * seven days ahead; cached leaves are re-minted a day before they expire. */
#define TLS_CA_LEAF_BACKDATE_S 3600L
#define TLS_CA_LEAF_LIFETIME_S (7L * 24 * 3600)
#define TLS_CA_LEAF_RENEW_S (24L * 3600)

struct tls_ca;

/* Create a new CA in DIR: an ECDSA P-256 key and a self-signed certificate
 * valid for ten years, subject "CN=statusproxy local CA (HOSTNAME)". DIR is
 * created with mode 0700 when missing (its parent must exist). Neither file
 * is ever overwritten: when one exists already, nothing is written and
 * TLS_CA_EXISTS is returned. Returns 0, TLS_CA_EXISTS or -1 (other errors);
 * ERR gets a one-line message naming the file for both failures. */
#define TLS_CA_EXISTS (-2)
int tls_ca_create(const char *dir, char *err, size_t errlen);

/* Load the CA in DIR. The key file is opened and read once; it is refused
 * when group or others may read it (the message names the file and the
 * `chmod 600 FILE` to run), when it is missing or encrypted, or when it does
 * not belong to the certificate. CACHE_MAX bounds the minted-certificate
 * cache (0 means TLS_CA_CACHE_DEFAULT). Also creates the process's one leaf
 * key. Returns a CA the caller frees with tls_ca_free, or NULL and ERR. */
struct tls_ca *tls_ca_load(const char *dir, size_t cache_max, char *err, size_t errlen);

/* A leaf certificate for NAME (a DNS name, an IPv4 literal, or an IPv6
 * literal with or without brackets), signed by the CA: SAN dNSName or
 * iPAddress, extendedKeyUsage serverAuth, a random 128-bit serial, validity
 * as above. Minted on the first request for a name (names compare
 * case-insensitively) and served from the LRU cache afterwards. Returns a
 * new reference the caller releases with X509_free, or NULL and ERR (a name
 * that is not a host name or IP address). Thread-safe. */
X509 *tls_ca_leaf(struct tls_ca *ca, const char *name, char *err, size_t errlen);

/* One leaf certificate for all N NAMES at once (each as for tls_ca_leaf;
 * duplicates dropped), named after the first: for a listener that answers
 * to several names (DESIGN §9, --tls-listen). Not cached: minted on every
 * call. Returns a certificate the caller frees, or NULL and ERR naming the
 * first bad name. At most TLS_CA_NAMES_MAX names. */
#define TLS_CA_NAMES_MAX 100
X509 *tls_ca_leaf_names(struct tls_ca *ca, const char *const *names, size_t n, char *err,
                        size_t errlen);

/* The private key of every leaf this CA mints (one per process, never
 * written anywhere) and the CA certificate, for building a chain. Both are
 * borrowed: valid until tls_ca_free. */
EVP_PKEY *tls_ca_leaf_key(const struct tls_ca *ca);
X509 *tls_ca_cert(const struct tls_ca *ca);

/* Counters for tests and metrics: leaves minted so far and names cached now. */
void tls_ca_stats(struct tls_ca *ca, unsigned long *minted, size_t *cached);

/* Accepts NULL. Certificates handed out by tls_ca_leaf stay valid. */
void tls_ca_free(struct tls_ca *ca);

#endif
