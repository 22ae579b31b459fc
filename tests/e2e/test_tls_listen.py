"""The TLS listener (DESIGN §9): `--tls-listen ADDR:PORT` with
`--tls-cert/--tls-key` made by the `openssl` CLI, driven through the real
binary by curl and Python `ssl`: gateway and forward routing, records with
scheme https, ALPN, a client that rejects the certificate (tls_client),
plain HTTP sent to the TLS port, a port probe, rules and fault headers,
--max-connections, --allow, 100 concurrent handshakes, a 64 MiB body in flat
memory, graceful stop, and the flags' errors."""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from backend import det_sha256
from helpers import (SANITIZER_MARKS, ca_init, check_synthesized, db_exchanges, wait_exchanges,
                     wait_until)
from rules_support import write_rules
from tls_listen_support import (BIN, TlsConn, clean_env, client_context, make_pki,
                                raw_connect, start_tls_listener, tls_conn)

CURL = "curl"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def curl(*args, timeout=30):
    return subprocess.run([CURL, "-sS", *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def rows_where(db, pred, n=1, timeout=5.0):
    rows = wait_exchanges(db, lambda rs: len([r for r in rs if pred(r)]) >= n, timeout=timeout)
    return [r for r in rows if pred(r)]


# -- clients --------------------------------------------------------------------


def test_curl_gateway_records_https(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    url = "https://localhost:%d" % p.tls_port
    r = curl("--cacert", str(pki["ca"]), "-o", "-", "-w", "\n%{http_code} %{http_version}",
             url + "/status/200?body=hello", url + "/status/503")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["hello", "200 1.1"], r.stdout
    assert r.stdout.rstrip().endswith("503 1.1"), r.stdout
    rows = rows_where(p.db, lambda r: r["path"] and r["path"].startswith("/status/"), n=2)
    got = [(r["scheme"], r["method"], r["path"], r["upstream_code"], r["final_code"], r["error"])
           for r in rows]
    assert got == [("https", "GET", "/status/200", 200, 200, None),
                   ("https", "GET", "/status/503", 503, 503, None)], got
    # The plain listener still serves plain HTTP, recorded as http.
    with p.conn() as c:
        assert c.exchange("GET", "/status/204").status == 204
    row = rows_where(p.db, lambda r: r["path"] == "/status/204")[0]
    assert row["scheme"] == "http"


def test_python_ssl_keepalive_and_alpn(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    with tls_conn(p, pki["ca"]) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        for i in range(3):
            r = c.exchange("GET", "/status/200?body=n%d" % i)
            assert (r.status, r.body) == (200, b"n%d" % i)
        body = os.urandom(200000)
        r = c.exchange("POST", "/sink", body=body)
        assert json.loads(r.body) == {"body_len": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest()}
    # One backend connection-worth of requests arrived on one client connection.
    rows = rows_where(p.db, lambda r: r["scheme"] == "https", n=4)
    assert len(rows) == 4


def test_client_offering_h2_gets_http11(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    ctx = client_context(pki["ca"], alpn=("h2", "http/1.1"))
    with TlsConn(p.tls_port, ctx) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.exchange("GET", "/status/200").status == 200


def test_forward_mode_over_tls_listener(proxy_factory, backend, pki):
    """curl uses the TLS listener as an HTTPS proxy (absolute-form inside)."""
    p = start_tls_listener(proxy_factory, None, pki)
    r = curl("--proxy", "https://localhost:%d" % p.tls_port, "--proxy-cacert", str(pki["ca"]),
             "-o", "-", "-w", "\n%{http_code}", "%s/status/201?body=fwd" % backend.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["fwd", "201"], r.stdout
    row = rows_where(p.db, lambda r: r["path"] == "/status/201")[0]
    assert (row["scheme"], row["upstream_code"], row["final_code"]) == ("https", 201, 201)


# -- failures -----------------------------------------------------------------------


def test_client_rejecting_certificate_is_tls_client(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    ctx = ssl.create_default_context()  # the system store: our test CA is not in it
    s = raw_connect(p.tls_port)
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(s, server_hostname="localhost")
    s.close()
    row = rows_where(p.db, lambda r: r["error"] == "tls_client")[0]
    assert (row["scheme"], row["upstream_code"], row["final_code"], row["host"]) == \
        ("https", None, None, "localhost"), row
    # curl without --cacert rejects it too.
    r = curl("https://localhost:%d/status/200" % p.tls_port)
    assert r.returncode == 60, (r.returncode, r.stderr)
    rows_where(p.db, lambda r: r["error"] == "tls_client", n=2)
    assert backend.log == []
    # The listener still serves trusting clients.
    with tls_conn(p, pki["ca"]) as c:
        assert c.exchange("GET", "/status/200").status == 200


def test_plain_http_to_tls_port_closed_and_recorded(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    s = raw_connect(p.tls_port)
    s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    s.close()
    assert b"HTTP/" not in got  # at most a TLS alert, never an answer in the clear
    row = rows_where(p.db, lambda r: r["error"] == "tls_handshake")[0]
    assert (row["upstream_code"], row["final_code"], row["method"] or None) == (None, None, None), row
    assert backend.log == []
    with tls_conn(p, pki["ca"]) as c:
        assert c.exchange("GET", "/status/200").status == 200


def test_port_probe_is_not_recorded(proxy_factory, backend, pki):
    """A connection that closes without sending a byte (a health check that
    only connects) leaves no record."""
    p = start_tls_listener(proxy_factory, backend.url, pki)
    for _ in range(3):
        raw_connect(p.tls_port).close()
    with tls_conn(p, pki["ca"]) as c:
        assert c.exchange("GET", "/status/200").status == 200
    rows = rows_where(p.db, lambda r: r["path"] == "/status/200")
    time.sleep(0.3)
    assert [r["error"] for r in db_exchanges(p.db)] == [None], db_exchanges(p.db)
    assert len(rows) == 1


def test_stalled_handshake_ends_at_header_timeout(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki, args=["--header-timeout", "500ms"])
    s = raw_connect(p.tls_port)
    s.sendall(b"\x16\x03\x01")  # the start of a TLS record, then nothing
    s.settimeout(5)
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 < 4
    s.close()
    row = rows_where(p.db, lambda r: r["error"] == "header_timeout")[0]
    assert (row["final_code"], row["scheme"]) == (None, "https"), row


# -- rules, faults, limits ---------------------------------------------------------


def test_rule_and_fault_header_over_tls_listener(proxy_factory, backend, pki, tmp_path):
    rules = write_rules(str(tmp_path), "rule teapot path /status/200 => set-status 418\n"
                                       "rule https-only scheme https path /down => abort 503\n")
    p = start_tls_listener(proxy_factory, backend.url, pki,
                           args=["--rules", rules, "--fault-headers", "--mark-faults"])
    with tls_conn(p, pki["ca"]) as c:
        r = c.exchange("GET", "/status/200?body=b")
        assert (r.status, r.body, r.get("X-Statusproxy-Rule")) == (418, b"b", "teapot")
        r = c.exchange("GET", "/down")
        assert r.status == 503
        r = c.exchange("GET", "/status/200", headers=[("X-Statusproxy-Abort", "502")])
        assert r.status == 502
    # Over plain HTTP the scheme matcher does not select /down.
    with p.conn() as c:
        assert c.exchange("GET", "/down").status == 404
    rows = rows_where(p.db, lambda r: True, n=4)
    got = [(r["scheme"], r["path"], r["final_code"], r["rule"]) for r in rows]
    assert got[:3] == [("https", "/status/200", 418, "teapot"),
                       ("https", "/down", 503, "https-only"),
                       ("https", "/status/200", 502, "fault-header")], got
    assert got[3][:3] == ("http", "/down", 404), got


def test_max_connections_over_tls_answers_503(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki, args=["--max-connections", "1"])

    def first_in():
        # The start-up probe's connection may not be closed yet: retry.
        c = tls_conn(p, pki["ca"])
        if c.exchange("GET", "/status/200").status == 200:
            return c
        c.close()
        return None
    first = wait_until(first_in, timeout=5)
    assert first is not None
    with tls_conn(p, pki["ca"]) as c:
        r = c.read_response(timeout=5)
        assert check_synthesized(r, 503, "Service Unavailable") == []
        assert r.get("Retry-After") == "1"
    first.close()
    row = rows_where(p.db, lambda r: r["error"] == "max_connections")[-1]
    assert (row["scheme"], row["final_code"]) == ("https", 503)


def test_allow_applies_to_tls_clients(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki, args=["--allow", "10.0.0.0/8"])
    with tls_conn(p, pki["ca"]) as c:
        r = c.exchange("GET", "/status/200")
        assert r.status == 403
    assert backend.log == []


def test_100_concurrent_handshakes(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki, args=["--workers", "2"])
    n = 100
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        try:
            ctx = client_context(pki["ca"])
            s = raw_connect(p.tls_port)
            s.settimeout(30)
            barrier.wait(timeout=30)
            t = ctx.wrap_socket(s, server_hostname="localhost")
            t.sendall(b"GET /status/200?body=c%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % i)
            data = b""
            while True:
                d = t.recv(65536)
                if not d:
                    break
                data += d
            t.close()
            results[i] = data
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    bad = [(i, r) for i, r in enumerate(results)
           if not (isinstance(r, bytes) and r.startswith(b"HTTP/1.1 200")
                   and r.endswith(b"c%d" % i))]
    assert bad == [], bad[:5]
    rows_where(p.db, lambda r: r["scheme"] == "https" and r["final_code"] == 200, n=n,
               timeout=10)


RSS_LIMIT_KIB = 40 * 1024


def test_64mib_download_over_tls_listener_in_flat_memory(proxy_factory, backend, pki,
                                                         record_property):
    n = 64 << 20
    p = start_tls_listener(proxy_factory, backend.url, pki)
    h = hashlib.sha256()
    state = {"got": 0, "stalled": False}

    def sink(mv):  # stop reading for a second: the proxy must hold the backend back
        h.update(mv)
        state["got"] += len(mv)
        if not state["stalled"] and state["got"] >= 1 << 20:
            state["stalled"] = True
            time.sleep(1.0)
    with tls_conn(p, pki["ca"], timeout=90) as c:
        r = c.exchange("GET", "/stream?size=%d&chunked=1&chunk=262144" % n, sink=sink,
                       timeout=90)
        assert r.body_len == n
        assert r.body_sha256 == det_sha256(n)
        hwm = p.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm


def test_graceful_stop_finishes_tls_exchange(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki)
    with tls_conn(p, pki["ca"]) as c:
        c.request("GET", "/stream?size=1000&delay_ms=700")
        time.sleep(0.2)
        p.proc.send_signal(15)
        r = c.read_response(timeout=10)
        assert r.status == 200 and r.body_len == 1000
    assert p.stop() == []
    rows = [r for r in db_exchanges(p.db) if r["path"] == "/stream"]
    assert [(r["scheme"], r["final_code"], r["error"]) for r in rows] == \
        [("https", 200, None)], rows


# -- flags --------------------------------------------------------------------------


def run_flags(*args):
    return subprocess.run([str(BIN), "run", "--listen",
                           "127.0.0.1:0", "--admin", "off", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def one_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["missing-cert", "garbage-cert", "missing-key", "garbage-key",
                                  "mismatched-key", "cert-alone", "key-alone", "no-listen",
                                  "bad-addr", "name-with-cert"])
def test_bad_tls_listen_flags_exit_2_naming_the_flag(tmp_path, pki, case):
    other = make_pki(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem file\n")
    cert, key = str(pki["cert"]), str(pki["key"])
    listen = ["--tls-listen", "127.0.0.1:0"]
    args, flag = {
        "missing-cert": (listen + ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", key],
                         "--tls-cert"),
        "garbage-cert": (listen + ["--tls-cert", str(garbage), "--tls-key", key], "--tls-cert"),
        "missing-key": (listen + ["--tls-cert", cert, "--tls-key", str(tmp_path / "no.pem")],
                        "--tls-key"),
        "garbage-key": (listen + ["--tls-cert", cert, "--tls-key", str(garbage)], "--tls-key"),
        "mismatched-key": (listen + ["--tls-cert", cert, "--tls-key", str(other["key"])],
                           "--tls-key"),
        "cert-alone": (listen + ["--tls-cert", cert], "--tls-cert"),
        "key-alone": (listen + ["--tls-key", key], "--tls-key"),
        "no-listen": (["--tls-cert", cert, "--tls-key", key], "--tls-cert"),
        "bad-addr": (["--tls-listen", "nowhere"], "--tls-listen"),
        "name-with-cert": (listen + ["--tls-cert", cert, "--tls-key", key, "--tls-name", "a.b"],
                           "--tls-name"),
    }[case]
    r = run_flags(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = one_line(r)
    assert line.startswith("statusproxy: " + flag), line
    assert not [m for m in SANITIZER_MARKS if m in r.stderr], r.stderr


def test_key_never_reaches_logs(proxy_factory, backend, pki):
    p = start_tls_listener(proxy_factory, backend.url, pki, args=["--log-level", "debug"])
    with tls_conn(p, pki["ca"]) as c:
        assert c.exchange("GET", "/status/200").status == 200
    raw_connect(p.tls_port).sendall(b"GET / HTTP/1.0\r\n\r\n")
    rows_where(p.db, lambda r: r["error"] == "tls_handshake")
    assert p.stop() == []
    key_body = "".join(pki["key"].read_text().splitlines()[1:-1])
    log = p.stderr().replace("\n", "")
    assert key_body[:40] not in log
    assert "PRIVATE KEY" not in p.stderr()


# -- a certificate minted from the CA ------------------------------------------------


def statusproxy_ca(tmp_path):
    return ca_init(BIN, tmp_path / "spca")


def test_minted_certificate_names(proxy_factory, backend, tmp_path):
    ca = statusproxy_ca(tmp_path)
    p = start_tls_listener(proxy_factory, backend.url, None,
                           args=["--ca-dir", str(ca), "--tls-name", "api.test",
                                 "--tls-name", "Other.Example"])
    cafile = ca / "ca.pem"
    for name in ("localhost", "api.test", "other.example"):
        with tls_conn(p, cafile, server_hostname=name) as c:
            sans = set(c.sock.getpeercert()["subjectAltName"])
            assert c.exchange("GET", "/status/200?body=" + name).body == name.encode()
    assert sans == {("DNS", "localhost"), ("IP Address", "127.0.0.1"), ("DNS", "api.test"),
                    ("DNS", "other.example")}, sans
    # By address (no SNI), verified against the IP SAN.
    with tls_conn(p, cafile, server_hostname="127.0.0.1") as c:
        assert c.exchange("GET", "/status/204").status == 204
    # A name that is not on it is refused by the client: tls_client.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_conn(p, cafile, server_hostname="nope.test")
    rows = rows_where(p.db, lambda r: r["error"] == "tls_client")
    assert rows[0]["host"] == "nope.test"
    ok = rows_where(p.db, lambda r: r["scheme"] == "https" and r["final_code"] in (200, 204), n=4)
    assert len(ok) == 4


def test_minted_without_a_ca_exits_2(tmp_path):
    r = run_flags("--tls-listen", "127.0.0.1:0", "--ca-dir", str(tmp_path / "none"))
    assert r.returncode == 2, r.stderr
    line = one_line(r)
    assert "--ca-dir" in line and str(tmp_path / "none") in line, line


def test_minted_bad_tls_name_exits_2(tmp_path):
    ca = statusproxy_ca(tmp_path)
    r = run_flags("--tls-listen", "127.0.0.1:0", "--ca-dir", str(ca), "--tls-name", "a b")
    assert r.returncode == 2, r.stderr
    assert one_line(r).startswith("statusproxy: --tls-name: "), r.stderr
