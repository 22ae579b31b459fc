"""The run flags that bound the proxy (DESIGN §1): --allow, --max-connections,
--idle-timeout (both sides) and --connect-timeout, through the real binary."""

import socket
import time

from helpers import HttpConn, check_synthesized, wait_exchanges


def _conn_from(port, source_ip):
    """A client connection whose source address is SOURCE_IP (any 127/8 works
    on Linux loopback)."""
    c = HttpConn.__new__(HttpConn)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=(source_ip, 0))
    c.buf = bytearray()
    c.eof = False
    c.port = port
    return c


def test_allow_refuses_other_clients_with_403(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--allow", "127.0.0.2/32"])
    c = _conn_from(p.port, "127.0.0.2")
    r = c.exchange("GET", "/status/200?body=in")
    assert (r.status, r.body) == (200, b"in")
    c.sock.close()
    c = _conn_from(p.port, "127.0.0.3")
    r = c.exchange("GET", "/status/200?body=in")
    assert check_synthesized(r, 403, "Forbidden") == []
    assert c.closed_by_peer(2.0), "a refused client's connection stays open"
    c.sock.close()
    assert backend.requests == 1


def test_allow_is_loopback_by_default_and_repeatable(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--allow", "127.0.0.5", "--allow", "::1/128"])
    for ip, want in (("127.0.0.5", 200), ("127.0.0.6", 403)):
        c = _conn_from(p.port, ip)
        assert c.exchange("GET", "/status/200").status == want, ip
        c.sock.close()
    q = proxy_factory(upstream=backend.url)
    c = _conn_from(q.port, "127.0.0.9")  # loopback: allowed without --allow
    assert c.exchange("GET", "/status/200").status == 200
    c.sock.close()


def test_max_connections_answers_503_past_the_limit(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--max-connections", "2"])
    time.sleep(0.3)  # the readiness probe's connection is gone
    held = [HttpConn(p.port), HttpConn(p.port)]
    for c in held:
        assert c.exchange("GET", "/status/200").status == 200
    extra = HttpConn(p.port)
    r = extra.read_response(timeout=5)
    assert check_synthesized(r, 503, "Service Unavailable") == []
    assert r.get("Retry-After") == "1"
    assert extra.closed_by_peer(2.0)
    extra.sock.close()
    # Below the limit again, a new client is served.
    held.pop().sock.close()
    time.sleep(0.3)
    c = HttpConn(p.port)
    assert c.exchange("GET", "/status/200").status == 200
    for c2 in held + [c]:
        c2.sock.close()
    rows = wait_exchanges(p.db, lambda rs: any(r["error"] == "max_connections" for r in rs))
    assert [r["final_code"] for r in rows if r["error"] == "max_connections"] == [503]


def test_idle_timeout_closes_idle_clients_and_pooled_upstreams(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--idle-timeout", "1s"])
    c = HttpConn(p.port)
    assert c.exchange("GET", "/status/200?body=x").status == 200
    t0 = time.monotonic()
    assert not c.closed_by_peer(0.5), "closed before the idle timeout"
    assert c.closed_by_peer(3.0), "an idle client connection stayed open"
    assert 0.8 <= time.monotonic() - t0 <= 3.0
    # The pooled upstream connection went the same way.
    assert backend.wait_for(lambda b: b.open_connections() == 0, timeout=3.0), \
        "the idle pooled upstream connection stayed open"
    c.sock.close()


def test_connect_timeout_is_504(proxy_factory, tmp_path):
    """A backend whose accept queue is full never completes the handshake:
    --connect-timeout 1s gives 504 with error connect_timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    try:
        p = proxy_factory(upstream="http://127.0.0.1:%d" % port,
                          args=["--connect-timeout", "1s"])
        c = HttpConn(p.port)
        t0 = time.monotonic()
        r = c.exchange("GET", "/x")
        elapsed = time.monotonic() - t0
        assert check_synthesized(r, 504, "Gateway Timeout") == []
        assert 0.8 <= elapsed <= 3.0, "504 after %.2fs, expected about 1s" % elapsed
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1)
        assert [(x["final_code"], x["upstream_code"], x["error"]) for x in rows] == \
            [(504, None, "connect_timeout")]
    finally:
        for s in fillers:
            s.close()
        srv.close()
