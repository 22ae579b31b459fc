/*
 * intercept — CONNECT interception's selection and start-up TLS setup
 * (see intercept.h).
 */
#include "intercept.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "options.h"
#include "tls_ca.h"
#include "tls_engine.h"
#include "util.h"

int intercept_enabled(const struct run_options *o)
{
    return o->intercept_all || o->n_intercept_hosts > 0;
}

int intercept_wanted(const struct run_options *o, const char *host)
{
    if (o->intercept_all)
        return 1;
    size_t n = strlen(host);
    for (size_t i = 0; i < o->n_intercept_hosts; i++)
        if (glob_match(o->intercept_hosts[i], host, n))
            return 1;
    return 0;
}

char *intercept_ca_dir(const char *dir)
{
    if (dir)
        return xstrdup(dir);
    const char *home = getenv("HOME");
    if (!home || !home[0])
        return NULL;
    return xasprintf("%s/.statusproxy", home);
}

struct tls_engine_config *intercept_server_config(const char *dir, struct tls_ca **ca, char *err,
                                                  size_t errlen)
{
    char *d = intercept_ca_dir(dir);
    if (!d) {
        snprintf(err, errlen, "--ca-dir: HOME is not set; name the CA directory with --ca-dir DIR");
        return NULL;
    }
    char why[512];
    struct tls_ca *loaded = tls_ca_load(d, 0, why, sizeof why);
    if (!loaded) {
        /* The file is named by tls_ca; say how to make one. */
        snprintf(err, errlen, "--ca-dir: %s (create a CA with: statusproxy ca init --dir %s)", why,
                 d);
        free(d);
        return NULL;
    }
    free(d);
    struct tls_engine_config *cfg = tls_engine_server_config_ca(loaded, why, sizeof why);
    if (!cfg) {
        snprintf(err, errlen, "--ca-dir: %s", why);
        tls_ca_free(loaded);
        return NULL;
    }
    *ca = loaded;
    return cfg;
}

int intercept_setup(struct run_options *o, char *err, size_t errlen)
{
    if (!intercept_enabled(o))
        return 0;
    o->intercept_server = intercept_server_config(o->ca_dir, &o->intercept_ca, err, errlen);
    if (!o->intercept_server)
        return -1;
    char why[512];
    /* Origins are verified as an https upstream is: the system store, or
     * --upstream-ca, or not at all with --upstream-insecure. */
    o->intercept_client =
        tls_engine_client_config(o->upstream_ca, o->upstream_insecure != 0, why, sizeof why);
    if (!o->intercept_client) {
        snprintf(err, errlen, "--upstream-ca: %s", why);
        intercept_teardown(o);
        return -1;
    }
    return 0;
}

void intercept_teardown(struct run_options *o)
{
    tls_engine_config_free(o->intercept_client);
    tls_engine_config_free(o->intercept_server);
    tls_ca_free(o->intercept_ca);
    o->intercept_client = o->intercept_server = NULL;
    o->intercept_ca = NULL;
}
