/*
 * mint_leaf — a test tool: load the CA in DIR with tls_ca_load and write a
 * leaf certificate minted for each NAME, plus the process's leaf key, so an
 * end-to-end test can serve them with `openssl s_server` and check real
 * clients accept them. Not part of the product.
 *
 *   mint_leaf --dir DIR --cert OUT.pem --key OUT-key.pem NAME...
 *
 * With several names, OUT.pem holds one certificate per name, in order (all
 * share the key). Exits 0; 1 when the CA cannot be loaded or a name cannot
 * be minted (the message on stderr); 2 on bad usage.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>

#include "tls_ca.h"

static int usage(void)
{
    fprintf(stderr, "usage: mint_leaf --dir DIR --cert OUT --key OUT NAME...\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *cert_out = NULL, *key_out = NULL;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--cert") == 0)
            cert_out = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key_out = argv[i + 1];
        else
            return usage();
    }
    if (!dir || !cert_out || !key_out || i >= argc)
        return usage();
    char err[512];
    struct tls_ca *ca = tls_ca_load(dir, 0, err, sizeof err);
    if (!ca) {
        fprintf(stderr, "mint_leaf: %s\n", err);
        return 1;
    }
    int status = 0;
    FILE *cf = fopen(cert_out, "w"), *kf = fopen(key_out, "w");
    if (!cf || !kf || !PEM_write_PrivateKey(kf, tls_ca_leaf_key(ca), NULL, NULL, 0, NULL, NULL)) {
        fprintf(stderr, "mint_leaf: cannot write %s or %s\n", cert_out, key_out);
        status = 1;
    }
    for (; status == 0 && i < argc; i++) {
        X509 *x = tls_ca_leaf(ca, argv[i], err, sizeof err);
        if (!x || !PEM_write_X509(cf, x)) {
            fprintf(stderr, "mint_leaf: %s\n", x ? "writing the certificate failed" : err);
            status = 1;
        }
        X509_free(x);
    }
    if ((cf && fclose(cf) != 0) || (kf && fclose(kf) != 0))
        status = 1;
    tls_ca_free(ca);
    return status;
}
