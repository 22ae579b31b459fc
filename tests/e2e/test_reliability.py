"""Connection-core reliability (issue 8, DESIGN §12): tunnel lifetimes, a held
101, the tunnel idle timeout, truncate on a single read, the request-head
limit counted in wire bytes, pipelining after a refused HEAD answer, HEAD
with set-status, a client that stops reading, and Connection lists that
would cost quadratic time.

The origins here are raw sockets (RawOrigin) so that each test controls the
exact bytes and the exact moment they are written. Run against the ASan
build (STATUSPROXY_BIN=build/san/statusproxy) the memory tests fail on the
sanitizer report the proxy fixture checks at exit.
"""

import os
import signal
import socket
import struct
import threading
import time

from helpers import HttpConn, wait_exchanges, wait_until


class RawOrigin:
    """A TCP server on 127.0.0.1 that runs HANDLER(sock) in a thread per
    connection. HANDLER owns the socket."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.accepted = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


def read_head(sock):
    """Read one request head (up to the blank line); returns bytes or b''."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = sock.recv(65536)
        if not d:
            return b""
        data += d
    return data


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def recv_until_closed(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not d:
            return data, True
        data += d


# -- 1. tunnels: shutdown requests outlive the tunnel --------------------------------


class SteppedTarget:
    """A CONNECT target whose connections act only when the test says:
    target.do(i, "shut") half-closes connection i (1-based), "rst" resets it;
    do() returns once done. Connections left alone close after 30 s."""

    def __init__(self):
        self.conns = []
        self.ready = threading.Condition()
        self.origin = RawOrigin(self._handler)
        self.port = self.origin.port

    def _handler(self, s):
        import queue
        q = queue.Queue()
        with self.ready:
            self.conns.append((s, q))
            self.ready.notify_all()
        while True:
            try:
                what, done = q.get(timeout=30)
            except queue.Empty:
                return
            if what == "shut":
                s.shutdown(socket.SHUT_WR)
                done.set()
            elif what == "rst":
                rst_close(s)
                done.set()
                return

    def wait_sock(self, n):
        with self.ready:
            self.ready.wait_for(lambda: len(self.conns) >= n, 5)
            return self.conns[n - 1][0]

    def do(self, n, what):
        self.wait_sock(n)
        done = threading.Event()
        self.conns[n - 1][1].put((what, done))
        assert done.wait(5)

    def stop(self):
        self.origin.stop()
        time.sleep(0.1)
        for _, q in self.conns:
            q.put(("rst", threading.Event()))


def _tunnel(p, target):
    s = socket.socket()
    s.connect(("127.0.0.1", p.port))
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % target.port)
    s.settimeout(5)
    assert s.recv(39).startswith(b"HTTP/1.1 200")
    return s


def _frozen(p, first, second):
    """Run FIRST then SECOND while the proxy is stopped, so that its next
    loop iteration sees both events at once, in that order."""
    os.kill(p.pid, signal.SIGSTOP)
    try:
        first()
        time.sleep(0.02)
        second()
        time.sleep(0.02)
    finally:
        os.kill(p.pid, signal.SIGCONT)


def test_tunnel_target_half_close_then_client_reset_is_memory_safe(proxy_factory):
    """The target half-closes (the proxy starts a shutdown of the client
    side) and the client resets before that shutdown completed: the
    pending shutdown's callback must not run on a freed tunnel (ASan reports
    a heap-use-after-free otherwise)."""
    target = SteppedTarget()
    p = proxy_factory(args=["--connect-ports", str(target.port)])
    try:
        for i in range(1, 41):
            s = _tunnel(p, target)
            _frozen(p, lambda: target.do(i, "shut"), lambda: rst_close(s))
        assert p.proc.poll() is None
        s = _tunnel(p, target)
        target.do(41, "rst")
        s.close()
    finally:
        target.stop()


def test_tunnel_client_half_close_then_target_reset_is_memory_safe(proxy_factory):
    """The mirror case: the client half-closes, then the target resets
    before the proxy's shutdown towards it completed."""
    target = SteppedTarget()
    p = proxy_factory(args=["--connect-ports", str(target.port)])
    try:
        for i in range(1, 41):
            s = _tunnel(p, target)
            _frozen(p, lambda: s.shutdown(socket.SHUT_WR), lambda: target.do(i, "rst"))
            s.close()
        assert p.proc.poll() is None
    finally:
        target.stop()


# -- 2. a delay that holds a 101 --------------------------------------------------


def _upgrade_origin():
    """Answers an Upgrade request with 101 and, in the same write, a first
    frame; then echoes until EOF and closes."""
    def handler(s):
        if not read_head(s):
            return
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                  b"Connection: Upgrade\r\n\r\nHELLO")
        s.settimeout(30)
        while True:
            d = s.recv(65536)
            if not d:
                break
            s.sendall(d)
    return RawOrigin(handler)


UPGRADE_REQ = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\n"
               b"Connection: Upgrade\r\n\r\n")


def _open_upgraded(p):
    s = socket.socket()
    s.connect(("127.0.0.1", p.port))
    s.sendall(UPGRADE_REQ)
    s.settimeout(5)
    data = b""
    while b"HELLO" not in data:
        d = s.recv(65536)
        assert d, data
        data += d
    assert data.startswith(b"HTTP/1.1 101"), data
    return s


def test_delayed_101_with_bytes_behind_it_keeps_the_tunnel_flowing(proxy_factory, tmp_path):
    """A `delay` holds the 101 while the upstream's first bytes wait behind
    it: after the head goes out, the tunnel must read the upstream again
    (before the fix the echo never came), and the client leaving must free
    both sockets (before: CLOSE_WAIT and the upstream socket stayed open)."""
    origin = _upgrade_origin()
    rules = tmp_path / "hold.rules"
    rules.write_text("rule hold path /ws => delay 200ms\n")
    p = proxy_factory(upstream=origin.url, args=["--rules", str(rules)])
    try:
        base = open_fds(p.pid)
        socks = []
        for _ in range(5):
            s = _open_upgraded(p)
            s.sendall(b"ping")
            got = b""
            s.settimeout(3)
            while len(got) < 4:
                d = s.recv(64)
                assert d, got
                got += d
            assert got == b"ping"
            socks.append(s)
        for s in socks:
            s.close()
        assert wait_until(lambda: open_fds(p.pid) <= base, timeout=5), \
            "fds: %d before, %d after the clients left" % (base, open_fds(p.pid))
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 5)
        assert [(r["path"], r["final_code"], r["rule"]) for r in rows] == [("/ws", 101, "hold")] * 5
    finally:
        origin.stop()


# -- 3. --tunnel-idle-timeout ------------------------------------------------------


def test_tunnel_idle_timeout_closes_silent_tunnels(proxy_factory):
    """CONNECT and 101 tunnels close after --tunnel-idle-timeout without a
    byte either way; traffic keeps them open; the record says tunnel_idle."""
    target = SteppedTarget()
    origin = _upgrade_origin()
    p = proxy_factory(upstream=origin.url,
                      args=["--connect-ports", str(target.port), "--tunnel-idle-timeout", "600ms"])
    try:
        busy = _tunnel(p, target)
        t = target.wait_sock(1)
        silent = _tunnel(p, target)
        ws = _open_upgraded(p)
        start = time.monotonic()
        # The busy tunnel sends a byte every 200 ms for 1.5 s: it stays open.
        while time.monotonic() - start < 1.5:
            busy.sendall(b"k")
            time.sleep(0.2)
        data, closed = recv_until_closed(silent, timeout=3)
        assert closed and data == b""
        data, closed = recv_until_closed(ws, timeout=3)
        assert closed and data == b""
        busy.sendall(b"z")
        t.settimeout(2)
        got = b""
        while not got.endswith(b"z"):
            got += t.recv(64)
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
        idle = sorted((r["method"], r["error"]) for r in rows)
        assert idle == [("CONNECT", "tunnel_idle"), ("GET", "tunnel_idle")], rows
    finally:
        target.stop()
        origin.stop()


def test_tunnel_idle_timeout_bad_value_exits_2(statusproxy_bin):
    import subprocess
    r = subprocess.run([statusproxy_bin, "run", "--tunnel-idle-timeout", "soon"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tunnel-idle-timeout" in lines[0], r.stderr


# -- 4. truncate when the whole answer came in one read -----------------------------


BODY100 = bytes(range(48, 48 + 50)) * 2


def _answer_origin(answers):
    """Answers each request head (keep-alive) with ANSWERS[path] in one write."""
    def handler(s):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            s.sendall(answers[path])
    return RawOrigin(handler)


def _truncate_proxy(proxy_factory, tmp_path, origin):
    rules = tmp_path / "cut.rules"
    rules.write_text("rule cut path /cut => truncate 10\n")
    return proxy_factory(upstream=origin.url, args=["--rules", str(rules)])


def _cut_record(p, n=1):
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= n)
    cut = [r for r in rows if r["path"] == "/cut"]
    assert len(cut) == 1, rows
    assert cut[0]["error"] == "truncated" and cut[0]["action"] == "truncate 10", cut[0]
    return rows


def test_truncate_chunked_answer_in_one_read_is_cut(proxy_factory, tmp_path):
    origin = _answer_origin({"/cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"64\r\n" + BODY100 + b"\r\n0\r\n\r\n"})
    try:
        p = _truncate_proxy(proxy_factory, tmp_path, origin)
        with p.conn() as c:
            r = c.exchange("GET", "/cut", allow_incomplete=True)
            assert r.status == 200 and r.body == BODY100[:10]
            assert not r.complete, "a cut chunked answer was properly terminated"
            assert c.closed_by_peer(2.0)
        _cut_record(p)
    finally:
        origin.stop()


def test_truncate_content_length_answer_in_one_read_closes(proxy_factory, tmp_path):
    origin = _answer_origin({"/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY100})
    try:
        p = _truncate_proxy(proxy_factory, tmp_path, origin)
        with p.conn() as c:
            r = c.exchange("GET", "/cut", allow_incomplete=True, timeout=5)
            assert r.status == 200 and r.body == BODY100[:10] and not r.complete
        _cut_record(p)
    finally:
        origin.stop()


def test_truncate_with_pipelined_requests_never_desynchronises(proxy_factory, tmp_path):
    """The next pipelined answer must never be read as the rest of the cut
    body: the client gets the cut answer, then the connection closes."""
    origin = _answer_origin({
        "/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY100,
        "/next": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nNEXT"})
    try:
        p = _truncate_proxy(proxy_factory, tmp_path, origin)
        with p.conn() as c:
            c.send(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            data = c.read_all(timeout=5)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in head
            assert body == BODY100[:10], data
        _cut_record(p)
    finally:
        origin.stop()


# -- 5. the request-head limit counts wire bytes ---------------------------------------


def _many_fields(n):
    return b"".join(b"X-H%d: v\r\n" % i for i in range(n))


def test_head_limit_counts_separators_and_line_ends(proxy):
    """8,000 fields `X-Hn: v` make a 95 KB head whose names and values
    alone stay under 64 KiB: refused 431 like one large field."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + _many_fields(8000) + b"\r\n"
    assert len(head) > 90000
    with proxy.conn() as c:
        c.send(head)
        r = c.read_response()
        assert r.status == 431
    # A head under the limit in the same shape still passes.
    ok = b"GET /status/200 HTTP/1.1\r\nHost: x\r\n" + _many_fields(4000) + b"\r\n"
    assert len(ok) < 60000
    with proxy.conn() as c:
        c.send(ok)
        assert c.read_response().status == 200
    rows = wait_exchanges(proxy.db, lambda rs: len(rs) >= 2)
    assert [(r["final_code"], r["error"]) for r in rows] == [(431, "bad_request"), (200, None)]


# -- 6. pipelining after a HEAD whose upstream answered an invalid status --------


def test_pipelined_after_head_with_invalid_status_stays_in_order(proxy_factory):
    origin = _answer_origin({
        "/bad": b"HTTP/1.1 600 Weird\r\nContent-Length: 5\r\n\r\n",
        "/second": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECOND",
        "/third": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nTHIRD"})
    try:
        p = proxy_factory(upstream=origin.url)
        with p.conn() as c:
            c.send(b"HEAD /bad HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response("HEAD", timeout=5)
            assert r.status == 502
            r = c.read_response(timeout=5)
            assert (r.status, r.body) == (200, b"SECOND")
            r = c.read_response(timeout=5)
            assert (r.status, r.body) == (200, b"THIRD")
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 3)
        got = [(r["method"], r["path"], r["upstream_code"], r["final_code"], r["error"])
               for r in rows]
        assert got == [("HEAD", "/bad", 600, 502, "invalid_status"),
                       ("GET", "/second", 200, 200, None),
                       ("GET", "/third", 200, 200, None)]
    finally:
        origin.stop()


# -- 7. HEAD with set-status keeps Content-Length ------------------------------------


def test_head_rewritten_by_set_status_keeps_content_length(proxy_factory, backend, tmp_path):
    rules = tmp_path / "s.rules"
    rules.write_text("rule s path /status/200 => set-status 404\n")
    p = proxy_factory(upstream=backend.url, args=["--rules", str(rules)])
    with p.conn() as c:
        r = c.exchange("HEAD", "/status/200?size=1234")
        assert r.status == 404 and r.get("Content-Length") == "1234" and r.body == b""
        g = c.exchange("GET", "/status/200?size=1234")
        assert g.status == 404 and g.get("Content-Length") == "1234"


# -- 9. a set-header past the response-head limit ------------------------------------


def test_set_header_past_the_head_limit_is_an_explicit_failure(proxy_factory, tmp_path):
    """The upstream's head fills the 64 KiB head store; a rule's set-header
    no longer fits. It must not be dropped silently: 502, recorded as
    header_overflow."""
    pad = b"a" * 65400
    origin = _answer_origin({
        "/big": b"HTTP/1.1 200 OK\r\nX-Pad: " + pad + b"\r\nContent-Length: 2\r\n\r\nok",
        "/small": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    rules = tmp_path / "h.rules"
    rules.write_text('rule mark status 200 => set-header X-Rule "%s"\n' % ("v" * 300))
    try:
        p = proxy_factory(upstream=origin.url, args=["--rules", str(rules)])
        with p.conn() as c:
            r = c.exchange("GET", "/small")
            assert r.status == 200 and r.get("X-Rule") == "v" * 300
        with p.conn() as c:
            r = c.exchange("GET", "/big")
            assert r.status == 502, (r.status, r.get("X-Rule"))
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
        assert [(r["path"], r["final_code"], r["error"]) for r in rows] == \
            [("/small", 200, None), ("/big", 502, "header_overflow")]
    finally:
        origin.stop()


# -- 10. a client that stops reading ---------------------------------------------------


def test_client_that_stops_reading_is_recorded_as_client_timeout(proxy_factory, backend):
    """The upstream is paused because the client stopped reading; when the
    response timeout passes the exchange is cut and the record blames the
    client (client_timeout), not the upstream (timeout)."""
    p = proxy_factory(upstream=backend.url, args=["--response-timeout", "1s"])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", p.port))
    try:
        s.sendall(b"GET /stream?size=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        rows = wait_exchanges(p.db, lambda rs: len(rs) >= 1, timeout=15)
        assert [(r["final_code"], r["error"]) for r in rows] == [(200, "client_timeout")]
    finally:
        s.close()


# -- 12. duration sums saturate ------------------------------------------------------


def test_huge_connect_timeout_does_not_wrap_around(proxy_factory):
    """--connect-timeout near 2^64 ms plus --response-timeout 2s used to
    wrap to a 1-second deadline: a connect still pending (a backend whose
    accept queue is full drops SYNs) was cut with 504 connect_timeout."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue; nobody accepts
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    time.sleep(0.2)
    huge = (1 << 64) - 1 - 999
    p = proxy_factory(upstream="http://127.0.0.1:%d" % port,
                      args=["--connect-timeout", "%dms" % huge, "--response-timeout", "2s"])
    try:
        with p.conn(timeout=3) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.sock.settimeout(2.5)
            try:
                data = c.sock.recv(1000)
            except socket.timeout:
                data = None
            assert data is None, data
    finally:
        for f in fillers:
            f.close()
        full.close()
