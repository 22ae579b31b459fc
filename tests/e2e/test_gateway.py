"""Gateway mode (--upstream): what passes through must pass untouched —
statuses and reason phrases, bodies in every framing, keep-alive on both
sides — while hop-by-hop headers are dropped and Via is added
(DESIGN §2)."""

import hashlib
import json
import socket
import time
import urllib.parse

import pytest

from backend import det_bytes, det_chunks, det_sha256, phrase
from helpers import check_synthesized, via_entries

HOSTNAME = socket.gethostname()


def q(s):
    return urllib.parse.quote(s, safe="")


# -- statuses ---------------------------------------------------------------------


def test_every_final_status_passes_through_with_its_reason(proxy, backend):
    """200-599, standard and not, on one keep-alive connection: the client
    sees the backend's status and reason phrase byte for byte (including
    phrases the catalogue spells differently, custom and empty ones, HTAB
    and obs-text, all allowed by RFC 9112 §4)."""
    mismatches = []
    with proxy.conn() as c:
        for code in range(200, 600):
            if code % 10 == 7:
                reason = "Custom Reason"
            elif code in (250, 451):
                reason = ""
            elif code == 299:
                reason = "Caf\u00e9 \u00fcber"   # obs-text, sent as latin-1 bytes
            elif code == 298:
                reason = "Tab\there  two spaces"
            else:
                reason = phrase(code)
            target = "/status/%d?reason=%s" % (code, q(reason))
            # 204/304 have no body; 205 must have none either (RFC 9110 §15.3.6).
            body = b"" if code in (204, 205, 304) else b"c%d" % code
            if body:
                target += "&body=" + body.decode()
            r = c.exchange("GET", target)
            if (r.status, r.reason, r.body) != (code, reason, body):
                mismatches.append("%d %r: got %s %r body %r" % (code, reason, r.status, r.reason,
                                                                  r.body))
        assert not c.closed_by_peer(0.2), "proxy closed the client connection"
    assert mismatches == []
    assert backend.requests == 400


def test_interim_1xx_are_relayed_before_the_final_answer(proxy, backend):
    """Every 1xx but 101 sent ahead of a final 200 reaches the client with its
    code and reason (RFC 9110 §15.2: a proxy forwards 1xx responses)."""
    problems = []
    with proxy.conn() as c:
        for code in [100] + list(range(102, 200)):
            r = c.exchange("GET", "/status/200?body=ok&early=%d" % code)
            got = [(i.status, i.reason) for i in r.interim]
            if got != [(code, phrase(code))] or (r.status, r.body) != (200, b"ok"):
                problems.append("early %d: interim %r final %s %r" % (code, got, r.status, r.body))
        r = c.exchange("GET", "/status/200?early=100,103")
        assert [i.status for i in r.interim] == [100, 103]
        assert r.interim[1].get("Link") == "</e2e.css>; rel=preload"
    assert problems == []


def test_101_is_not_relayed_to_a_request_that_did_not_ask_to_upgrade(proxy, backend):
    """A backend answering 101 to a request without Upgrade breaks the
    protocol (RFC 9110 §15.2.2): the client must not be switched; the
    proxy reports a bad upstream answer (502)."""
    with proxy.conn() as c:
        r = c.exchange("GET", "/status/101", allow_incomplete=True)
    assert r.status != 101
    assert r.status == 502


def test_upgrade_becomes_a_byte_tunnel(proxy, backend):
    with proxy.conn() as c:
        c.request("GET", "/status/101", headers=[("Connection", "Upgrade"), ("Upgrade", "echo")])
        r = c.read_response()
        assert r.status == 101
        c.send(b"hello tunnel")
        got = b""
        c.sock.settimeout(5)
        while len(got) < 12:
            data = c.sock.recv(100)
            assert data, "tunnel closed"
            got += data
        assert got == b"hello tunnel"
    log = backend.log[0]
    assert [v.lower() for n, v in log["headers"] if n.lower() == "upgrade"] == ["echo"]


# -- HEAD, 204, 304 -----------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/status/200?body=hello",
    "/status/404?size=1000",
    "/stream?size=5000&chunked=1",
])
def test_head_has_get_headers_and_no_body(proxy, backend, target):
    with proxy.conn() as c:
        g = c.exchange("GET", target)
        h = c.exchange("HEAD", target)
        assert h.status == g.status
        strip = lambda hs: [(n.lower(), v) for n, v in hs if n.lower() != "date"]
        assert strip(h.headers) == strip(g.headers)
        # Nothing after the HEAD answer's head: the next answer starts at once.
        after = c.exchange("GET", "/status/201?body=next")
        assert (after.status, after.body) == (201, b"next")
        assert after.raw.startswith(b"HTTP/1.1 201 ")


@pytest.mark.parametrize("target", [
    "/status/204",
    "/status/304",
    "/status/304?hdr=Content-Length:100&hdr=ETag:%22v1%22",
    "/status/204?hdr=Cache-Control:no-store",
])
def test_204_and_304_arrive_without_body(proxy, backend, target):
    with proxy.conn() as c:
        r = c.exchange("GET", target)
        assert r.status in (204, 304)
        assert not any(v.lower() == "chunked" for v in r.tokens("Transfer-Encoding"))
        if r.status == 204:
            assert not r.has("Content-Length")
        # A body (or chunked framing) sent anyway would garble the next answer.
        nxt = c.exchange("GET", "/status/200?body=after")
        assert nxt.raw.startswith(b"HTTP/1.1 200 ")
        assert nxt.body == b"after"


# -- bodies -------------------------------------------------------------------------


def test_chunked_response_is_relayed_intact(proxy, backend):
    with proxy.conn() as c:
        r = c.exchange("GET", "/stream?size=200000&chunked=1&chunk=777")
        assert r.status == 200
        assert r.body_len == 200000 and r.body_sha256 == det_sha256(200000)
        r = c.exchange("GET", "/stream?size=0&chunked=1")
        assert r.body == b""
        r = c.exchange("GET", "/status/200?body=still-alive")
        assert r.body == b"still-alive"


def test_close_delimited_response_is_relayed_intact(proxy, backend):
    with proxy.conn() as c:
        r = c.exchange("GET", "/status/200?size=50000&close=1")
        assert r.body == det_bytes(50000)


def test_chunked_request_reaches_backend_correctly_framed(proxy, backend):
    data = det_bytes(100000)
    with proxy.conn() as c:
        r = c.exchange("POST", "/sink", body=data, chunked=True, chunk=1000)
        assert r.status == 200
        assert json.loads(r.body) == {"body_len": 100000,
                                      "sha256": hashlib.sha256(data).hexdigest()}
        r = c.exchange("POST", "/sink", body=b"", chunked=True)
        assert json.loads(r.body)["body_len"] == 0
    log = backend.log
    assert [e["bad"] for e in log] == [None, None]
    assert log[0]["body_framing"] in ("chunked", "length")
    assert log[0]["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_1mib_bodies_both_ways(proxy, backend):
    n = 1 << 20
    data = det_bytes(n)
    with proxy.conn() as c:
        r = c.exchange("POST", "/sink", body=data)
        assert json.loads(r.body) == {"body_len": n, "sha256": det_sha256(n)}
        r = c.exchange("GET", "/stream?size=%d" % n)
        assert r.framing == "length" and r.body == data
        r = c.exchange("GET", "/stream?size=%d&chunked=1&chunk=65536" % n)
        assert r.body == data
    assert backend.log[0]["body_len"] == n


GIB = 1 << 30
# The bound holds for the ASan build too (measured: ~5 MiB plain, ~14 MiB
# under ASan for either direction), so one number serves both.
RSS_LIMIT_KIB = 64 * 1024


def _stalling_sink(after, seconds):
    """A body sink that stops reading for SECONDS once AFTER bytes came, so
    the proxy has to hold back the upstream instead of buffering."""
    state = {"got": 0, "stalled": False}

    def sink(mv):
        state["got"] += len(mv)
        if not state["stalled"] and state["got"] >= after:
            state["stalled"] = True
            time.sleep(seconds)
    return sink


@pytest.mark.slow
def test_1gib_download_streams_in_bounded_memory(proxy, backend, record_property):
    with proxy.conn(timeout=60) as c:
        r = c.exchange("GET", "/stream?size=%d&chunked=1&chunk=262144" % GIB,
                       sink=_stalling_sink(1 << 20, 1.0), timeout=60)
        assert r.body_len == GIB
        assert r.body_sha256 == det_sha256(GIB)
        hwm = proxy.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm


@pytest.mark.slow
def test_1gib_upload_streams_in_bounded_memory(proxy, backend, record_property):
    # The backend waits 1 s before reading: the proxy must stop reading the
    # client meanwhile rather than buffer what the client sends.
    with proxy.conn(timeout=60) as c:
        c.request("POST", "/sink?start_delay_ms=1000", body=det_chunks(GIB), content_length=GIB)
        r = c.read_response(timeout=60)
        assert json.loads(r.body) == {"body_len": GIB, "sha256": det_sha256(GIB)}
        hwm = proxy.vm_hwm_kib()
    record_property("vm_hwm_kib", hwm)
    assert hwm < RSS_LIMIT_KIB, "proxy VmHWM %d KiB" % hwm


# -- keep-alive, pipelining, HTTP/1.0 ---------------------------------------------------


def test_keepalive_50_requests_one_connection_each_side(proxy, backend):
    with proxy.conn() as c:
        for i in range(50):
            r = c.exchange("GET", "/status/200?body=r%d" % i)
            assert r.body == b"r%d" % i
            assert "close" not in r.tokens("Connection")
        assert not c.closed_by_peer(0.2)
    assert backend.requests == 50
    assert backend.connections <= 2, "backend saw %d connections" % backend.connections


def test_sequential_clients_reuse_upstream_connections(proxy, backend):
    for i in range(10):
        with proxy.conn() as c:
            assert c.exchange("GET", "/status/200").status == 200
    assert backend.connections <= 2, "backend saw %d connections" % backend.connections


def test_pipelined_requests_are_answered_in_order(proxy, backend):
    with proxy.conn() as c:
        c.send(b"GET /slow?head_delay_ms=200 HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /status/201?body=b HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"HEAD /status/202?body=c HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /status/203?body=d HTTP/1.1\r\nHost: e2e.test\r\n\r\n")
        got = [c.read_response(), c.read_response(), c.read_response("HEAD"),
               c.read_response()]
    assert [(r.status, r.body) for r in got] == [(200, b"slow\n"), (201, b"b"), (202, b""),
                                                 (203, b"d")]


def test_http10_client_gets_no_chunked_framing(proxy, backend):
    with proxy.conn() as c:
        r = c.exchange("GET", "/stream?size=5000&chunked=1", version="HTTP/1.0")
        assert r.framing in ("length", "close")
        assert r.body == det_bytes(5000)


def test_http10_client_gets_no_interim_responses(proxy, backend):
    """RFC 9110 §15.2: a proxy does not forward 1xx to an HTTP/1.0 client."""
    with proxy.conn() as c:
        r = c.exchange("GET", "/status/200?body=ok&early=100,103", version="HTTP/1.0")
    assert r.interim == [] and (r.status, r.body) == (200, b"ok")


def test_client_connection_close_is_honoured(proxy, backend):
    with proxy.conn() as c:
        r = c.exchange("GET", "/status/200?body=bye", headers=[("Connection", "close")])
        assert r.body == b"bye"
        assert "close" in r.tokens("Connection")
        assert c.closed_by_peer(2.0), "proxy kept the connection after Connection: close"


def test_upstream_connection_close_is_not_reused(proxy, backend):
    """An upstream answer with Connection: close ends that upstream
    connection; the next request must not be sent on it."""
    with proxy.conn() as c:
        for i in range(10):
            r = c.exchange("GET", "/status/200?conn_close=1&body=a%d" % i)
            assert (r.status, r.body) == (200, b"a%d" % i)
            assert "close" not in r.tokens("Connection")
            r = c.exchange("GET", "/status/200?body=b%d" % i)
            assert (r.status, r.body) == (200, b"b%d" % i)


def test_idle_upstream_connection_closed_by_backend_is_not_reused(proxy, backend):
    """A backend closing an idle keep-alive connection (its idle timeout)
    must not turn the next request into an error."""
    with proxy.conn() as c:
        for i in range(5):
            r = c.exchange("GET", "/status/200?linger_close_ms=50")
            assert r.status == 200
            time.sleep(0.3)
            r = c.exchange("GET", "/status/200?body=again%d" % i)
            assert (r.status, r.body) == (200, b"again%d" % i)


def test_chunked_request_with_extensions_and_trailers(proxy, backend):
    with proxy.conn() as c:
        c.send(b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Trail: t\r\n\r\n")
        r = c.read_response()
        assert json.loads(r.body) == {"body_len": 11,
                                      "sha256": hashlib.sha256(b"hello world").hexdigest()}
        # The connection is still in step after the trailer section.
        assert c.exchange("GET", "/status/200?body=next").body == b"next"


def test_max_forwards_zero_options_is_answered_by_the_proxy(proxy, backend):
    """RFC 9110 §7.6.2: with Max-Forwards 0 the proxy responds as the final
    recipient and does not forward."""
    with proxy.conn() as c:
        r = c.exchange("OPTIONS", "/echo", headers=[("Max-Forwards", "0")])
    assert r.status == 200
    assert "GET" in r.get("Allow") and "TRACE" not in r.get("Allow")
    time.sleep(0.1)
    assert backend.snapshot()["requests"] == 0


def test_max_forwards_zero_trace_is_refused_by_default(proxy, backend):
    """TRACE is refused with 405 by default (issue 3): echoing requests back
    can leak credentials through cross-site tracing."""
    with proxy.conn() as c:
        r = c.exchange("TRACE", "/echo", headers=[("Max-Forwards", "0")])
    assert check_synthesized(r, 405, "Method Not Allowed") == []
    assert "TRACE" not in r.get("Allow")
    time.sleep(0.1)
    assert backend.snapshot()["requests"] == 0


def test_max_forwards_zero_trace_echoes_with_allow_trace(proxy_factory, backend):
    """With --allow-trace the proxy answers as the final recipient: 200,
    message/http, the request echoed without credentials."""
    p = proxy_factory(upstream=backend.url, args=["--allow-trace"])
    with p.conn() as c:
        r = c.exchange("TRACE", "/echo?x=1", headers=[("Max-Forwards", "0"), ("X-Probe", "p1"),
                                                      ("Cookie", "secret=1")])
    assert r.status == 200
    assert r.get("Content-Type") == "message/http"
    assert r.body.startswith(b"TRACE /echo?x=1 HTTP/1.1\r\n")
    assert b"X-Probe: p1\r\n" in r.body and b"secret" not in r.body
    time.sleep(0.1)
    assert backend.snapshot()["requests"] == 0


def test_max_forwards_is_decremented_for_options_only(proxy, backend):
    with proxy.conn() as c:
        c.exchange("OPTIONS", "/echo", headers=[("Max-Forwards", "3")])
        c.exchange("GET", "/echo", headers=[("Max-Forwards", "0")])
    mf = [[v for n, v in e["headers"] if n.lower() == "max-forwards"] for e in backend.log]
    assert mf == [["2"], ["0"]]


def test_expect_100_continue(proxy, backend):
    with proxy.conn() as c:
        c.send(b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        c.sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            data = c.sock.recv(1)
            assert data, "closed before 100 Continue"
            head += data
        assert head.startswith(b"HTTP/1.1 100 ")
        c.send(b"hello")
        r = c.read_response()
        assert json.loads(r.body)["body_len"] == 5


# -- headers ------------------------------------------------------------------------


HOP_REQUEST = [
    ("Connection", "X-Drop-Me, keep-alive"),
    ("X-Drop-Me", "1"),
    ("connection", "x-drop-TWO"),   # a second Connection line, other case
    ("X-DROP-two", "2"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Trail"),
    ("Upgrade", "h2c"),
    ("X-Keep", "yes"),
]


def test_hop_by_hop_request_headers_do_not_reach_backend(proxy, backend):
    with proxy.conn() as c:
        r = c.exchange("GET", "/echo", headers=HOP_REQUEST)
        assert r.status == 200
    seen = json.loads(r.body)["headers"]
    names = [n.lower() for n, _ in seen]
    for h in ("x-drop-me", "x-drop-two", "keep-alive", "proxy-connection", "te", "trailer",
              "upgrade"):
        assert h not in names, "%s reached the backend: %r" % (h, seen)
    conn_tokens = [t.strip().lower() for n, v in seen if n.lower() == "connection"
                   for t in v.split(",")]
    assert "x-drop-me" not in conn_tokens and "x-drop-two" not in conn_tokens, seen
    assert ["yes"] == [v for n, v in seen if n.lower() == "x-keep"]


def test_hop_by_hop_response_headers_do_not_reach_client(proxy, backend):
    hdrs = ["Connection:X-Drop-Me", "X-Drop-Me:1", "connection:x-drop-TWO", "X-DROP-two:2",
            "Keep-Alive:timeout=5",
            "Proxy-Connection:keep-alive", "TE:trailers", "Trailer:X-Trail", "Upgrade:h2c",
            "X-Keep:yes"]
    target = "/status/200?body=x&" + "&".join("hdr=" + q(h) for h in hdrs)
    with proxy.conn() as c:
        r = c.exchange("GET", target)
    names = [n.lower() for n, _ in r.headers]
    for h in ("x-drop-me", "x-drop-two", "keep-alive", "proxy-connection", "te", "trailer",
              "upgrade"):
        assert h not in names, "%s reached the client: %r" % (h, r.headers)
    assert "x-drop-me" not in r.tokens("Connection")
    assert "x-drop-two" not in r.tokens("Connection")
    assert r.get_all("X-Keep") == ["yes"]


def _our_via(proxy):
    return "1.1 %s:%d (statusproxy)" % (HOSTNAME, proxy.port)


def test_via_added_to_request(proxy, backend):
    with proxy.conn() as c:
        c.exchange("GET", "/echo")
        c.exchange("GET", "/echo", headers=[("Via", "1.0 fred, 1.1 example.com (Apache/1.1)")])
    first, second = backend.log
    via1 = via_entries(v for n, v in first["headers"] if n.lower() == "via")
    via2 = via_entries(v for n, v in second["headers"] if n.lower() == "via")
    assert via1 == [_our_via(proxy)]
    assert via2 == ["1.0 fred", "1.1 example.com (Apache/1.1)", _our_via(proxy)]


def test_via_added_to_response(proxy, backend):
    with proxy.conn() as c:
        r1 = c.exchange("GET", "/status/200")
        r2 = c.exchange("GET", "/status/200?hdr=" + q("Via:1.1 origin-cache"))
    assert via_entries(r1.get_all("Via")) == [_our_via(proxy)]
    assert via_entries(r2.get_all("Via")) == ["1.1 origin-cache", _our_via(proxy)]


def test_host_and_target_pass_unchanged(proxy, backend):
    target = "/echo?a=1&b=%20x&c=%2F&d=/x/../y"
    with proxy.conn() as c:
        c.exchange("GET", target, host="Example.TEST:8443")
    log = backend.log[0]
    assert [v for n, v in log["headers"] if n.lower() == "host"] == ["Example.TEST:8443"]
    assert log["target"] == target
    assert log["method"] == "GET"


def test_end_to_end_headers_keep_order_and_duplicates(proxy, backend):
    hdrs = [("X-A", "1"), ("X-B", "2"), ("x-a", "3"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    with proxy.conn() as c:
        c.exchange("GET", "/echo", headers=hdrs)
    seen = [(n, v) for n, v in backend.log[0]["headers"]
            if n.lower() in ("x-a", "x-b", "cookie")]
    assert [(n.lower(), v) for n, v in seen] == [(n.lower(), v) for n, v in hdrs]


def test_curl_through_proxy(proxy, backend):
    import subprocess
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", "http://127.0.0.1:%d/status/418?body=tea" % proxy.port],
        capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/1.1 418 I'm a Teapot\r\n")
    assert out.stdout.endswith(b"\r\n\r\ntea")
