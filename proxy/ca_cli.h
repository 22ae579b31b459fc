/*
 * ca_cli — the `statusproxy ca` command: `ca init [--dir DIR]` creates the
 * local CA with tls_ca and prints how to make common clients trust it.
 * A command module: it prints to stdout/stderr and returns an exit status
 * (0 done, 1 failure such as an existing CA, 2 bad usage); main.c exits.
 */
#ifndef STATUSPROXY_CA_CLI_H
#define STATUSPROXY_CA_CLI_H

/* ARGV[0..ARGC) are the words after `ca`. Returns the exit status. */
int ca_cli_main(int argc, char **argv);

#endif
