"""TLS to upstreams (DESIGN §9): `--upstream https://HOST[:PORT]` through
the real binary, with Python `ssl` origin servers (the test Backend in TLS
mode) whose certificates are minted from a throwaway CA (`statusproxy ca
init` + build/tests/mint_leaf): verification with --upstream-ca, the
system store, a hostname mismatch, --upstream-insecure, a plain-HTTP origin,
SNI, keep-alive reuse of TLS connections, session resumption, a rule and a
fault inside, a 64 MiB body in flat memory, an origin closing mid-body, and
the flags' errors."""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backend import Backend, det_bytes, det_sha256
from helpers import (ca_init, check_synthesized, mint_leaf, tls_clean_env,
                     wait_exchanges)
from rules_support import get, metric_samples, parse_prometheus, write_rules

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATUSPROXY_BIN", REPO / "build" / "statusproxy")).resolve()


def _clean_env():
    return tls_clean_env()


@pytest.fixture
def ca(tmp_path):
    return ca_init(BIN, tmp_path / "ca")


def mint(ca_dir, out_dir, name):
    return mint_leaf(BIN, ca_dir, out_dir, name)


def server_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture
def origins():
    started = []

    def start(ctx=None):
        b = Backend(ssl_context=ctx).start()
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


@pytest.fixture
def tls_origin(ca, tmp_path, origins):
    """An https origin with a certificate for "localhost" from the test CA."""
    cert, key = mint(ca, tmp_path, "localhost")
    return origins(server_context(cert, key))


def https_url(origin, host="localhost"):
    return "https://%s:%d" % (host, origin.port)


def start_tls_proxy(proxy_factory, origin, ca_dir, host="localhost", args=()):
    return proxy_factory(upstream=https_url(origin, host),
                         args=["--upstream-ca", str(ca_dir / "ca.pem")] + list(args))


def only_row(db, pred=lambda r: True):
    rows = wait_exchanges(db, lambda rs: any(pred(r) for r in rs))
    rows = [r for r in rows if pred(r)]
    assert len(rows) == 1, rows
    return rows[0]


# -- verification ------------------------------------------------------------------


def test_success_with_upstream_ca(proxy_factory, tls_origin, ca):
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn() as c:
        r = c.exchange("GET", "/status/200?body=over-tls")
        assert r.status == 200 and r.body == b"over-tls"
        r = c.exchange("POST", "/sink", body=b"x" * 1000)
        assert json.loads(r.body) == {"body_len": 1000,
                                      "sha256": hashlib.sha256(b"x" * 1000).hexdigest()}
    assert tls_origin.tls_sni[:1] == ["localhost"], tls_origin.tls_sni
    assert tls_origin.tls_failures == []
    assert [e["target"] for e in tls_origin.log] == ["/status/200?body=over-tls", "/sink"]
    row = only_row(p.db, lambda r: r["path"] == "/status/200")
    assert (row["upstream_code"], row["final_code"], row["error"]) == (200, 200, None)


def test_request_body_reaches_origin_intact(proxy_factory, tls_origin, ca):
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    n = 3 * 1024 * 1024 + 17
    with p.conn(timeout=30) as c:
        r = c.exchange("POST", "/sink", body=det_bytes(n), timeout=30)
        assert r.status == 200
        assert json.loads(r.body) == {"body_len": n, "sha256": det_sha256(n)}


def test_system_store_rejects_private_ca(proxy_factory, tls_origin):
    """Without --upstream-ca the system store decides: our throwaway CA is
    not in it, so the handshake fails verification: 502 tls_verify."""
    p = proxy_factory(upstream=https_url(tls_origin), env={"SSL_CERT_FILE": "/nonexistent"})
    with p.conn() as c:
        r = c.exchange("GET", "/status/200")
    assert check_synthesized(r, 502, "Bad Gateway") == []
    assert tls_origin.log == []
    row = only_row(p.db)
    assert (row["upstream_code"], row["final_code"], row["error"]) == (None, 502, "tls_verify")
    m = parse_prometheus(get(p.admin_port, "/metrics").body.decode())
    assert {l["error"]: v for l, v in metric_samples(m, "statusproxy_upstream_errors_total")} \
        == {"tls_verify": 1}


def test_hostname_mismatch_is_tls_verify(proxy_factory, ca, tmp_path, origins):
    cert, key = mint(ca, tmp_path, "other.test")
    o = origins(server_context(cert, key))
    p = start_tls_proxy(proxy_factory, o, ca)
    with p.conn() as c:
        r = c.exchange("GET", "/status/200")
    assert r.status == 502
    assert o.log == []
    assert only_row(p.db)["error"] == "tls_verify"
    err = p.stderr()
    assert "tls_verify" in err and "hostname mismatch" in err, err


def test_wrong_ca_is_tls_verify(proxy_factory, tls_origin, tmp_path):
    other = tmp_path / "other-ca"
    ca_init(BIN, other)
    p = start_tls_proxy(proxy_factory, tls_origin, other)
    with p.conn() as c:
        assert c.exchange("GET", "/status/200").status == 502
    assert only_row(p.db)["error"] == "tls_verify"


def test_ip_literal_upstream_verified_by_ip_san(proxy_factory, ca, tmp_path, origins):
    cert, key = mint(ca, tmp_path, "127.0.0.1")
    o = origins(server_context(cert, key))
    p = start_tls_proxy(proxy_factory, o, ca, host="127.0.0.1")
    with p.conn() as c:
        assert c.exchange("GET", "/status/204").status == 204
    assert o.tls_sni == [None]  # no SNI for an IP address (RFC 6066 §3)


def test_insecure_accepts_mismatch_and_warns(proxy_factory, ca, tmp_path, origins):
    cert, key = mint(ca, tmp_path, "other.test")
    o = origins(server_context(cert, key))
    p = proxy_factory(upstream=https_url(o), args=["--upstream-insecure"])
    with p.conn() as c:
        r = c.exchange("GET", "/status/200?body=anyway")
        assert r.status == 200 and r.body == b"anyway"
    err = p.stderr()
    assert "--upstream-insecure" in err and "not verified" in err, err


@pytest.fixture
def raw_origin():
    """raw_origin(handler) -> port of a 127.0.0.1 listener that runs
    HANDLER(sock) on each accepted connection, then closes it."""
    listeners = []

    def start(handler):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)
        listeners.append(ls)

        def serve():
            while True:
                try:
                    s, _ = ls.accept()
                except OSError:
                    return
                try:
                    handler(s)
                except OSError:
                    pass
                s.close()
        threading.Thread(target=serve, daemon=True).start()
        return ls.getsockname()[1]
    yield start
    for ls in listeners:
        ls.close()


def test_plain_http_origin_is_tls_handshake(proxy_factory, raw_origin, ca):
    """An origin that answers the ClientHello in plain HTTP (as a web server
    on a plain port does)."""
    def plain(s):
        s.recv(4096)
        s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    port = raw_origin(plain)
    p = proxy_factory(upstream="https://127.0.0.1:%d" % port,
                      args=["--upstream-ca", str(ca / "ca.pem")])
    with p.conn() as c:
        r = c.exchange("GET", "/status/200")
    assert check_synthesized(r, 502, "Bad Gateway") == []
    row = only_row(p.db)
    assert (row["upstream_code"], row["final_code"], row["error"]) == (None, 502, "tls_handshake")
    stats = json.loads(get(p.admin_port, "/stats").body)
    assert stats["upstream_errors"] == {"tls_handshake": 1}, stats


def test_origin_closing_during_handshake_is_tls_handshake(proxy_factory, raw_origin, ca):
    port = raw_origin(lambda s: s.recv(4096))  # the ClientHello, then a close
    p = proxy_factory(upstream="https://127.0.0.1:%d" % port,
                      args=["--upstream-ca", str(ca / "ca.pem")])
    with p.conn() as c:
        assert c.exchange("GET", "/status/200").status == 502
    assert only_row(p.db)["error"] == "tls_handshake"


def test_stalled_handshake_is_connect_timeout(proxy_factory, raw_origin, ca):
    """An origin that accepts and never answers the ClientHello: the
    handshake counts against --connect-timeout."""
    port = raw_origin(lambda s: (s.recv(4096), time.sleep(3)))
    p = proxy_factory(upstream="https://127.0.0.1:%d" % port,
                      args=["--upstream-ca", str(ca / "ca.pem"), "--connect-timeout", "500ms"])
    with p.conn() as c:
        t0 = time.monotonic()
        r = c.exchange("GET", "/status/200")
        took = time.monotonic() - t0
    assert r.status == 504
    assert 0.4 < took < 2.5, took
    assert only_row(p.db)["error"] == "connect_timeout"


# -- pooling and resumption --------------------------------------------------------


def test_keepalive_reuses_one_tls_connection(proxy_factory, tls_origin, ca):
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn() as c:
        for i in range(20):
            r = c.exchange("GET", "/status/200?body=r%d" % i)
            assert r.body == b"r%d" % i
    assert tls_origin.requests == 20
    assert tls_origin.connections == 1, tls_origin.connections
    assert len(tls_origin.tls_sessions) == 1


def test_sequential_clients_share_pooled_tls_connection(proxy_factory, tls_origin, ca):
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    for i in range(5):
        with p.conn() as c:
            assert c.exchange("GET", "/status/200").status == 200
    assert tls_origin.connections == 1, tls_origin.connections


def test_session_resumed_on_next_connection(proxy_factory, tls_origin, ca):
    """The origin closes after each answer, so every request needs a new TLS
    connection; from the second on, the proxy offers the session it kept."""
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn() as c:
        for i in range(3):
            r = c.exchange("GET", "/status/200?conn_close=1&body=s%d" % i)
            assert r.status == 200 and r.body == b"s%d" % i
            # The origin's close must be seen before the next request.
            tls_origin.wait_for(lambda b, n=i + 1: b.responses >= n)
            time.sleep(0.1)
    assert tls_origin.connections == 3
    assert tls_origin.tls_sessions == [False, True, True], tls_origin.tls_sessions


# -- rules and faults inside -------------------------------------------------------


def test_rule_and_fault_inside_https_upstream(proxy_factory, tls_origin, ca, tmp_path):
    rules = write_rules(str(tmp_path), "rule teapot path /status/200 => set-status 418\n"
                                       "rule down path /down => abort 503\n")
    p = start_tls_proxy(proxy_factory, tls_origin, ca, args=["--rules", rules])
    with p.conn() as c:
        r = c.exchange("GET", "/status/200?body=b")
        assert r.status == 418 and r.body == b"b"
        r = c.exchange("GET", "/down")
        assert r.status == 503
        assert c.exchange("GET", "/status/201").status == 201
    assert [e["target"] for e in tls_origin.log] == ["/status/200?body=b", "/status/201"]
    rows = wait_exchanges(p.db, lambda rs: len(rs) == 3)
    got = [(r["path"], r["upstream_code"], r["final_code"], r["rule"]) for r in rows]
    assert got == [("/status/200", 200, 418, "teapot"), ("/down", None, 503, "down"),
                   ("/status/201", 201, 201, None)], got


# -- bodies and abrupt ends --------------------------------------------------------


# A proxy that buffered the body would pass 64 MiB; measured ~12 MiB plain.
RSS_LIMIT_KIB = 40 * 1024


def test_64mib_download_through_tls_in_flat_memory(proxy_factory, tls_origin, ca,
                                                   record_property):
    n = 64 << 20
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    state = {"got": 0, "stalled": False}

    def sink(mv):  # stop reading for a second: the proxy must hold the origin back
        state["got"] += len(mv)
        if not state["stalled"] and state["got"] >= 1 << 20:
            state["stalled"] = True
            time.sleep(1.0)
    with p.conn(timeout=60) as c:
        r = c.exchange("GET", "/stream?size=%d&chunked=1&chunk=262144" % n, sink=sink,
                       timeout=60)
        assert r.body_len == n
        assert r.body_sha256 == det_sha256(n)
        hwm = p.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm


def test_64mib_upload_through_tls_in_flat_memory(proxy_factory, tls_origin, ca,
                                                 record_property):
    from backend import det_chunks
    n = 64 << 20
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn(timeout=60) as c:
        c.request("POST", "/sink?start_delay_ms=1000", body=det_chunks(n), content_length=n)
        r = c.read_response(timeout=60)
        assert json.loads(r.body) == {"body_len": n, "sha256": det_sha256(n)}
        hwm = p.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm


@pytest.mark.parametrize("mode", ["close-mid-body", "truncated-chunked"])
def test_origin_closing_mid_body(proxy_factory, tls_origin, ca, mode):
    """The origin closes without close_notify in the middle of the body: the
    client can tell the answer is incomplete, and the record says so."""
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn(timeout=5) as c:
        c.request("GET", "/raw/" + mode)
        r = c.read_response(allow_incomplete=True)
        assert r.status == 200
        assert not r.complete, r.raw
        sent = det_bytes(10) if mode == "close-mid-body" else b"0123456789"
        assert sent.startswith(r.body), r.body
    row = only_row(p.db)
    assert row["error"] == "upstream_closed", row
    # The proxy is still fine afterwards.
    with p.conn() as c:
        assert c.exchange("GET", "/status/200").status == 200


# -- flags -------------------------------------------------------------------------


def run_flags(*args):
    return subprocess.run([str(BIN), "run", "--listen", "127.0.0.1:0", "--admin", "off",
                           *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_bad_upstream_ca_exits_2_naming_the_flag(tmp_path, content):
    f = tmp_path / "ca.pem"
    if content is not None:
        f.write_text(content)
    r = run_flags("--upstream", "https://localhost:1", "--upstream-ca", str(f))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--upstream-ca" in lines[0] and str(f) in lines[0], r.stderr


def test_https_upstream_default_port_443(proxy_factory, ca):
    p = proxy_factory(upstream="https://localhost", args=["--upstream-ca", str(ca / "ca.pem"),
                                                         "--log-level", "info"])
    assert "localhost:443" in p.stderr()


# -- upgrades and concurrency ------------------------------------------------------


def test_websocket_over_https_upstream(proxy_factory, tls_origin, ca):
    """A 101 turns the TLS connection into a tunnel: frames both ways, and
    the origin's close ends it."""
    from test_tunnel import WS_KEY, ws_frame, ws_read_frame
    p = start_tls_proxy(proxy_factory, tls_origin, ca)
    with p.conn() as c:
        r = c.exchange("GET", "/ws", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", WS_KEY), ("Sec-WebSocket-Version", "13")])
        assert r.status == 101, r
        mask = b"\x01\x02\x03\x04"
        big = det_bytes(200000)
        c.send(ws_frame(0x1, b"hello", mask))
        assert ws_read_frame(c) == (True, 0x1, b"hello")
        c.send(ws_frame(0x2, big, mask))
        assert ws_read_frame(c) == (True, 0x2, big)
        c.send(ws_frame(0x8, b"\x03\xe8bye", mask))
        assert ws_read_frame(c) == (True, 0x8, b"\x03\xe8bye")
        assert c.closed_by_peer(3.0), "the tunnel stayed open after the origin closed"
    assert [op for op, _ in tls_origin.ws_frames] == [0x1, 0x2, 0x8]


def test_concurrent_clients_two_workers(proxy_factory, tls_origin, ca):
    """Two worker threads share the TLS config and its session cache."""
    p = start_tls_proxy(proxy_factory, tls_origin, ca, args=["--workers", "2"])
    errors = []

    def client(k):
        try:
            with p.conn(timeout=20) as c:
                for i in range(10):
                    body = "c%d-%d" % (k, i)
                    r = c.exchange("GET", "/status/200?body=%s%s" % (
                        body, "&conn_close=1" if i % 3 == 0 else ""), timeout=20)
                    if r.status != 200 or r.body != body.encode():
                        errors.append((k, i, r.status, r.body))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))
    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert tls_origin.requests == 160
    assert tls_origin.tls_failures == []
    assert any(tls_origin.tls_sessions), "no connection resumed a session"
