"""The scheme of every exchange (DESIGN §9), through the real binary: plain
exchanges are recorded `http`, a blind CONNECT tunnel `tunnel`; the rule
matcher `scheme http|https` selects on it (plain traffic is never https);
/metrics labels statusproxy_responses_total with it, /stats sums answers per
scheme, and `statusproxy report --by host` gives each scheme of a host its
own row. HTTPS inside interception is the TLS work's to test; the matcher
and the records are ready for it."""

import json
import socket
import subprocess
import threading

import pytest

from rules_support import Admin, get, metric, metric_samples, write_rules
from helpers import HttpConn, wait_exchanges, wait_until


class Echo:
    """A TCP server that echoes every byte: a target for CONNECT."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                c.sendall(data)

    def stop(self):
        self.sock.close()


@pytest.fixture
def echo():
    e = Echo()
    yield e
    e.stop()


def tunnel_through(port, target_port, payload=b"ping"):
    """CONNECT to 127.0.0.1:TARGET_PORT, echo PAYLOAD through, close."""
    with HttpConn(port) as c:
        auth = b"127.0.0.1:%d" % target_port
        c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (auth, auth))
        r = c.read_response(method="CONNECT")
        assert r.status == 200, r
        c.send(payload)
        got = bytes(c.buf)
        c.sock.settimeout(5)
        while len(got) < len(payload):
            data = c.sock.recv(65536)
            assert data, "the tunnel closed early"
            got += data
        assert got == payload


def report_json(binary, db, *args):
    p = subprocess.run([binary, "report", "--db", db, "--format", "json", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_plain_and_tunnel_recorded_counted_and_reported(proxy_factory, backend, echo,
                                                        statusproxy_bin):
    # A forward proxy sees both: plain requests (http) and CONNECT (tunnel).
    p = proxy_factory(args=["--connect-ports", str(echo.port)])
    with HttpConn(p.port) as c:
        assert c.exchange("GET", "http://%s/status/200" % backend.authority).status == 200
        assert c.exchange("GET", "http://%s/status/503" % backend.authority).status == 503
    tunnel_through(p.port, echo.port)
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 3)
    got = sorted((r["method"], r["final_code"], r["scheme"]) for r in rows)
    assert got == [("CONNECT", 200, "tunnel"), ("GET", 200, "http"), ("GET", 503, "http")], rows

    adm = Admin(p)
    m = wait_until(lambda: (lambda m: m if metric(
        m, "statusproxy_request_duration_seconds_count") == 3 else None)(adm.metrics()),
        timeout=5)
    assert m, adm.get("/metrics").body
    samples = {(l["code"], l["upstream_code"], l["scheme"]): v
               for l, v in metric_samples(m, "statusproxy_responses_total")}
    assert samples == {("200", "200", "http"): 1, ("503", "503", "http"): 1,
                       ("200", "", "tunnel"): 1}, samples
    assert adm.json("/stats")["schemes"] == {"http": 2, "tunnel": 1}

    by_host = report_json(statusproxy_bin, p.db, "--by", "host")
    assert [(r["host"], r["scheme"], r["count"], r["2xx"], r["5xx"]) for r in by_host] == \
        [("127.0.0.1", "http", 2, 1, 1), ("127.0.0.1", "tunnel", 1, 1, 0)]


def test_refused_connect_is_a_tunnel_too(proxy_factory, backend):
    # A CONNECT answered 403 (port not allowed) asked for a tunnel: it is
    # recorded as one, apart from the host's plain exchanges.
    p = proxy_factory()
    with HttpConn(p.port) as c:
        auth = backend.authority.encode()
        c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (auth, auth))
        assert c.read_response(method="CONNECT").status == 403
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["method"], r["final_code"], r["scheme"]) for r in rows] == \
        [("CONNECT", 403, "tunnel")]


def test_websocket_upgrade_stays_http(proxy_factory, backend):
    # A 101 turns the connection into a tunnel, but the exchange was plain HTTP.
    p = proxy_factory(upstream=backend.url)
    with HttpConn(p.port) as c:
        r = c.exchange("GET", "/ws", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
        assert r.status == 101
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["path"], r["final_code"], r["scheme"]) for r in rows] == [("/ws", 101, "http")]


def test_scheme_rules_select_on_the_exchange(proxy_factory, backend, echo, tmp_path):
    rules = write_rules(tmp_path,
                        'rule tls-only scheme https path /status/* => abort 503\n'
                        'rule plain scheme http path /status/200 => set-status 299 '
                        'set-header X-Scheme "http"\n'
                        'rule no-plain-connect scheme http method CONNECT => abort 403\n')
    p = proxy_factory(args=["--rules", rules, "--connect-ports", str(echo.port)])
    r = get(p.port, "http://%s/status/200" % backend.authority)
    assert (r.status, r.get("X-Scheme")) == (299, "http")
    # scheme https never holds for plain traffic: the backend's own answer.
    r = get(p.port, "http://%s/status/404" % backend.authority)
    assert (r.status, r.get("X-Scheme")) == (404, None)
    # A CONNECT is a tunnel, not http: the third rule does not stop it.
    tunnel_through(p.port, echo.port)
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 3)
    got = sorted((r["method"], r["final_code"], r["rule"], r["scheme"]) for r in rows)
    assert got == [("CONNECT", 200, None, "tunnel"), ("GET", 299, "plain", "http"),
                   ("GET", 404, None, "http")], rows
    rs = Admin(p).rules()
    assert (rs["tls-only"]["hits"], rs["plain"]["hits"], rs["no-plain-connect"]["hits"]) == \
        (0, 1, 0)


@pytest.mark.parametrize("value, message", [
    ("ftp", "invalid scheme 'ftp' (expected http or https)"),
    ("tunnel", "'scheme tunnel' cannot be matched"),
])
def test_rules_check_refuses_a_bad_scheme(statusproxy_bin, tmp_path, value, message):
    line = "rule bad path /x scheme %s => abort 503" % value
    col = line.index(" %s " % value) + 2  # 1-based column of the value
    path = write_rules(tmp_path, "# schemes\n%s\n" % line)
    r = subprocess.run([statusproxy_bin, "rules", "check", path], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    first = r.stderr.splitlines()[0]
    assert first.startswith("%s:2:%d: error: " % (path, col)), first
    assert message in first, first


def test_rules_check_normalizes_scheme(statusproxy_bin, tmp_path):
    path = write_rules(tmp_path, "rule t scheme HTTPS => abort 503\n")
    r = subprocess.run([statusproxy_bin, "rules", "check", path], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["rule t scheme https => abort 503"]
