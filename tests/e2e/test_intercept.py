"""Interception of CONNECT with the user's CA (DESIGN §9), through the real
binary: the proxy CA comes from `statusproxy ca init`, the origins are Python
`ssl` servers (the test Backend in TLS mode) with a leaf from a second,
throwaway origin CA that the proxy trusts through --upstream-ca. Clients are
curl (-x + --cacert), urllib with an SSLContext, requests with
REQUESTS_CA_BUNDLE and http.client tunnels. Covered: GET and POST recorded
https with both codes, a rule and a fault inside, fault headers and
--mark-faults, --intercept-hosts next to a blind tunnel, a client rejecting
the certificate (tls_client), a client speaking garbage (tls_handshake), an
origin failing verification (502 tls_verify inside), keep-alive on one origin
connection, large bodies both ways in flat memory, abrupt closes on both
sides, 100 concurrent handshakes, and the CA start-up errors."""

import contextlib
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request

import pytest

from backend import Backend, det_chunks, det_sha256
import helpers
from helpers import (is_sanitized, mint_leaf, tls_clean_env, wait_exchanges,
                     wait_until)
from rules_support import get, metric_samples, parse_prometheus, write_rules

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATUSPROXY_BIN", REPO / "build" / "statusproxy")).resolve()
SANITIZED = is_sanitized(str(BIN))


def clean_env(**extra):
    return tls_clean_env(**extra)


def ca_init(d):
    return helpers.ca_init(BIN, d)


@pytest.fixture
def proxy_ca(tmp_path):
    """The CA the proxy mints with (what the clients must trust)."""
    return ca_init(tmp_path / "proxy-ca")


@pytest.fixture
def origin_ca(tmp_path):
    """The throwaway CA of the origins (what the proxy must trust)."""
    return ca_init(tmp_path / "origin-ca")


def mint(ca_dir, out_dir, name):
    return mint_leaf(BIN, ca_dir, out_dir, name)


@pytest.fixture
def origins(origin_ca, tmp_path):
    """origins(name) -> a started TLS Backend with a leaf for NAME."""
    started = []

    def start(name="localhost"):
        cert, key = mint(origin_ca, tmp_path, name)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        b = Backend(ssl_context=ctx).start()
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


@pytest.fixture
def origin(origins):
    return origins("localhost")


def start_proxy(proxy_factory, proxy_ca, origin_ca, ports, args=(), intercept=("--intercept",),
                env=None):
    a = list(intercept) + ["--ca-dir", str(proxy_ca),
                           "--connect-ports", ",".join(str(p) for p in ports)]
    if origin_ca is not None:
        a += ["--upstream-ca", str(origin_ca / "ca.pem")]
    return proxy_factory(args=a + list(args), env=env)


def curl(proxy, url, cacert=None, extra=(), timeout=30):
    """curl through the proxy; returns (exit code, status, headers text, body)."""
    argv = ["curl", "-sS", "-x", "http://127.0.0.1:%d" % proxy.port, "-D", "-", "-o", "-",
            "--max-time", str(timeout)]
    if cacert:
        argv += ["--cacert", str(cacert)]
    argv += list(extra) + [url]
    r = subprocess.run(argv, capture_output=True, timeout=timeout + 10,
                       env=clean_env(CURL_CA_BUNDLE="/nonexistent"))
    out = r.stdout
    head, _, body = out.partition(b"\r\n\r\n")
    # curl prints the CONNECT answer's head first, then the inner one.
    while body.startswith(b"HTTP/"):
        head, _, body = body.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
    return r.returncode, status, head.decode("latin-1"), body, r.stderr.decode()


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx


@contextlib.contextmanager
def tunnel_conn(proxy, origin, cafile, host="localhost", timeout=30):
    """An http.client connection that CONNECTs through PROXY to ORIGIN."""
    c = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=tls_context(cafile),
                                    timeout=timeout)
    c.set_tunnel(host, origin.port)
    try:
        yield c
    finally:
        c.close()


def rows_of(db, n, timeout=10.0):
    return wait_exchanges(db, lambda rs: len(rs) >= n, timeout=timeout)


# -- clients ---------------------------------------------------------------------


def test_curl_get_and_post_recorded_https(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    url = "https://localhost:%d" % origin.port
    rc, status, _, body, err = curl(p, url + "/status/201?body=inside", proxy_ca / "ca.pem")
    assert (rc, status, body) == (0, 201, b"inside"), err
    rc, status, _, body, err = curl(p, url + "/sink", proxy_ca / "ca.pem",
                                    extra=["--data-binary", "x" * 5000])
    assert rc == 0 and status == 200, err
    assert json.loads(body) == {"body_len": 5000,
                                "sha256": hashlib.sha256(b"x" * 5000).hexdigest()}
    # The origin saw our own TLS connection, with SNI, and the requests in
    # origin form.
    assert [e["target"] for e in origin.log] == ["/status/201?body=inside", "/sink"]
    assert "localhost" in origin.tls_sni and origin.tls_failures == []
    rows = rows_of(p.db, 2)
    got = sorted((r["method"], r["host"], r["path"], r["upstream_code"], r["final_code"],
                  r["scheme"], r["error"]) for r in rows)
    # The CONNECT itself is not recorded: the exchanges inside are.
    assert got == [("GET", "localhost", "/status/201", 201, 201, "https", None),
                   ("POST", "localhost", "/sink", 200, 200, "https", None)], got


def test_metrics_count_intercepted_answers_as_https(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    for code in (200, 503):
        rc, status, _, _, err = curl(p, "https://localhost:%d/status/%d" % (origin.port, code),
                                     proxy_ca / "ca.pem")
        assert (rc, status) == (0, code), err

    def samples():
        m = parse_prometheus(get(p.admin_port, "/metrics").body.decode())
        got = {(l["code"], l["scheme"]): v
               for l, v in metric_samples(m, "statusproxy_responses_total")}
        return got if sum(got.values()) >= 2 else None
    assert wait_until(samples, timeout=5) == {("200", "https"): 1, ("503", "https"): 1}


def test_gateway_to_https_upstream_is_recorded_https(proxy_factory, origin_ca, origin, tmp_path):
    """The scheme rule: https when either side of the exchange is TLS."""
    rules = write_rules(str(tmp_path), "rule tls scheme https path /status/500 => set-status 299\n")
    p = proxy_factory(upstream="https://localhost:%d" % origin.port,
                      args=["--upstream-ca", str(origin_ca / "ca.pem"), "--rules", rules])
    with p.conn() as c:
        assert c.exchange("GET", "/status/200").status == 200
        assert c.exchange("GET", "/status/500").status == 299
    rows = rows_of(p.db, 2)
    assert [(r["path"], r["final_code"], r["scheme"], r["rule"]) for r in rows] == \
        [("/status/200", 200, "https", None), ("/status/500", 299, "https", "tls")]


def test_http2_client_gets_http11_by_alpn(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    rc, status, head, body, err = curl(p, "https://localhost:%d/status/200?body=h1" % origin.port,
                                       proxy_ca / "ca.pem", extra=["--http2", "-v"])
    assert (rc, status, body) == (0, 200, b"h1"), err
    assert head.startswith("HTTP/1.1 200"), head
    assert "ALPN: server accepted http/1.1" in err or "ALPN, server accepted to use http/1.1" \
        in err, err


def test_ip_connect_gets_an_ip_san(proxy_factory, proxy_ca, origin_ca, origins):
    o = origins("127.0.0.1")
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [o.port])
    rc, status, _, body, err = curl(p, "https://127.0.0.1:%d/status/200?body=ip" % o.port,
                                    proxy_ca / "ca.pem")
    assert (rc, status, body) == (0, 200, b"ip"), err
    row = rows_of(p.db, 1)[0]
    assert (row["host"], row["scheme"], row["final_code"]) == ("127.0.0.1", "https", 200)


def test_deny_dest_applies_to_intercepted_origins(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port],
                    args=["--deny-dest", "127.0.0.0/8", "--deny-dest", "::1/128"])
    rc, status, _, _, err = curl(p, "https://localhost:%d/status/200" % origin.port,
                                 proxy_ca / "ca.pem")
    assert (rc, status) == (0, 403), err
    row = rows_of(p.db, 1)[0]
    assert (row["final_code"], row["error"], row["scheme"]) == (403, "dest_denied", "https")
    assert origin.connections == 0


def test_urllib_with_ssl_context(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": "http://127.0.0.1:%d" % p.port}),
        urllib.request.HTTPSHandler(context=tls_context(proxy_ca / "ca.pem")))
    with opener.open("https://localhost:%d/status/200?body=urllib" % origin.port,
                     timeout=20) as r:
        assert r.status == 200 and r.read() == b"urllib"
    row = rows_of(p.db, 1)[0]
    assert (row["scheme"], row["upstream_code"], row["final_code"]) == ("https", 200, 200)


CHILD = r"""
import json, sys, urllib.request, ssl
import requests
proxy, url = sys.argv[1], sys.argv[2]
r = requests.get(url, proxies={"https": proxy}, timeout=20)
print(json.dumps([r.status_code, r.text]))
ctx = ssl.create_default_context()  # SSL_CERT_FILE decides what it trusts
op = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy}),
                                 urllib.request.HTTPSHandler(context=ctx))
with op.open(url, timeout=20) as r:
    print(json.dumps([r.status, r.read().decode()]))
"""


def test_requests_and_urllib_trust_through_environment(proxy_factory, proxy_ca, origin_ca,
                                                       origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    ca = str(proxy_ca / "ca.pem")
    r = subprocess.run(["/usr/bin/python3", "-c", CHILD, "http://127.0.0.1:%d" % p.port,
                        "https://localhost:%d/status/202?body=env" % origin.port],
                       capture_output=True, text=True, timeout=60,
                       env=clean_env(REQUESTS_CA_BUNDLE=ca, SSL_CERT_FILE=ca))
    assert r.returncode == 0, r.stderr
    assert [json.loads(l) for l in r.stdout.splitlines()] == [[202, "env"], [202, "env"]]
    rows = rows_of(p.db, 2)
    assert [(x["scheme"], x["final_code"]) for x in rows] == [("https", 202)] * 2


# -- rules, faults, headers -----------------------------------------------------


def test_rules_and_fault_headers_inside_https(proxy_factory, proxy_ca, origin_ca, origin,
                                              tmp_path):
    rules = write_rules(str(tmp_path), "rule teapot path /status/200 => set-status 418\n"
                                       "rule down path /down => abort 503\n"
                                       "rule tls-only scheme https path /only-tls => abort 451\n")
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port],
                    args=["--rules", rules, "--fault-headers", "--mark-faults"])
    with tunnel_conn(p, origin, proxy_ca / "ca.pem") as c:
        def ask(path, headers=None):
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.getheader("X-Statusproxy-Rule"), r.read()
        assert ask("/status/200?body=b") == (418, "teapot", b"b")
        assert ask("/down")[:2] == (503, "down")
        assert ask("/only-tls")[:2] == (451, "tls-only")
        assert ask("/status/200?body=x", {"X-Statusproxy-Abort": "502"})[:2] == \
            (502, "fault-header")
        assert ask("/status/204") == (204, None, b"")
    # The faults never reached the origin, nor did the fault header.
    assert [e["target"] for e in origin.log] == ["/status/200?body=b", "/status/204"]
    rows = rows_of(p.db, 5)
    got = [(r["path"], r["upstream_code"], r["final_code"], r["rule"], r["scheme"]) for r in rows]
    assert got == [("/status/200", 200, 418, "teapot", "https"),
                   ("/down", None, 503, "down", "https"),
                   ("/only-tls", None, 451, "tls-only", "https"),
                   ("/status/200", None, 502, "fault-header", "https"),
                   ("/status/204", 204, 204, None, "https")], got


def test_intercept_hosts_selects_and_others_stay_blind(proxy_factory, proxy_ca, origin_ca,
                                                       origins):
    seen = origins("localhost")
    blind = origins("127.0.0.1")
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [seen.port, blind.port],
                    intercept=("--intercept-hosts", "other.test,LOCAL*"))
    # Intercepted: only the proxy CA is trusted by the client, and it works.
    rc, status, _, body, err = curl(p, "https://localhost:%d/status/200?body=seen" % seen.port,
                                    proxy_ca / "ca.pem")
    assert (rc, status, body) == (0, 200, b"seen"), err
    # Blind: the client talks TLS with the origin itself (origin CA), and a
    # client trusting only the proxy CA fails.
    url = "https://127.0.0.1:%d/status/200?body=blind" % blind.port
    rc, status, _, body, err = curl(p, url, origin_ca / "ca.pem")
    assert (rc, status, body) == (0, 200, b"blind"), err
    rc, _, _, _, _ = curl(p, url, proxy_ca / "ca.pem")
    assert rc == 60  # peer certificate cannot be authenticated
    rows = rows_of(p.db, 3)
    got = sorted((r["method"], r["host"], r["scheme"], r["final_code"]) for r in rows)
    assert got == [("CONNECT", "127.0.0.1", "tunnel", 200),
                   ("CONNECT", "127.0.0.1", "tunnel", 200),
                   ("GET", "localhost", "https", 200)], got


# -- failures ------------------------------------------------------------------------


def test_client_rejecting_the_certificate_is_tls_client(proxy_factory, proxy_ca, origin_ca,
                                                         origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    rc, _, _, _, err = curl(p, "https://localhost:%d/status/200" % origin.port,
                            origin_ca / "ca.pem")
    assert rc == 60, err
    row = rows_of(p.db, 1)[0]
    assert (row["method"], row["host"], row["upstream_code"], row["final_code"], row["error"],
            row["scheme"]) == ("CONNECT", "localhost", None, None, "tls_client", "https"), row
    assert origin.log == []


def test_client_speaking_garbage_is_closed(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % origin.port)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # plain HTTP, not TLS
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    assert b"HTTP/1.1" not in data  # at most a TLS alert, never an HTTP answer
    row = rows_of(p.db, 1)[0]
    assert (row["method"], row["final_code"], row["error"], row["scheme"]) == \
        ("CONNECT", None, "tls_handshake", "https"), row


def test_client_silent_after_connect_times_out(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port],
                    args=["--header-timeout", "500ms"])
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % origin.port)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert s.recv(100) == b""  # closed by the proxy, no ClientHello came
    s.close()
    row = rows_of(p.db, 1)[0]
    assert (row["method"], row["final_code"], row["error"]) == ("CONNECT", None, "tls_handshake")


def test_origin_failing_verification_is_502_tls_verify(proxy_factory, proxy_ca, origin):
    # No --upstream-ca, and an empty system store: the origin's CA is unknown.
    p = start_proxy(proxy_factory, proxy_ca, None, [origin.port],
                    env={"SSL_CERT_FILE": "/nonexistent", "SSL_CERT_DIR": "/nonexistent"})
    rc, status, _, body, err = curl(p, "https://localhost:%d/status/200" % origin.port,
                                    proxy_ca / "ca.pem")
    assert (rc, status) == (0, 502), err
    assert body.startswith(b"502 Bad Gateway")
    row = rows_of(p.db, 1)[0]
    assert (row["method"], row["upstream_code"], row["final_code"], row["error"],
            row["scheme"]) == ("GET", None, 502, "tls_verify", "https"), row
    assert origin.log == []


def test_keepalive_inside_uses_one_origin_connection(proxy_factory, proxy_ca, origin_ca,
                                                     origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    with tunnel_conn(p, origin, proxy_ca / "ca.pem") as c:
        for i in range(5):
            c.request("GET", "/status/200?body=n%d" % i)
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"n%d" % i
    # A second client tunnel reuses the pooled TLS connection too.
    with tunnel_conn(p, origin, proxy_ca / "ca.pem") as c:
        c.request("GET", "/status/200")
        assert c.getresponse().status == 200
    assert origin.connections == 1, origin.connections
    assert len(rows_of(p.db, 6)) == 6


def tls_tunnel(proxy, origin, cafile, host="localhost"):
    """A TLS socket to ORIGIN through PROXY's CONNECT, verified with CAFILE."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (host.encode(), origin.port,
                                                                host.encode()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return tls_context(cafile).wrap_socket(s, server_hostname=host)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        assert d, "closed after %d of %d bytes" % (len(out), n)
        out += d
    return out


def test_websocket_inside_interception(proxy_factory, proxy_ca, origin_ca, origin):
    """A 101 inside the decrypted tunnel becomes a tunnel between the two TLS
    connections: frames both ways, recorded as one https exchange."""
    from backend import ws_frame
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    t = tls_tunnel(p, origin, proxy_ca / "ca.pem")
    t.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += t.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    t.sendall(ws_frame(0x1, b"hello", b"\x01\x02\x03\x04"))
    assert recv_exact(t, 7) == b"\x81\x05hello"
    t.sendall(ws_frame(0x8, b"\x03\xe8", b"\x01\x02\x03\x04"))
    assert recv_exact(t, 4) == b"\x88\x02\x03\xe8"
    t.close()
    row = rows_of(p.db, 1)[0]
    assert (row["path"], row["final_code"], row["scheme"]) == ("/ws", 101, "https"), row
    assert [op for op, _ in origin.ws_frames] == [0x1, 0x8]


# -- bodies and abrupt ends -----------------------------------------------------------

# Sizes: 256 MiB plain; ASan is ~10x slower on a loaded 2-core machine.
# 256 MiB each way in make test (32 MiB under ASan); TLS_BIG_MIB=1024 runs
# the 1 GiB each way (about a minute).
BIG = int(os.environ.get("TLS_BIG_MIB", 32 if SANITIZED else 256)) << 20
# A proxy that buffered the body would pass BIG; flat means a few MiB of
# buffers (ASan's shadow and quarantine make it more).
RSS_LIMIT_KIB = (160 if SANITIZED else 40) * 1024


def test_large_download_and_upload_in_flat_memory(proxy_factory, proxy_ca, origin_ca, origin,
                                                  record_property):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    with tunnel_conn(p, origin, proxy_ca / "ca.pem", timeout=300) as c:
        c.request("GET", "/stream?size=%d&chunked=1&chunk=262144" % BIG)
        r = c.getresponse()
        h, n = hashlib.sha256(), 0
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        assert (r.status, n, h.hexdigest()) == (200, BIG, det_sha256(BIG))
        c.request("POST", "/sink", body=det_chunks(BIG), headers={"Content-Length": str(BIG)})
        r = c.getresponse()
        assert json.loads(r.read()) == {"body_len": BIG, "sha256": det_sha256(BIG)}
    hwm = p.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm
    rows = rows_of(p.db, 2)
    assert [(r["method"], r["final_code"], r["scheme"]) for r in rows] == \
        [("GET", 200, "https"), ("POST", 200, "https")]


def test_origin_closing_mid_body(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    with tunnel_conn(p, origin, proxy_ca / "ca.pem") as c:
        c.request("GET", "/raw/close-mid-body")
        r = c.getresponse()
        assert r.status == 200
        with pytest.raises(http.client.IncompleteRead):
            r.read()
    row = rows_of(p.db, 1)[0]
    assert row["upstream_code"] == 200 and row["scheme"] == "https"
    assert row["error"], row  # recorded as cut short
    # The proxy goes on serving.
    rc, status, _, _, err = curl(p, "https://localhost:%d/status/200" % origin.port,
                                 proxy_ca / "ca.pem")
    assert (rc, status) == (0, 200), err


def test_client_closing_mid_upload(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    c = http.client.HTTPSConnection("127.0.0.1", p.port,
                                    context=tls_context(proxy_ca / "ca.pem"), timeout=30)
    c.set_tunnel("localhost", origin.port)
    c.putrequest("POST", "/sink")
    c.putheader("Content-Length", str(10 << 20))
    c.endheaders()
    c.send(b"y" * (1 << 20))
    wait_until(lambda: origin.log or origin.open_connections(), timeout=5)
    c.sock.close()  # abruptly: no close_notify, 9 MiB missing
    row = wait_exchanges(p.db, lambda rs: len(rs) == 1)[0]
    assert (row["method"], row["final_code"], row["error"], row["scheme"]) == \
        ("POST", None, "client_closed", "https"), row
    rc, status, _, _, err = curl(p, "https://localhost:%d/status/200" % origin.port,
                                 proxy_ca / "ca.pem")
    assert (rc, status) == (0, 200), err


def test_100_concurrent_handshakes(proxy_factory, proxy_ca, origin_ca, origin):
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port])
    ctx = tls_context(proxy_ca / "ca.pem")
    n = 100
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        try:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=60)
            s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % origin.port)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            barrier.wait(timeout=60)  # every handshake starts at once
            t = ctx.wrap_socket(s, server_hostname="localhost")
            t.sendall(b"GET /status/200?body=c%d HTTP/1.1\r\nHost: localhost\r\n"
                      b"Connection: close\r\n\r\n" % i)
            data = b""
            while True:
                d = t.recv(65536)
                if not d:
                    break
                data += d
            t.close()
            results[i] = data
        except Exception as e:  # reported below
            results[i] = repr(e).encode()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [(i, r[:200]) for i, r in enumerate(results)
           if not (r and r.startswith(b"HTTP/1.1 200") and r.endswith(b"c%d" % i))]
    assert bad == [], bad
    rows = rows_of(p.db, n, timeout=30)
    assert len(rows) == n and {(r["scheme"], r["final_code"]) for r in rows} == {("https", 200)}


# -- start-up errors ----------------------------------------------------------------


def run_flags(*args):
    return subprocess.run([str(BIN), "run", "--admin", "off", "--listen", "127.0.0.1:0"]
                          + list(args), capture_output=True, text=True, timeout=30,
                          env=clean_env())


def test_missing_ca_exits_2_naming_the_file(tmp_path):
    d = tmp_path / "no-ca"
    r = run_flags("--intercept", "--ca-dir", str(d))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(d / "ca.pem") in lines[0] and "ca init" in lines[0], lines
    r = run_flags("--intercept-hosts", "*.test", "--ca-dir", str(d))
    assert r.returncode == 2 and str(d / "ca.pem") in r.stderr, r.stderr


def test_group_readable_key_is_refused(proxy_ca):
    key = proxy_ca / "ca-key.pem"
    os.chmod(key, 0o640)
    r = run_flags("--intercept", "--ca-dir", str(proxy_ca))
    assert r.returncode == 2
    assert str(key) in r.stderr and "chmod 600 %s" % key in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr


def test_bad_intercept_hosts_flag():
    r = run_flags("--intercept-hosts", "a,,b")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "statusproxy: --intercept-hosts: expected host patterns like api.example.com,*.test, "
        "got 'a,,b'"], r.stderr


def test_interception_inside_the_tls_listener(proxy_factory, proxy_ca, origin_ca, origin,
                                              tmp_path):
    """A client using the TLS listener as an https proxy CONNECTs and is
    intercepted: the minted handshake runs inside the listener's TLS (TLS in
    TLS), not on the raw socket under it."""
    cert, key = mint(origin_ca, tmp_path, "localhost")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(cert.read_bytes() + (origin_ca / "ca.pem").read_bytes())
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    tls_port = s.getsockname()[1]
    s.close()
    p = start_proxy(proxy_factory, proxy_ca, origin_ca, [origin.port],
                    args=["--tls-listen", "127.0.0.1:%d" % tls_port, "--tls-cert", str(chain),
                          "--tls-key", str(key)])
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "--proxy", "https://localhost:%d" % tls_port,
                        "--proxy-cacert", str(origin_ca / "ca.pem"),
                        "--cacert", str(proxy_ca / "ca.pem"),
                        "https://localhost:%d/status/201?body=nested" % origin.port],
                       capture_output=True, timeout=40, env=clean_env())
    assert r.returncode == 0 and r.stdout == b"nested", r.stderr
    rows = rows_of(p.db, 1)
    got = [(r["method"], r["path"], r["upstream_code"], r["final_code"], r["scheme"])
           for r in rows if r["method"] == "GET"]
    assert got == [("GET", "/status/201", 201, 201, "https")], rows
