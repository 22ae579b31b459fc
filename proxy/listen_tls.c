/*
 * listen_tls — the TLS listener's server config (see listen_tls.h).
 */
#include "listen_tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#include "intercept.h"
#include "options.h"
#include "tls_ca.h"
#include "tls_engine.h"

/* From the files: read once; an unusable file names its flag. */
static int config_from_files(struct run_options *o, char *err, size_t errlen)
{
    char why[512];
    o->listen_tls = tls_engine_server_config_files(o->tls_cert, o->tls_key, why, sizeof why);
    if (o->listen_tls)
        return 0;
    /* The message starts with the file; say which flag gave it. */
    int key = strcmp(o->tls_key, o->tls_cert) != 0 &&
              strncmp(why, o->tls_key, strlen(o->tls_key)) == 0;
    snprintf(err, errlen, "%s: %s", key ? "--tls-key" : "--tls-cert", why);
    return -1;
}

/* The listen address's host as a certificate name: the IP literal, or
 * nothing for a wildcard bind (no client connects to 0.0.0.0 or ::). */
static int listen_host(const struct run_options *o, char *out, size_t outlen)
{
    const char *text = o->tls_listen.text;
    const char *colon = strrchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    if (n >= 2 && text[0] == '[') {
        text++;
        n -= 2;
    }
    if (n == 0 || n >= outlen)
        return -1;
    memcpy(out, text, n);
    out[n] = '\0';
    return strcmp(out, "0.0.0.0") == 0 || strcmp(out, "::") == 0 ? -1 : 0;
}

/* One leaf for localhost, the listen address and every --tls-name, signed
 * by CA, sent with the CA certificate after it (Chromium can then match the
 * CA's SPKI hash). */
static int config_minted(struct run_options *o, struct tls_ca *ca, char *err, size_t errlen)
{
    const char **names = calloc(o->n_tls_names + 2, sizeof *names);
    char host[80];
    size_t n = 0;
    names[n++] = "localhost";
    if (listen_host(o, host, sizeof host) == 0)
        names[n++] = host;
    for (size_t i = 0; i < o->n_tls_names; i++)
        names[n++] = o->tls_names[i];
    char why[512];
    X509 *leaf = tls_ca_leaf_names(ca, names, n, why, sizeof why);
    free(names);
    if (!leaf) {
        snprintf(err, errlen, "--tls-name: %s", why);
        return -1;
    }
    o->listen_tls = tls_engine_server_config_cert(leaf, tls_ca_leaf_key(ca), tls_ca_cert(ca), why,
                                                  sizeof why);
    X509_free(leaf);
    if (!o->listen_tls) {
        snprintf(err, errlen, "--tls-listen: %s", why);
        return -1;
    }
    return 0;
}

int listen_tls_setup(struct run_options *o, char *err, size_t errlen)
{
    if (!o->has_tls_listen)
        return 0;
    if (o->tls_cert)
        return config_from_files(o, err, errlen);
    struct tls_ca *ca = o->intercept_ca;
    if (!ca) {
        /* The CA as interception loads it; only the CA is kept. */
        struct tls_engine_config *per_sni = intercept_server_config(o->ca_dir, &ca, err, errlen);
        if (!per_sni)
            return -1;
        tls_engine_config_free(per_sni);
        o->listen_ca = ca;
    }
    if (config_minted(o, ca, err, errlen) != 0) {
        listen_tls_teardown(o);
        return -1;
    }
    return 0;
}

void listen_tls_teardown(struct run_options *o)
{
    tls_engine_config_free(o->listen_tls);
    o->listen_tls = NULL;
    tls_ca_free(o->listen_ca);
    o->listen_ca = NULL;
}
