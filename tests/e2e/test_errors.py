"""Errors map to the codes the standard names (DESIGN §2), with the
proxy's own answer shape (`Content-Type: text/plain`, body `CODE Reason\\n`),
and request smuggling shapes never reach the backend."""

import time

import pytest

from backend import det_bytes
from helpers import ConnectionClosed, check_synthesized


def test_upstream_refused_is_502(proxy_factory, refused_port):
    p = proxy_factory(upstream="http://127.0.0.1:%d" % refused_port)
    with p.conn() as c:
        r = c.exchange("GET", "/anything")
    assert check_synthesized(r, 502, "Bad Gateway") == []


@pytest.mark.parametrize("mode", ["garbage", "badstatus", "close-before-head", "two-cl", "bad-cl"])
def test_malformed_upstream_response_is_502(proxy, backend, mode):
    """Invalid Content-Length in a response included: RFC 9112 §6.3 asks a
    proxy to discard it and answer 502."""
    with proxy.conn() as c:
        r = c.exchange("GET", "/raw/" + mode)
    assert check_synthesized(r, 502, "Bad Gateway") == []


@pytest.mark.parametrize("code", ["000", "099", "600", "999"])
def test_upstream_status_outside_100_599_is_502(proxy, backend, code):
    with proxy.conn() as c:
        r = c.exchange("GET", "/status/%s?body=nope" % code)
    assert check_synthesized(r, 502, "Bad Gateway") == []
    assert backend.requests == 1


def test_upstream_response_timeout_is_504(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--response-timeout", "1s"])
    with p.conn() as c:
        t0 = time.monotonic()
        r = c.exchange("GET", "/hang", timeout=10)
        elapsed = time.monotonic() - t0
    assert check_synthesized(r, 504, "Gateway Timeout") == []
    assert 0.8 <= elapsed <= 3.0, "504 after %.2fs, expected about 1s" % elapsed


def test_request_head_timeout_is_408(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--header-timeout", "1s"])
    with p.conn() as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\n")
        r = c.read_response(timeout=10)
        elapsed = time.monotonic() - t0
    assert check_synthesized(r, 408, "Request Timeout") == []
    assert 0.8 <= elapsed <= 3.0, "408 after %.2fs, expected about 1s" % elapsed
    assert backend.requests == 0


def test_origin_form_without_upstream_is_400(proxy_factory):
    """Without --upstream an origin-form request cannot be routed: 400, whose
    body starts as every synthesized answer does and then says how to use
    the proxy (forward mode, or --upstream)."""
    p = proxy_factory()
    with p.conn() as c:
        r = c.exchange("GET", "/echo")
    assert r.status == 400
    assert r.get("Content-Type").split(";")[0] == "text/plain"
    assert r.body.startswith(b"400 Bad Request\n")
    help_text = r.body.decode()
    assert "--upstream" in help_text and "curl -x" in help_text and "HTTP_PROXY" in help_text


MALFORMED = {
    "bad-header-token": b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\nX(Bad): 1\r\n\r\n",
    "space-before-colon-host": b"GET /echo HTTP/1.1\r\nHost : e2e.test\r\n\r\n",
    "space-before-colon": b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\nX-A : 1\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /echo HTTP/1.1\nHost: e2e.test\n\n",
    "bare-lf-in-headers": b"GET /echo HTTP/1.1\r\nHost: e2e.test\nX-A: 1\r\n\r\n",
    "bad-method-token": b"G(T /echo HTTP/1.1\r\nHost: e2e.test\r\n\r\n",
    "bad-version": b"GET /echo HTTP/1.x\r\nHost: e2e.test\r\n\r\n",
    "missing-host": b"GET /echo HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    "cl-and-te": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-not-last": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\n"
                           b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST /sink HTTP/1.0\r\nHost: e2e.test\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-content-lengths": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 5\r\n"
                           b"Content-Length: 6\r\n\r\nhello!",
    "bad-content-length": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 5x\r\n\r\nhello",
    "negative-content-length": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\n"
                               b"Content-Length: -1\r\n\r\n",
    "invalid-chunk-size": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "chunk-without-crlf": b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_400_and_never_forwarded(proxy, backend, name):
    with proxy.conn(timeout=5) as c:
        c.send(MALFORMED[name])
        r = c.read_response()
    assert check_synthesized(r, 400, "Bad Request") == []
    time.sleep(0.2)  # anything forwarded would have arrived by now
    snap = backend.snapshot()
    assert (snap["requests"], snap["bytes_received"]) == (0, 0), \
        "backend saw: %r" % [e["raw_head"] for e in snap["log"]]


@pytest.mark.parametrize("mode", ["close-mid-body", "truncated-chunked"])
def test_upstream_closing_mid_body_is_visible_to_client(proxy, backend, mode):
    """The client must be able to tell: the announced length not reached or
    the chunked body unterminated, before the connection closes — never a
    clean, complete short answer."""
    with proxy.conn(timeout=5) as c:
        c.request("GET", "/raw/" + mode)
        try:
            r = c.read_response(allow_incomplete=True)
        except ConnectionClosed:
            return  # closed before any answer: the client can tell
        if r.status == 502:
            assert check_synthesized(r, 502, "Bad Gateway") == []
            return
        assert r.status == 200
        assert not r.complete, "a truncated upstream body reached the client as a complete " \
                               "answer: %r" % r.raw
        sent = det_bytes(10) if mode == "close-mid-body" else b"0123456789"
        assert sent.startswith(r.body), "body %r is not what the upstream sent" % r.body


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb"], ids=["nul", "bare-cr"])
def test_nul_or_bare_cr_in_a_value_never_reaches_backend(proxy, backend, value):
    """RFC 9110 §5.5 / RFC 9112 §2.2: such a message is rejected (400), or
    the character is replaced by SP before forwarding — never passed on."""
    with proxy.conn(timeout=5) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\nX-A: " + value + b"\r\n\r\n")
        r = c.read_response()
    if r.status == 400:
        assert check_synthesized(r, 400, "Bad Request") == []
        time.sleep(0.2)
        assert backend.snapshot()["bytes_received"] == 0
    else:
        assert r.status == 200
        raw = backend.log[0]["raw_head"]
        assert b"\x00" not in raw and b"\r\n" in raw and b"\r" not in raw.replace(b"\r\n", b""), raw


def test_upstream_obs_fold_is_502_or_unfolded(proxy, backend):
    """RFC 9112 §5.2: a proxy answers 502 or replaces the fold with SP —
    never forwards the fold (the client parser refuses one)."""
    with proxy.conn(timeout=5) as c:
        r = c.exchange("GET", "/raw/obs-fold")
    if r.status == 502:
        assert check_synthesized(r, 502, "Bad Gateway") == []
    else:
        assert r.status == 200 and r.body == b"ok"
        assert r.get("X-Folded").split() == ["a", "b"]


def test_via_loop_is_508_and_not_forwarded(proxy, backend):
    """DESIGN §2: a request whose Via already carries this proxy is a loop."""
    import socket
    own = "1.1 %s:%d (statusproxy)" % (socket.gethostname(), proxy.port)
    with proxy.conn() as c:
        r = c.exchange("GET", "/echo", headers=[("Via", "1.0 other, " + own)])
    assert check_synthesized(r, 508, "Loop Detected") == []
    time.sleep(0.1)
    assert backend.snapshot()["requests"] == 0
