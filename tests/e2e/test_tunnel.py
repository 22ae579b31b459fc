"""Byte tunnels (DESIGN §2): CONNECT host:port answered `200 Connection
Established` and then relayed both ways untouched, recorded with its status
and byte counts; ports outside --connect-ports refused with 403, unreachable
targets 502; Upgrade requests forwarded and a 101 answer turned into a
tunnel (a real WebSocket exchange), a non-101 answer leaving plain HTTP."""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from backend import Backend, det_bytes, ws_frame
from helpers import Proxy, SServer, check_synthesized, wait_exchanges

HOSTNAME = socket.gethostname()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(extra)
    return env


def connect(c, authority, headers=b""):
    """Send CONNECT AUTHORITY and read the answer."""
    c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority.encode(),
                                                           authority.encode(), headers))
    return c.read_response(method="CONNECT")


def recv_exactly(c, n, timeout=10):
    """N bytes from the connection (what HttpConn buffered first)."""
    c.sock.settimeout(timeout)
    while len(c.buf) < n:
        data = c.sock.recv(262144)
        if not data:
            break
        c.buf += data
    out = bytes(c.buf[:n])
    del c.buf[:n]
    return out


# -- a TLS origin: openssl s_server ------------------------------------------------


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def s_server(tls_cert, tmp_path):
    s = SServer(tls_cert[0], tls_cert[1], str(tmp_path))
    yield s
    s.stop()


@pytest.fixture
def tls_proxy(proxy_factory, s_server):
    return proxy_factory(args=["--connect-ports", "443,%d" % s_server.port])


def _connect_rows(db, n=1):
    return wait_exchanges(db, lambda rs: len([r for r in rs if r["method"] == "CONNECT"]) >= n)


def test_https_through_connect_with_curl(tls_proxy, s_server, tls_cert):
    """A real TLS handshake and request through the tunnel; once it is
    closed the tunnel is recorded: CONNECT, 200, bytes both ways."""
    out = subprocess.run(
        ["curl", "-sS", "--cacert", tls_cert[0], "-x", "http://127.0.0.1:%d" % tls_proxy.port,
         "-w", "\n%{http_connect} %{http_code} %{size_download}",
         "https://localhost:%d/" % s_server.port],
        capture_output=True, timeout=30, env=clean_env())
    assert out.returncode == 0, out.stderr
    body, _, stats = out.stdout.rpartition(b"\n")
    connect_code, code, size = stats.split()
    assert (connect_code, code) == (b"200", b"200"), out.stdout
    assert b"s_server" in body  # the -www status page came through TLS
    rows = _connect_rows(tls_proxy.db)
    tunnels = [r for r in rows if r["method"] == "CONNECT"]
    assert len(tunnels) == 1, rows
    t = tunnels[0]
    assert (t["host"], t["final_code"]) == ("localhost", 200), t
    # ClientHello + request one way; certificate + the page the other way.
    assert t["bytes_in"] > 200, t
    assert t["bytes_out"] > int(size), t


def test_https_proxy_environment_for_curl(tls_proxy, s_server, tls_cert):
    url = "http://127.0.0.1:%d" % tls_proxy.port
    out = subprocess.run(["curl", "-sS", "--cacert", tls_cert[0], "-o", "/dev/null", "-w",
                          "%{http_connect} %{http_code}",
                          "https://localhost:%d/" % s_server.port],
                         capture_output=True, timeout=30,
                         env=clean_env(https_proxy=url, HTTPS_PROXY=url))
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"200 200"
    assert len([r for r in _connect_rows(tls_proxy.db) if r["method"] == "CONNECT"]) == 1


def test_https_through_connect_with_urllib(tls_proxy, s_server, tls_cert, monkeypatch):
    for k in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    ctx = ssl.create_default_context(cafile=tls_cert[0])
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": "http://127.0.0.1:%d" % tls_proxy.port}),
        urllib.request.HTTPSHandler(context=ctx))
    with opener.open("https://localhost:%d/" % s_server.port, timeout=20) as r:
        assert r.status == 200
        assert b"s_server" in r.read()


# -- CONNECT on the wire --------------------------------------------------------------


class EchoServer:
    """A TCP server that echoes every byte and notes when its peer closed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.peer_closed = threading.Event()
        self.conns = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                data = c.recv(262144)
                if not data:
                    break
                self.received += len(data)
                c.sendall(data)
        except OSError:
            pass
        self.peer_closed.set()
        c.close()

    def close_all(self):
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.close_all()


@pytest.fixture
def echo():
    e = EchoServer()
    yield e
    e.stop()


def test_connect_answer_and_untouched_bytes(proxy_factory, backend):
    """`HTTP/1.1 200 Connection Established`, then bytes pass as they are:
    HTTP spoken inside the tunnel gets no Via, no Host rewrite, and the
    tunnel's byte counts match what went through."""
    p = proxy_factory(args=["--connect-ports", str(backend.port)])
    req = (b"GET /status/200?size=5000 HTTP/1.1\r\nHost: inside.test\r\n"
           b"Proxy-Connection: keep-alive\r\n\r\n")
    with p.conn() as c:
        r = connect(c, backend.authority)
        assert r.status_line == b"HTTP/1.1 200 Connection Established"
        assert not r.has("Content-Length") and not r.has("Transfer-Encoding"), r.headers
        c.send(req)
        inner = c.read_response()
        assert inner.body == det_bytes(5000)
        assert not inner.has("Via"), "the proxy touched bytes inside the tunnel"
    log = backend.log[0]
    assert log["raw_head"] == req
    rows = _connect_rows(p.db)
    t = [r for r in rows if r["method"] == "CONNECT"]
    assert len(t) == 1, rows
    t = t[0]
    assert (t["host"], t["final_code"]) == ("127.0.0.1", 200), t
    connect_head = 2 * len(backend.authority) + 36
    assert len(req) <= t["bytes_in"] <= len(req) + connect_head, t
    assert len(inner.raw) <= t["bytes_out"] <= len(inner.raw) + len(r.raw) + 200, t


def test_bytes_sent_right_behind_the_connect_head_are_relayed(proxy_factory, echo):
    """A client may put its first tunnel bytes (a TLS ClientHello, say) in
    the same write as the CONNECT: they belong to the tunnel."""
    p = proxy_factory(args=["--connect-ports", str(echo.port)])
    with p.conn() as c:
        c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\nearly-bytes"
               % (echo.port, echo.port))
        r = c.read_response(method="CONNECT")
        assert r.status == 200
        assert recv_exactly(c, 11) == b"early-bytes"


def test_large_transfer_both_ways_through_the_tunnel(proxy_factory, echo):
    """4 MiB written while the echo comes back: nothing lost, reordered or
    stalled by back-pressure."""
    p = proxy_factory(args=["--connect-ports", str(echo.port)])
    n = 4 << 20
    data = det_bytes(n)
    with p.conn(timeout=30) as c:
        assert connect(c, "127.0.0.1:%d" % echo.port).status == 200
        got = hashlib.sha256()
        received = [0]

        def reader():
            c.sock.settimeout(30)
            if c.buf:
                got.update(c.buf)
                received[0] += len(c.buf)
                del c.buf[:]
            while received[0] < n:
                d = c.sock.recv(262144)
                if not d:
                    break
                got.update(d)
                received[0] += len(d)

        t = threading.Thread(target=reader)
        t.start()
        c.sock.sendall(data)
        t.join(60)
        assert received[0] == n
        assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    rows = _connect_rows(p.db)
    t = [r for r in rows if r["method"] == "CONNECT"][0]
    assert t["bytes_in"] >= n and t["bytes_out"] >= n, t


def test_tunnel_closes_when_the_target_closes(proxy_factory, echo):
    p = proxy_factory(args=["--connect-ports", str(echo.port)])
    with p.conn() as c:
        assert connect(c, "127.0.0.1:%d" % echo.port).status == 200
        c.send(b"ping")
        assert recv_exactly(c, 4) == b"ping"
        echo.close_all()
        assert c.closed_by_peer(3.0), "the client side stayed open"


def test_tunnel_closes_when_the_client_closes(proxy_factory, echo):
    p = proxy_factory(args=["--connect-ports", str(echo.port)])
    with p.conn() as c:
        assert connect(c, "127.0.0.1:%d" % echo.port).status == 200
        c.send(b"ping")
        assert recv_exactly(c, 4) == b"ping"
    assert echo.peer_closed.wait(3.0), "the target side stayed open"
    rows = _connect_rows(p.db)
    assert [(r["method"], r["final_code"]) for r in rows] == [("CONNECT", 200)]
    # the proxy still serves
    with p.conn() as c:
        assert connect(c, "127.0.0.1:%d" % echo.port).status == 200


@pytest.mark.parametrize("ports", [None, "443,8443"], ids=["default", "listed"])
def test_connect_to_a_port_not_allowed_is_403(proxy_factory, backend, ports):
    p = proxy_factory(args=["--connect-ports", ports] if ports else [])
    with p.conn() as c:
        r = connect(c, backend.authority)
    assert check_synthesized(r, 403, "Forbidden") == []
    time.sleep(0.2)
    assert backend.snapshot()["connections"] == 0, "the proxy connected to a forbidden port"
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["method"], r["final_code"]) for r in rows] == [("CONNECT", 403)]


def test_connect_to_a_refused_port_is_502(proxy_factory, refused_port):
    p = proxy_factory(args=["--connect-ports", str(refused_port)])
    with p.conn() as c:
        r = connect(c, "127.0.0.1:%d" % refused_port)
    assert check_synthesized(r, 502, "Bad Gateway") == []
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["method"], r["upstream_code"], r["final_code"]) for r in rows] == \
        [("CONNECT", None, 502)]
    assert rows[0]["error"], rows


def test_connect_to_an_unresolvable_name_is_502(proxy_factory):
    p = proxy_factory()
    with p.conn(timeout=30) as c:
        c.send(b"CONNECT no-such-host.invalid:443 HTTP/1.1\r\nHost: no-such-host.invalid:443"
               b"\r\n\r\n")
        r = c.read_response(method="CONNECT", timeout=30)
    assert check_synthesized(r, 502, "Bad Gateway") == []


def test_connect_to_the_proxy_itself_is_508(statusproxy_bin, tmp_path):
    """CONNECT to the proxy's own listen or admin address, even with those
    ports allowed: 508, not a tunnel into itself."""
    p = Proxy(statusproxy_bin, str(tmp_path), name="selfconnect")
    p.argv += ["--connect-ports", "%d,%d" % (p.port, p.admin_port)]
    p.start()
    try:
        for port in (p.port, p.admin_port):
            with p.conn() as c:
                r = connect(c, "127.0.0.1:%d" % port)
            assert check_synthesized(r, 508, "Loop Detected") == [], port
    finally:
        problems = p.stop()
    assert problems == [], p.stderr()


@pytest.mark.parametrize("target", [b"/just-a-path", b"no-port.test", b"http://x.test:443/"])
def test_connect_target_must_be_host_and_port(proxy_factory, target):
    """RFC 9112 §3.2.3: CONNECT takes authority-form (host:port) only."""
    p = proxy_factory()
    with p.conn() as c:
        c.send(b"CONNECT %s HTTP/1.1\r\nHost: x.test\r\n\r\n" % target)
        r = c.read_response(method="CONNECT")
    assert check_synthesized(r, 400, "Bad Request") == []


# -- Upgrade / 101 ----------------------------------------------------------------------


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key


def ws_read_frame(c, timeout=10):
    b0, b1 = recv_exactly(c, 2, timeout)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(recv_exactly(c, 2, timeout), "big")
    elif n == 127:
        n = int.from_bytes(recv_exactly(c, 8, timeout), "big")
    assert not b1 & 0x80, "server frames are never masked"
    payload = recv_exactly(c, n, timeout)
    assert len(payload) == n, "connection closed inside a frame"
    return bool(b0 & 0x80), b0 & 0x0F, payload


@pytest.fixture
def any_mode_proxy(request, proxy_factory, backend):
    mode = request.param
    p = proxy_factory(upstream=backend.url if mode == "gateway" else None)
    prefix = "" if mode == "gateway" else "http://%s" % backend.authority
    return p, prefix


@pytest.mark.parametrize("any_mode_proxy", ["gateway", "forward"], indirect=True)
def test_websocket_echo_through_the_proxy(any_mode_proxy, backend):
    p, prefix = any_mode_proxy
    assert Backend.ws_accept(WS_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    with p.conn() as c:
        r = c.exchange("GET", prefix + "/ws", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", WS_KEY), ("Sec-WebSocket-Version", "13"),
            ("Origin", "http://e2e.test")])
        assert r.status == 101, r
        assert r.tokens("Upgrade") == ["websocket"]
        assert "upgrade" in r.tokens("Connection")
        assert r.get("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        mask = b"\x12\x34\x56\x78"
        big = det_bytes(70000)
        c.send(ws_frame(0x1, b"hello", mask))
        assert ws_read_frame(c) == (True, 0x1, b"hello")
        c.send(ws_frame(0x2, det_bytes(300), b"\xff\x00\xaa\x55"))
        assert ws_read_frame(c) == (True, 0x2, det_bytes(300))
        # several frames in one write, one of them 64-bit sized
        c.send(ws_frame(0x2, big, mask) + ws_frame(0x9, b"are you there", mask)
               + ws_frame(0x1, b"frag-", mask, fin=False) + ws_frame(0x0, b"ment", mask))
        assert ws_read_frame(c) == (True, 0x2, big)
        assert ws_read_frame(c) == (True, 0xA, b"are you there")
        assert ws_read_frame(c) == (False, 0x1, b"frag-")
        assert ws_read_frame(c) == (True, 0x0, b"ment")
        c.send(ws_frame(0x8, b"\x03\xe8bye", mask))
        assert ws_read_frame(c) == (True, 0x8, b"\x03\xe8bye")
        assert c.closed_by_peer(3.0), "the tunnel stayed open after the backend closed"
    log = backend.log[0]
    seen = {n.lower(): v for n, v in log["headers"]}
    assert seen.get("upgrade", "").lower() == "websocket", log["headers"]
    assert "upgrade" in seen.get("connection", "").lower(), log["headers"]
    assert seen.get("sec-websocket-key") == WS_KEY
    assert seen.get("sec-websocket-version") == "13"
    assert log["target"] == "/ws"
    assert [op for op, _ in backend.ws_frames] == [0x1, 0x2, 0x2, 0x9, 0x1, 0x0, 0x8]
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["method"], r["path"], r["final_code"]) for r in rows] == [("GET", "/ws", 101)]


@pytest.mark.parametrize("any_mode_proxy", ["gateway", "forward"], indirect=True)
def test_upgrade_answered_without_101_stays_http(any_mode_proxy, backend):
    """The backend declines the upgrade (a 200, or its 400 for a broken
    handshake): the connection goes on as HTTP/1.1."""
    p, prefix = any_mode_proxy
    up = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    with p.conn() as c:
        r = c.exchange("GET", prefix + "/status/200?body=no-upgrade", headers=up)
        assert (r.status, r.body) == (200, b"no-upgrade")
        r = c.exchange("GET", prefix + "/ws", headers=up)  # no key: the backend says 400
        assert (r.status, r.body) == (400, b"not a websocket handshake\n")
        r = c.exchange("GET", prefix + "/status/201?body=after")
        assert (r.status, r.body) == (201, b"after")
        r = c.exchange("POST", prefix + "/sink", body=b"x" * 1000)
        assert json.loads(r.body)["body_len"] == 1000
    assert backend.log[0]["target"] == "/status/200?body=no-upgrade"
    assert [v.lower() for n, v in backend.log[0]["headers"] if n.lower() == "upgrade"] == \
        ["websocket"]
    assert backend.requests == 4
