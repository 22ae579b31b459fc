/*
 * ca_cli — `statusproxy ca init [--dir DIR]`: create the CA files, refuse to
 * replace an existing CA, and print the trust instructions for curl,
 * OpenSSL-based tools, Python, Node.js, Chromium (NSS) and Debian's system
 * store. The cryptography is in tls_ca.c.
 */
#include "ca_cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls_ca.h"
#include "util.h"

static const char ca_usage[] =
    "usage: statusproxy ca init [--dir DIR]\n"
    "  --dir DIR   where ca.pem and ca-key.pem are written [$HOME/.statusproxy]\n";

static void print_trust(const char *dir)
{
    char *cert = xasprintf("%s/%s", dir, TLS_CA_CERT_FILE);
    printf("Created a statusproxy CA:\n"
           "  certificate  %s\n"
           "  private key  %s/%s  (mode 0600; keep it secret)\n"
           "\n"
           "Clients trust certificates the proxy mints once they trust this CA:\n"
           "  curl                 curl --cacert %s https://...\n"
           "  OpenSSL-based tools  export SSL_CERT_FILE=%s\n"
           "    (Python's ssl and urllib too; it replaces the default CA bundle)\n"
           "  Python requests      export REQUESTS_CA_BUNDLE=%s\n"
           "  Node.js              export NODE_EXTRA_CA_CERTS=%s\n"
           "  Chromium (NSS)       certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n statusproxy -i %s\n"
           "    (certutil is in Debian's libnss3-tools; restart Chromium afterwards)\n"
           "  Debian system store  cp %s /usr/local/share/ca-certificates/statusproxy.crt"
           " && update-ca-certificates\n"
           "    (as root; trusted by every program that uses the system store)\n",
           cert, dir, TLS_CA_KEY_FILE, cert, cert, cert, cert, cert, cert);
    free(cert);
}

static int ca_init(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(ca_usage, stdout);
            return 0;
        }
        if (strcmp(a, "--dir") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "statusproxy ca init: --dir: missing value\n");
                return 2;
            }
            dir = argv[++i];
        } else if (strncmp(a, "--dir=", 6) == 0 && a[6]) {
            dir = a + 6;
        } else {
            fprintf(stderr, "statusproxy ca init: %s: unknown option\n", a);
            return 2;
        }
    }
    char *owned = NULL;
    if (!dir) {
        const char *home = getenv("HOME");
        if (!home || !home[0]) {
            fprintf(stderr, "statusproxy ca init: HOME is not set; use --dir DIR\n");
            return 2;
        }
        dir = owned = xasprintf("%s/.statusproxy", home);
    }
    char err[512];
    int rc = tls_ca_create(dir, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "statusproxy ca init: %s\n", err);
        free(owned);
        return 1;
    }
    /* Absolute paths, so the printed commands work from any directory. */
    char abs[PATH_MAX];
    print_trust(realpath(dir, abs) ? abs : dir);
    free(owned);
    return 0;
}

int ca_cli_main(int argc, char **argv)
{
    if (argc == 0) {
        fprintf(stderr, "statusproxy ca: missing subcommand\n%s", ca_usage);
        return 2;
    }
    if (strcmp(argv[0], "init") == 0)
        return ca_init(argc - 1, argv + 1);
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(ca_usage, stdout);
        return 0;
    }
    fprintf(stderr, "statusproxy ca: unknown subcommand '%s'\n%s", argv[0], ca_usage);
    return 2;
}
