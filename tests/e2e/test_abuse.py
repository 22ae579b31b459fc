"""Limits that hold under abuse (DESIGN §12), through the real binary: the
admin API's bounds, a 1 MiB PUT /rules, --max-connections across workers,
--deny-dest and the proxy's own listeners, running out of file
descriptors, start-up failures, audit writer errors, stopping under load,
and --max-request-body."""

import json
import os
import resource
import socket
import subprocess
import threading
import time

import pytest

from helpers import HttpConn, check_synthesized, wait_exchanges, wait_until
from rules_support import Admin


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _closed_within(sock, timeout):
    """True when the peer closes SOCK (EOF or reset) within TIMEOUT; the
    bytes read meanwhile are returned as the second value."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True, got
        if not b:
            return True, got
        got += b
    return False, got


# ---------- 1. admin API bounds ----------

def test_admin_slowloris_is_closed_after_the_head_timeout(proxy_factory):
    p = proxy_factory(args=["--header-timeout", "1s"])
    s = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    for _ in range(3):  # a byte now and then, never the end of the head
        time.sleep(0.3)
        s.sendall(b"X-A: b\r\n")
    closed, got = _closed_within(s, 4.0)
    assert closed, "a slowloris admin client stayed connected"
    assert 0.8 <= time.monotonic() - t0 <= 4.0
    assert got.startswith(b"HTTP/1.1 408 "), got
    s.close()
    # A silent connection goes the same way.
    s = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
    closed, _ = _closed_within(s, 4.0)
    assert closed, "a silent admin connection stayed open"
    s.close()
    assert Admin(p).get("/healthz").status == 200


def test_admin_refuses_connections_over_its_limit(proxy_factory):
    p = proxy_factory()
    held = []
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
        held.append(s)
    # All 64 are served.
    held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held[0].recv(4096).startswith(b"HTTP/1.1 200 ")
    extra = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
    closed, got = _closed_within(extra, 3.0)
    assert closed and got.startswith(b"HTTP/1.1 503 "), got
    extra.close()
    for s in held:
        s.close()
    assert wait_until(lambda: Admin(p).get("/healthz").status == 200, timeout=3.0)


def test_admin_pipelining_non_reader_keeps_rss_bounded(proxy_factory):
    p = proxy_factory()
    time.sleep(0.3)
    base = _rss_kib(p.pid)
    s = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100  # the live page, ~7 KB each
    sent = 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline and sent < 40000 * 27:
        try:
            sent += s.send(req)
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(0.5)
    grown = _rss_kib(p.pid) - base
    # Unbounded, the proxy would hold ~7 KB of answer per request sent.
    assert grown < 40 * 1024, "RSS grew by %d KiB after %d bytes of pipelined requests" % (
        grown, sent)
    # The proxy stays responsive to others meanwhile.
    assert Admin(p).get("/healthz").status == 200
    s.close()


def test_admin_head_over_16kib_is_431(proxy_factory):
    p = proxy_factory()
    s = socket.create_connection(("127.0.0.1", p.admin_port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    closed, got = _closed_within(s, 3.0)
    assert got.startswith(b"HTTP/1.1 431 "), got
    assert closed
    s.close()


def test_admin_put_rules_over_1mib_is_413(proxy_factory):
    p = proxy_factory()
    r = Admin(p).put_rules("# " + "x" * (1024 * 1024 + 10) + "\n")
    assert r.status == 413, r
    assert Admin(p).put_rules("rule a => reset\n").status == 200


# ---------- 2. PUT /rules of 1 MiB is linear ----------

def test_put_rules_of_1mib_with_many_rules_is_quick(proxy_factory):
    p = proxy_factory()
    lines, size, i = [], 0, 0
    while True:
        line = "rule q%x => reset\n" % i
        if size + len(line) > 1024 * 1024 - 64:
            break
        lines.append(line)
        size += len(line)
        i += 1
    admin = Admin(p)
    done = {}

    def put():
        t0 = time.monotonic()
        done["r"] = admin.put_rules("".join(lines))
        done["t"] = time.monotonic() - t0

    t = threading.Thread(target=put)
    t.start()
    time.sleep(0.2)
    # Meanwhile the main loop still answers.
    t1 = time.monotonic()
    assert admin.get("/healthz").status == 200
    assert time.monotonic() - t1 < 2.5
    t.join(30)
    assert done["r"].status == 200, done["r"]
    assert done["t"] < 2.5, "PUT /rules of %d rules took %.1fs" % (i, done["t"])
    # A duplicate name far down is still found.
    r = admin.put_rules("".join(lines[:20000]) + "rule q5 => reset\n")
    assert r.status == 400 and "duplicate rule name 'q5'" in r.json()["error"], r


# ---------- 3. --max-connections is one limit across workers ----------

@pytest.mark.parametrize("workers,limit", [(2, 10), (4, 12)])
def test_max_connections_is_global_across_workers(proxy_factory, backend, workers, limit):
    p = proxy_factory(upstream=backend.url,
                      args=["--workers", str(workers), "--max-connections", str(limit)])
    time.sleep(0.3)  # the readiness probe's connection is gone
    held = []
    for i in range(limit):
        c = HttpConn(p.port)
        r = c.exchange("GET", "/status/200?body=ok")
        assert r.status == 200, "connection %d of %d refused (%d workers)" % (i + 1, limit,
                                                                              workers)
        held.append(c)
    extra = HttpConn(p.port)
    r = extra.read_response(timeout=5)
    assert check_synthesized(r, 503, "Service Unavailable") == []
    extra.sock.close()
    held.pop().sock.close()
    time.sleep(0.3)
    c = HttpConn(p.port)
    assert c.exchange("GET", "/status/200").status == 200
    for c2 in held + [c]:
        c2.sock.close()


# ---------- 6. clear start-up failures ----------

def test_admin_accepts_as_soon_as_the_proxy_does(proxy_factory, backend):
    """Scripts wait for the proxy's port, then use the admin API or stop the
    proxy: by the time the proxy's port accepts, the admin port must accept
    too (it listened after the workers: connection refused), and SIGTERM must
    be the graceful stop (it killed the process before the handler was in
    place: exit -15)."""
    for _ in range(30):
        p = proxy_factory(upstream=backend.url, args=["--workers", "2"])
        socket.create_connection(("127.0.0.1", p.admin_port), timeout=5).close()
        assert p.stop() == []


@pytest.mark.parametrize("workers", ["1", "4"])
@pytest.mark.parametrize("which", ["--listen", "--admin"])
def test_port_in_use_stops_start_up_with_exit_1(statusproxy_bin, tmp_path, which, workers):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        from helpers import free_port
        ports = {"--listen": free_port(), "--admin": free_port()}
        ports[which] = port
        p = subprocess.run([statusproxy_bin, "run", "--listen", "127.0.0.1:%d" % ports["--listen"],
                            "--admin", "127.0.0.1:%d" % ports["--admin"], "--workers", workers,
                            "--db", str(tmp_path / "sp.db")],
                           capture_output=True, text=True, timeout=20)
    finally:
        held.close()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "127.0.0.1:%d" % port in p.stderr and "in use" in p.stderr.lower(), p.stderr
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr


# ---------- 8. stopping under load ----------

def test_stopping_four_workers_under_load_exits_0_every_time(proxy_factory, backend):
    for round_ in range(8):
        p = proxy_factory(upstream=backend.url, args=["--workers", "4"])
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    c = HttpConn(p.port, timeout=2)
                    c.exchange("GET", "/status/200?body=x")
                    c.sock.close()
                except Exception:
                    pass

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2 + 0.05 * round_)
        problems = p.stop()
        stop.set()
        for t in threads:
            t.join(5)
        assert problems == [], "round %d: %s\n%s" % (round_, problems, p.stderr()[-3000:])


# ---------- 7. audit writer errors: logged once per kind, counted ----------

def test_audit_lock_is_logged_once_and_counted(proxy_factory, backend):
    from rules_support import parse_prometheus
    p = proxy_factory(upstream=backend.url)
    c = HttpConn(p.port)
    assert c.exchange("GET", "/status/200").status == 200
    assert wait_exchanges(p.db, lambda rs: len(rs) == 1)
    holder = subprocess.Popen(["sqlite3", p.db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        holder.stdin.write(".bail on\n.timeout 5000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        for i in range(20):
            assert c.exchange("GET", "/status/200?n=%d" % i).status == 200
        time.sleep(3.0)  # the writer retries many times meanwhile
        metrics = parse_prometheus(Admin(p).get("/metrics").body.decode())
        busy = [v for n, labels, v in metrics["samples"]
                if n == "statusproxy_audit_errors_total" and labels == {"kind": "busy"}]
        assert busy and busy[0] > 1, metrics["samples"][-8:]
        assert metrics["types"]["statusproxy_audit_errors_total"] == "counter"
        holder.stdin.write("COMMIT;\n.quit\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert wait_exchanges(p.db, lambda rs: len(rs) == 21, timeout=10)
    assert wait_until(lambda: "writing to %s again" % p.db in p.stderr(), timeout=3)
    lines = [l for l in p.stderr().splitlines() if "audit: cannot write" in l]
    assert len(lines) == 1, lines
    assert "(busy)" in lines[0] and "locked" in lines[0], lines
    c.sock.close()


# ---------- 4. --deny-dest after DNS; never the proxy's own listeners ----------

def _forward(port, target, method="GET", host=None):
    c = HttpConn(port)
    authority = target.split("//", 1)[-1].split("/", 1)[0]
    c.request(method, target, host=host or authority)
    r = c.read_response(method=method, timeout=10)
    c.sock.close()
    return r


def test_deny_dest_refuses_names_and_literals_after_dns(proxy_factory, backend):
    bport = int(backend.url.rsplit(":", 1)[1].strip("/"))
    p = proxy_factory(args=["--deny-dest", "127.0.0.0/8", "--deny-dest", "::1",
                            "--connect-ports", str(bport)])
    for target in ("http://localhost:%d/status/200" % bport,
                   "http://127.0.0.1:%d/status/200" % bport,
                   "http://[::ffff:127.0.0.1]:%d/status/200" % bport):
        r = _forward(p.port, target)
        assert r.status == 403, (target, r.status, r.body)
    r = _forward(p.port, "localhost:%d" % bport, method="CONNECT")
    assert r.status == 403, r
    assert backend.requests == 0, "a denied destination was contacted"
    rows = wait_exchanges(p.db, lambda rs: len(rs) == 4)
    assert [r["error"] for r in rows] == ["dest_denied"] * 4
    assert [r["final_code"] for r in rows] == [403] * 4
    assert "address in --deny-dest" in p.stderr()


def test_deny_dest_leaves_other_destinations_alone(proxy_factory, backend):
    bport = int(backend.url.rsplit(":", 1)[1].strip("/"))
    p = proxy_factory(args=["--deny-dest", "169.254.0.0/16", "--deny-dest", "10.0.0.0/8"])
    r = _forward(p.port, "http://localhost:%d/status/200?body=ok" % bport)
    assert (r.status, r.body) == (200, b"ok")
    r = _forward(p.port, "http://169.254.169.254/latest/meta-data/")
    assert r.status == 403
    # The configured --upstream is the operator's choice, not a client's.
    q = proxy_factory(upstream=backend.url, args=["--deny-dest", "127.0.0.0/8"])
    c = HttpConn(q.port)
    assert c.exchange("GET", "/status/200?body=gw").body == b"gw"
    c.sock.close()


def test_bad_deny_dest_exits_2_naming_the_flag(statusproxy_bin, tmp_path):
    for bad in ("10.0.0.1/8", "nonsense"):
        p = subprocess.run([statusproxy_bin, "run", "--deny-dest", bad, "--db",
                            str(tmp_path / "x.db")], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "--deny-dest" in p.stderr, p.stderr


def test_forward_mode_never_connects_to_own_admin_or_listener(proxy_factory):
    p = proxy_factory()
    # 0.0.0.0 reaches this host: before the check, the proxy fetched its own
    # admin API for the client.
    r = _forward(p.port, "http://0.0.0.0:%d/metrics" % p.admin_port)
    assert r.status == 508, (r.status, r.body[:200])
    r = _forward(p.port, "http://0.0.0.0:%d/x" % p.port)
    assert r.status == 508
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
    time.sleep(0.3)
    rows = wait_exchanges(p.db, lambda rs: len(rs) >= 2)
    # One record each: the proxy never received its own request.
    assert [(r["error"], r["upstream_code"]) for r in rows] == [("loop", None)] * 2


def test_forward_mode_self_check_with_a_name_and_a_wildcard_bind(statusproxy_bin, tmp_path):
    from helpers import Proxy
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, 80)
    except OSError:
        pytest.skip("the host name does not resolve")
    p = Proxy(statusproxy_bin, str(tmp_path))
    p.argv[p.argv.index("--listen") + 1] = "0.0.0.0:%d" % p.port
    p.argv[p.argv.index("--admin") + 1] = "0.0.0.0:%d" % p.admin_port
    p.start()
    try:
        # The host's own name reaches the wildcard listeners.
        r = _forward(p.port, "http://%s:%d/metrics" % (name, p.admin_port))
        assert r.status == 508, (r.status, r.body[:200])
        r = _forward(p.port, "http://%s:%d/x" % (name, p.port))
        assert r.status == 508, (r.status, r.body[:200])
    finally:
        problems = p.stop()
    assert problems == [], problems


# ---------- 5. out of file descriptors: pause, never spin, resume ----------

def test_out_of_fds_pauses_accepting_without_spinning(statusproxy_bin, tmp_path, backend):
    from helpers import Proxy

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    p = Proxy(statusproxy_bin, str(tmp_path), upstream=backend.url)
    p._err = open(p.stderr_path, "wb")
    p._out = open(p.stdout_path, "wb")
    p.proc = subprocess.Popen(p.argv, stdin=subprocess.DEVNULL, stdout=p._out, stderr=p._err,
                              preexec_fn=low_limit)
    held = []
    try:
        p._wait_listening(10)
        time.sleep(0.3)
        for _ in range(100):  # well past 64 descriptors
            held.append(socket.create_connection(("127.0.0.1", p.port), timeout=5))
        time.sleep(0.5)
        assert p.proc.poll() is None, "the proxy exited when fds ran out"
        c0 = _cpu_seconds(p.pid)
        time.sleep(2.0)
        used = _cpu_seconds(p.pid) - c0
        assert used < 0.5, "%.2f s of CPU in 2 s while out of fds (spinning)" % used
        assert "accepting paused" in p.stderr()
        # The connections past the limit waited; none was dropped.
        for s in held[-5:]:
            s.settimeout(0.1)
            try:
                assert s.recv(1) != b"", "a waiting client was closed"
            except socket.timeout:
                pass
        for s in held[:95]:
            s.close()
        # The last client, which waited in the backlog, is served now.
        last = held[-1]
        last.settimeout(10)
        last.sendall(b"GET /status/200?body=late HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b"late"):
            b = last.recv(4096)
            assert b, "no answer: %r" % got
            got += b
        assert got.startswith(b"HTTP/1.1 200 "), got
        for s in held[95:]:
            s.close()
        c = HttpConn(p.port)
        assert c.exchange("GET", "/status/200").status == 200
        c.sock.close()
    finally:
        for s in held:
            s.close()
        problems = p.stop()
    assert problems == [], problems


# ---------- 10. --max-request-body ----------

def test_max_request_body_refuses_a_known_length_before_forwarding(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--max-request-body", "1KB"])
    c = HttpConn(p.port)
    r = c.exchange("POST", "/sink", body=b"x" * 1024)
    assert r.status == 200, r
    c.request("POST", "/sink", headers=[("Expect", "100-continue")], content_length=5000,
              body=iter([]))
    r = c.read_response(timeout=5)
    assert check_synthesized(r, 413, r.reason) == [], r
    assert "max-request-body" in (r.get("X-Statusproxy-Error") or "")
    c.sock.close()
    assert backend.requests == 1, "the refused request reached the backend"
    rows = wait_exchanges(p.db, lambda rs: len(rs) == 2)
    assert (rows[1]["final_code"], rows[1]["error"]) == (413, "body_too_large")


def test_max_request_body_cuts_a_chunked_body_that_grows_past_it(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--max-request-body", "4KB"])
    c = HttpConn(p.port)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        c.send(b"400\r\n" + b"y" * 1024 + b"\r\n")
        time.sleep(0.1)
    c.send(b"800\r\n" + b"z" * 2048 + b"\r\n")  # now 5 KiB: over the limit
    r = c.read_response(timeout=5)
    assert r.status == 413, r
    assert c.closed_by_peer(3.0)
    c.sock.close()
    rows = wait_exchanges(p.db, lambda rs: len(rs) == 1)
    assert (rows[0]["final_code"], rows[0]["error"]) == (413, "body_too_large")
    # Without the flag, bodies are not limited.
    q = proxy_factory(upstream=backend.url)
    c = HttpConn(q.port)
    r = c.exchange("POST", "/sink", body=b"w" * (3 * 1024 * 1024))
    assert r.status == 200 and json.loads(r.body)["body_len"] == 3 * 1024 * 1024, r.body
    c.sock.close()
