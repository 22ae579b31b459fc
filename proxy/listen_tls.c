/*
 * listen_tls — the TLS listener's server config (see listen_tls.h).
 */
#include "listen_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int listen_tls_setup(struct run_options *o, char *err, size_t errlen)
{
    if (!o->has_tls_listen)
        return 0;
    if (o->tls_cert)
        return config_from_files(o, err, errlen);
    /* A certificate minted from the CA needs the CA loading of --ca-dir,
     * which is not in this build yet. */
    snprintf(err, errlen, "--tls-listen: needs --tls-cert FILE and --tls-key FILE");
    return -1;
}

void listen_tls_teardown(struct run_options *o)
{
    tls_engine_config_free(o->listen_tls);
    o->listen_tls = NULL;
}
