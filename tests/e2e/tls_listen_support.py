"""Shared by the TLS listener tests: certificates made with the `openssl`
CLI (a throwaway CA and a leaf it signs), a proxy started with
`--tls-listen`, and an HttpConn that speaks TLS."""

import os
import socket
import ssl
import subprocess
from pathlib import Path

from helpers import HttpConn, free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATUSPROXY_BIN", REPO / "build" / "statusproxy")).resolve()


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=str(cwd), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def make_pki(d, names=("localhost",), ips=("127.0.0.1",)):
    """A CA and a leaf for NAMES/IPS signed by it, in directory D. Returns
    a dict of paths: ca, ca_key, cert, key."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=statusproxy test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "leaf-key.pem", "-out", "leaf.csr", "-subj", "/CN=%s" % names[0], cwd=d)
    san = ",".join(["DNS:%s" % n for n in names] + ["IP:%s" % i for i in ips])
    (d / "ext.cnf").write_text("subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                               "basicConstraints=CA:FALSE\n" % san)
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return {"ca": d / "ca.pem", "ca_key": d / "ca-key.pem", "cert": d / "leaf.pem",
            "key": d / "leaf-key.pem"}


def start_tls_listener(proxy_factory, upstream=None, pki=None, args=(), env=None):
    """A proxy with --tls-listen on a free port (the given certificate when PKI
    is not None). Its TLS port is p.tls_port."""
    port = free_port()
    argv = ["--tls-listen", "127.0.0.1:%d" % port]
    if pki is not None:
        argv += ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    p = proxy_factory(upstream=upstream, args=argv + list(args), env=env)
    p.tls_port = port
    return p


def client_context(cafile, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TlsConn(HttpConn):
    """HttpConn over TLS (the handshake happens in the constructor)."""

    def __init__(self, port, ctx, server_hostname="localhost", host="127.0.0.1", timeout=10.0):
        super().__init__(port, host=host, timeout=timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)


def tls_conn(p, cafile, server_hostname="localhost", timeout=10.0):
    return TlsConn(p.tls_port, client_context(cafile), server_hostname=server_hostname,
                   timeout=timeout)


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k.lower() not in ("ssl_cert_file", "ssl_cert_dir", "http_proxy", "https_proxy",
                                 "all_proxy", "no_proxy")}


def raw_connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)
