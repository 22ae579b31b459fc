"""HTTP/1.1 as a proxy must speak it (DESIGN §2): pipelined requests
answered in order whatever their speed and size (1000 on one connection),
1xx interim answers relayed to HTTP/1.1 clients only, HTTP/1.0 clients
served without chunked framing and kept alive only when they ask, and
clients or upstreams that vanish mid-exchange handled without dirtying the
upstream pool, with one record each."""

import hashlib
import json
import socket
import struct

import pytest

from backend import det_bytes, det_sha256
from helpers import ConnectionClosed, check_synthesized, wait_exchanges

HOSTNAME = socket.gethostname()
MODES = ["gateway", "forward"]


@pytest.fixture
def mode_proxy(request, proxy_factory, backend):
    """(proxy, prefix): gateway mode (--upstream) or pure forward mode, with
    PREFIX to put before a path so that it reaches the backend."""
    mode = request.param
    p = proxy_factory(upstream=backend.url if mode == "gateway" else None)
    return p, ("" if mode == "gateway" else "http://%s" % backend.authority)


def req(method, target, headers=(), body=None, version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, target, version), "Host: e2e.test"]
    lines += ["%s: %s" % h for h in headers]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def read_head_raw(c, timeout=10):
    """Bytes up to the first blank line, read one at a time so that nothing
    after it is consumed."""
    c.sock.settimeout(timeout)
    head = b""
    while b"\r\n\r\n" not in head:
        d = c.sock.recv(1)
        if not d:
            raise ConnectionClosed("closed after %r" % head)
        head += d
    return head


# -- pipelining -----------------------------------------------------------------------


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_pipelined_slow_and_very_different_answers_keep_their_order(mode_proxy, backend):
    p, pre = mode_proxy
    upload = det_bytes(10000)
    batch = [
        (req("GET", pre + "/slow?head_delay_ms=300"), "GET", 200, b"slow\n"),
        (req("GET", pre + "/stream?size=3000000"), "GET", 200, det_bytes(3000000)),
        (req("GET", pre + "/status/204"), "GET", 204, b""),
        (req("POST", pre + "/sink", body=upload), "POST", 200,
         json.dumps({"body_len": 10000, "sha256": hashlib.sha256(upload).hexdigest()}).encode()),
        (req("GET", pre + "/stream?size=200000&chunked=1&chunk=5000&delay_ms=5"), "GET", 200,
         det_bytes(200000)),
        (req("HEAD", pre + "/status/404?size=50000"), "HEAD", 404, b""),
        (req("GET", pre + "/status/304"), "GET", 304, b""),
        (req("GET", pre + "/status/503?body=last"), "GET", 503, b"last"),
    ]
    with p.conn(timeout=20) as c:
        c.send(b"".join(b[0] for b in batch))
        got = []
        for _, method, _, _ in batch:
            r = c.read_response(method=method)
            got.append((r.status, hashlib.sha256(r.body).hexdigest()))
        assert not c.closed_by_peer(0.2)
    assert got == [(s, hashlib.sha256(b).hexdigest()) for _, _, s, b in batch]
    assert [e["target"].split("?")[0] for e in backend.log] == [
        "/slow", "/stream", "/status/204", "/sink", "/stream", "/status/404", "/status/304",
        "/status/503"]


def test_pipelined_proxy_answers_wait_their_turn(proxy_factory, backend, refused_port):
    """Answers the proxy writes itself (Max-Forwards 0, a loop, an
    unreachable target) come in request order, not before the slow
    backend answers queued ahead of them."""
    p = proxy_factory()
    b = "http://%s" % backend.authority
    batch = [
        (req("GET", b + "/slow?head_delay_ms=400"), 200, b"slow\n"),
        (req("OPTIONS", b + "/x", [("Max-Forwards", "0")]), 200, None),
        (req("GET", b + "/stream?size=100000&chunked=1&chunk=10000&delay_ms=20"), 200,
         det_bytes(100000)),
        (req("GET", b + "/echo", [("Via", "1.1 %s:%d (statusproxy)" % (HOSTNAME, p.port))]),
         508, b"508 Loop Detected\n"),
        (req("GET", "http://127.0.0.1:%d/nothing-here" % refused_port), 502,
         b"502 Bad Gateway\n"),
        (req("TRACE", b + "/x", [("Max-Forwards", "0")]), 405, b"405 Method Not Allowed\n"),
        (req("GET", b + "/status/201?body=end"), 201, b"end"),
    ]
    with p.conn(timeout=20) as c:
        c.send(b"".join(x[0] for x in batch))
        got = [c.read_response() for _ in batch]
    assert [r.status for r in got] == [x[1] for x in batch]
    for r, (_, _, body) in zip(got, batch):
        if body is not None:
            assert r.body == body, r
    assert [e["target"].split("?")[0] for e in backend.log] == ["/slow", "/stream",
                                                                 "/status/201"]


def test_pipelined_requests_behind_a_502_are_answered(proxy_factory, refused_port):
    """An upstream that refuses: each pipelined request gets its 502, or
    the proxy says Connection: close and closes — the client is never
    left waiting on an open, silent connection."""
    p = proxy_factory(upstream="http://127.0.0.1:%d" % refused_port)
    with p.conn(timeout=5) as c:
        c.send(req("GET", "/a") + req("GET", "/b") + req("GET", "/c"))
        for name in "abc":
            r = c.read_response()
            assert check_synthesized(r, 502, "Bad Gateway") == [], name
            if "close" in r.tokens("Connection"):
                assert c.closed_by_peer(2.0), "said close, stayed open"
                break


MIXED_CODES = [200, 201, 204, 299, 301, 304, 400, 404, 418, 429, 451, 499, 500, 502, 503,
               520, 599, 202, 206, 302]


def _mixed(i, pre):
    """Request I of the long run: (bytes, method, status, body)."""
    code = MIXED_CODES[i % len(MIXED_CODES)]
    body = b"" if code in (204, 304) else b"r%d" % i
    target = pre + "/status/%d" % code
    if body:
        target += "?body=r%d" % i
        if i % 7 == 3:
            target += "&chunked=1"
    method = "HEAD" if i % 13 == 5 else "GET"
    return req(method, target), method, code, b"" if method == "HEAD" else body


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_1000_pipelined_requests_one_connection(mode_proxy, backend):
    """1000 requests of mixed statuses, framings and methods, written 50 per
    write on one connection; every answer checked in order, all of them
    recorded."""
    p, pre = mode_proxy
    n, per_write = 1000, 50
    wrong = []
    with p.conn(timeout=30) as c:
        for start in range(0, n, per_write):
            reqs = [_mixed(i, pre) for i in range(start, start + per_write)]
            c.send(b"".join(r[0] for r in reqs))
            for i, (_, method, code, body) in zip(range(start, start + per_write), reqs):
                r = c.read_response(method=method)
                if (r.status, r.body) != (code, body):
                    wrong.append((i, method, code, body, r.status, r.body))
            assert not wrong, wrong[:5]
        assert not c.closed_by_peer(0.2), "the proxy closed the connection"
    assert backend.requests == n
    assert backend.connections <= 2, "backend saw %d connections" % backend.connections
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= n, timeout=10)
    assert len(rows) == n
    want = {}
    for i in range(n):
        want[MIXED_CODES[i % len(MIXED_CODES)]] = want.get(MIXED_CODES[i % len(MIXED_CODES)],
                                                           0) + 1
    got = {}
    for r in rows:
        assert r["upstream_code"] == r["final_code"], r
        got[r["final_code"]] = got.get(r["final_code"], 0) + 1
    assert got == want


# -- 1xx ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_expect_100_continue_reaches_backend_and_100_comes_back_first(mode_proxy, backend):
    """The client holds its body until the 100: the Expect must have
    reached the backend (which answers 100 only then) and the 100 must have
    been relayed before any final answer."""
    p, pre = mode_proxy
    data = det_bytes(20000)
    with p.conn() as c:
        c.send(req("POST", pre + "/sink", [("Expect", "100-continue"),
                                           ("Content-Length", "20000")]))
        head = read_head_raw(c)
        assert head.startswith(b"HTTP/1.1 100 "), head
        c.send(data)
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body) == {"body_len": 20000,
                                      "sha256": hashlib.sha256(data).hexdigest()}
    log = backend.log[0]
    assert [v.lower() for n, v in log["headers"] if n.lower() == "expect"] == ["100-continue"]
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
    assert [(r["upstream_code"], r["final_code"]) for r in rows] == [(200, 200)]


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_103_early_hints_relayed_and_the_final_status_recorded(mode_proxy, backend):
    p, pre = mode_proxy
    with p.conn() as c:
        r = c.exchange("GET", pre + "/status/404?early=103&body=nf")
        assert [(i.status, i.get("Link")) for i in r.interim] == [
            (103, "</e2e.css>; rel=preload")]
        assert (r.status, r.body) == (404, b"nf")
        r = c.exchange("GET", pre + "/status/200?early=100,102,103&body=ok")
        assert [i.status for i in r.interim] == [100, 102, 103]
        assert (r.status, r.body) == (200, b"ok")
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
    assert [(r["upstream_code"], r["final_code"]) for r in rows] == [(404, 404), (200, 200)]


# -- HTTP/1.0 clients -------------------------------------------------------------------


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_http10_gets_chunked_answer_unchunked_then_close(mode_proxy, backend):
    p, pre = mode_proxy
    with p.conn() as c:
        r = c.exchange("GET", pre + "/stream?size=100000&chunked=1&chunk=3000",
                       version="HTTP/1.0")
        assert r.status == 200
        assert r.tokens("Transfer-Encoding") == [], r.headers
        assert r.framing in ("length", "close")
        assert r.body_len == 100000 and r.body_sha256 == det_sha256(100000)
        assert "keep-alive" not in r.tokens("Connection")
        assert c.closed_by_peer(2.0), "HTTP/1.0 client without keep-alive left open"
    # The proxy spoke its own version upstream (RFC 9110 §2.5), so the
    # backend really did answer chunked.
    assert backend.log[0]["version"] == "HTTP/1.1"


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_http10_keep_alive_only_when_asked(mode_proxy, backend):
    p, pre = mode_proxy
    ka = [("Connection", "keep-alive")]
    with p.conn() as c:
        for i in range(3):
            r = c.exchange("GET", pre + "/status/200?body=ka%d" % i, version="HTTP/1.0",
                           headers=ka)
            assert (r.status, r.body) == (200, b"ka%d" % i)
            assert "keep-alive" in r.tokens("Connection"), r.headers
            assert r.framing == "length"
            assert not c.closed_by_peer(0.2), "closed although keep-alive was asked"
        # a chunked upstream answer: either length-framed and still alive, or
        # close-delimited and closed; never both keep-alive and close framing
        r = c.exchange("GET", pre + "/stream?size=5000&chunked=1", version="HTTP/1.0",
                       headers=ka)
        assert r.body == det_bytes(5000)
        if r.framing == "close":
            assert "keep-alive" not in r.tokens("Connection")
        else:
            assert r.framing == "length" and "keep-alive" in r.tokens("Connection")
            # then a request without keep-alive closes it
            r = c.exchange("GET", pre + "/status/200?body=last", version="HTTP/1.0")
            assert r.body == b"last" and "keep-alive" not in r.tokens("Connection")
            assert c.closed_by_peer(2.0)
    with p.conn() as c:
        r = c.exchange("GET", pre + "/status/200?body=plain", version="HTTP/1.0")
        assert r.body == b"plain"
        assert "keep-alive" not in r.tokens("Connection")
        assert c.closed_by_peer(2.0), "HTTP/1.0 client without keep-alive left open"


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_http10_gets_no_interim_responses(mode_proxy, backend):
    p, pre = mode_proxy
    with p.conn() as c:
        r = c.exchange("GET", pre + "/status/200?early=100,103&body=final", version="HTTP/1.0",
                       headers=[("Connection", "keep-alive")])
        assert r.interim == [], "1xx relayed to an HTTP/1.0 client: %r" % r.interim
        assert r.raw.startswith(b"HTTP/1.1 200 ") and r.body == b"final"
        # Expect is ignored for HTTP/1.0 (RFC 9110 §10.1.1): the body comes at once
        c.send(req("POST", pre + "/sink", [("Expect", "100-continue"),
                                           ("Connection", "keep-alive")], body=b"12345",
                   version="HTTP/1.0"))
        r = c.read_response()
        assert r.interim == [], "1xx relayed to an HTTP/1.0 client: %r" % r.interim
        assert json.loads(r.body)["body_len"] == 5


def test_http11_connection_close_is_honoured_in_forward_mode(proxy_factory, backend):
    """RFC 9112 §9.6: after answering a request with Connection: close the
    server closes the connection (test_gateway.py checks gateway mode)."""
    p, pre = proxy_factory(), "http://%s" % backend.authority
    with p.conn() as c:
        r = c.exchange("GET", pre + "/status/200?body=bye", headers=[("Connection", "close")])
        assert (r.status, r.body) == (200, b"bye")
        assert "close" in r.tokens("Connection")
        assert c.closed_by_peer(2.0), "said close, stayed open"


# -- clients that vanish --------------------------------------------------------------


def _abort(c, rst):
    if rst:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def _after_vanish(p, backend, pre, path, conns_before):
    """The backend's connection of the vanished exchange is closed (not put
    back in the pool), the proxy goes on serving, and the exchange has
    exactly one record, error client_closed."""
    assert backend.wait_for(lambda b: b.open_connections() == 0, timeout=5) , \
        "the upstream connection stayed open after the client vanished"
    with p.conn() as c:
        r = c.exchange("GET", pre + "/status/200?body=alive")
        assert (r.status, r.body) == (200, b"alive")
    assert backend.connections == conns_before + 1
    assert backend.log[-1]["conn"] == backend.connections, "reused a dirty upstream connection"
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
    mine = [r for r in rows if r["path"] == path]
    assert len(mine) == 1, rows
    assert mine[0]["error"] == "client_closed", mine[0]
    return mine[0]


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_client_closes_mid_request_body(mode_proxy, backend, rst):
    p, pre = mode_proxy
    head = req("POST", pre + "/sink", [("Content-Length", "1000000")])
    with p.conn() as c:
        c.send(head + det_bytes(20000))
        assert backend.wait_for(lambda b: b.bytes_received >= 20000, timeout=5), \
            "the request body did not start flowing upstream"
        _abort(c, rst)
    row = _after_vanish(p, backend, pre, "/sink", 1)
    assert row["final_code"] is None, row


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_client_closes_mid_response_body(mode_proxy, backend, rst):
    p, pre = mode_proxy
    with p.conn() as c:
        c.send(req("GET", pre + "/stream?size=50000000&chunk=16384&delay_ms=10"))
        got = [0]

        def sink(mv):
            got[0] += len(mv)
            if got[0] >= 50000:
                raise _Enough()

        with pytest.raises(_Enough):
            c.read_response(sink=sink)
        _abort(c, rst)
    row = _after_vanish(p, backend, pre, "/stream", 1)
    assert row["bytes_out"] >= 50000, row


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_client_closes_while_waiting_for_the_answer(mode_proxy, backend):
    p, pre = mode_proxy
    with p.conn() as c:
        c.send(req("GET", pre + "/hang"))
        assert backend.wait_for(lambda b: b.requests == 1, timeout=5)
    row = _after_vanish(p, backend, pre, "/hang", 1)
    assert row["final_code"] is None, row


class _Enough(Exception):
    pass


# -- upstreams that vanish ------------------------------------------------------------


@pytest.mark.parametrize("raw", ["close-mid-body", "truncated-chunked"])
@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_upstream_closing_mid_body_is_visible_to_client(mode_proxy, backend, raw):
    """Never a clean, complete short answer: the client sees the connection
    close before the announced length, or a chunked body without its last
    chunk (or, before any byte, a 502)."""
    p, pre = mode_proxy
    with p.conn(timeout=5) as c:
        c.request("GET", pre + "/raw/" + raw)
        r = c.read_response(allow_incomplete=True)
        if r.status == 502:
            assert check_synthesized(r, 502, "Bad Gateway") == []
        else:
            assert r.status == 200
            assert not r.complete, "truncated upstream body relayed as complete: %r" % r.raw
            assert c.closed_by_peer(2.0)
    with p.conn() as c:  # and the proxy goes on
        assert c.exchange("GET", pre + "/status/200?body=ok").body == b"ok"


@pytest.mark.parametrize("mode_proxy", MODES, indirect=True)
def test_upstream_closing_mid_body_is_visible_to_http10_client(mode_proxy, backend):
    """With a Content-Length from upstream the HTTP/1.0 client can tell too:
    the length must be passed on, not turned into a close-delimited body."""
    p, pre = mode_proxy
    with p.conn(timeout=5) as c:
        c.request("GET", pre + "/raw/close-mid-body", version="HTTP/1.0")
        r = c.read_response(allow_incomplete=True)
    assert r.status == 200
    assert r.framing == "length", r
    assert not r.complete and r.body == det_bytes(10)
