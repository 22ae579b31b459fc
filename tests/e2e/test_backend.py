"""The test backend itself, checked directly (no proxy): if these fail, the
other tests' verdicts mean nothing."""
import hashlib
import json
import socket
import subprocess
import time

import pytest

from backend import det_bytes, det_sha256
from helpers import HttpConn, ProtocolError, raw_exchange


def test_status_reason_body_and_keepalive(backend):
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/status/299?reason=Custom%20Reason&body=hello")
        assert (r.status, r.reason, r.body) == (299, "Custom Reason", b"hello")
        r = c.exchange("GET", "/status/418")
        assert (r.status, r.reason) == (418, "I'm a Teapot")
        r = c.exchange("GET", "/status/599")
        assert (r.status, r.reason) == (599, "Custom")
        r = c.exchange("HEAD", "/status/200?size=100")
        assert r.get("Content-Length") == "100" and r.body == b""
        r = c.exchange("GET", "/status/204")
        assert r.status == 204 and not r.has("Content-Length")
    assert backend.connections == 1
    assert backend.wait_for(lambda b: b.responses == 5)


def test_invalid_codes_and_interim(backend):
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/status/000")
        assert r.status_line == b"HTTP/1.1 000 Custom"
        r = c.exchange("GET", "/status/200?early=100,103,150")
        assert [i.status for i in r.interim] == [100, 103, 150]
        assert r.status == 200


def test_chunked_close_and_stream(backend):
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/stream?size=100000&chunked=1&chunk=1000")
        assert r.framing == "chunked" and r.body == det_bytes(100000)
        assert r.body_sha256 == det_sha256(100000)
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/status/200?body=abc&close=1")
        assert r.framing == "close" and r.body == b"abc"


def test_sink_and_echo(backend):
    data = det_bytes(300000)
    with HttpConn(backend.port) as c:
        r = c.exchange("POST", "/sink", body=data, chunked=True, chunk=7000)
        assert json.loads(r.body) == {"body_len": 300000,
                                      "sha256": hashlib.sha256(data).hexdigest()}
        r = c.exchange("POST", "/echo", body=b"xyz", headers=[("X-A", "1"), ("x-a", "2")])
        e = json.loads(r.body)
        assert e["headers"] == [["Host", "e2e.test"], ["X-A", "1"], ["x-a", "2"],
                                ["Content-Length", "3"]]
        assert e["body_len"] == 3
    log = backend.log
    assert log[0]["body_framing"] == "chunked" and log[0]["body_len"] == 300000


def test_http10_and_connection_close(backend):
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/stream?size=10&chunked=1", version="HTTP/1.0")
        assert r.framing == "close" and len(r.body) == 10
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/echo", headers=[("Connection", "close")])
        assert r.get("Connection") == "close"
        assert c.closed_by_peer()


def test_raw_modes(backend):
    for mode in ["close-mid-body", "truncated-chunked"]:
        with HttpConn(backend.port) as c:
            r = c.exchange("GET", "/raw/" + mode, allow_incomplete=True)
            assert not r.complete
    assert raw_exchange(backend.port, b"GET /raw/garbage HTTP/1.1\r\nHost: x\r\n\r\n") \
        .startswith(b"this is not HTTP")
    with HttpConn(backend.port) as c:
        with pytest.raises(ProtocolError):
            c.exchange("GET", "/raw/badstatus")


def test_slow_hang_and_refused(backend, refused_port):
    with HttpConn(backend.port) as c:
        t = time.monotonic()
        c.exchange("GET", "/slow?head_delay_ms=300")
        assert time.monotonic() - t >= 0.3
    with HttpConn(backend.port) as c:
        c.request("GET", "/hang")
        c.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            c.read_response()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused_port), timeout=2)


def test_upgrade_echo(backend):
    with HttpConn(backend.port) as c:
        c.request("GET", "/status/101", headers=[("Connection", "Upgrade"), ("Upgrade", "echo")])
        r = c.read_response()
        assert r.status == 101
        c.send(b"ping")
        assert c.sock.recv(4) == b"ping"


def test_curl_against_backend(backend):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                          backend.url + "/status/503"], capture_output=True, text=True,
                         timeout=10)
    assert out.stdout == "503"


def test_close_modes_and_sink_delay(backend):
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/status/200?conn_close=1&body=x")
        assert r.get("Connection") == "close" and r.framing == "length"
        assert c.closed_by_peer()
    with HttpConn(backend.port) as c:
        r = c.exchange("GET", "/status/200?linger_close_ms=100")
        assert not r.has("Connection") and not c.closed_by_peer(0.05)
        assert c.closed_by_peer(2.0)
    with HttpConn(backend.port) as c:
        t = time.monotonic()
        r = c.exchange("POST", "/sink?start_delay_ms=300", body=b"abc")
        assert time.monotonic() - t >= 0.3 and json.loads(r.body)["body_len"] == 3
    for mode in ["two-cl", "bad-cl", "obs-fold"]:
        with HttpConn(backend.port) as c:
            with pytest.raises(ProtocolError):
                c.exchange("GET", "/raw/" + mode)
