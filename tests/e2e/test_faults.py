"""The faults of DESIGN §10 through the real binary: time matchers (`during`,
`cycle`, and their state in GET /rules), `rate-limit` per client and shared,
`Retry-After auto`, delay distributions with --seed, the broken answers
(hang, empty, garbage, bad-chunk, slow-head) as a raw socket, curl and
Python's http.client / urllib see them, the new fault headers,
--max-active-faults under concurrency, and the records of each."""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from helpers import HttpConn, db_exchanges, wait_exchanges, wait_until
from rules_support import Admin, SourceConn, get, metric, rules_proxy, slowdown


def start(proxy_factory, backend, tmp_path, text, args=()):
    return rules_proxy(proxy_factory, backend, tmp_path, text, args=args)


def raw(port, path, headers=b"", timeout=10.0):
    """Send one request with Connection: close; return (bytes until EOF,
    [(seconds since sending, bytes)] for each read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n"
                  % (path.encode(), headers))
        t0 = time.monotonic()
        reads = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            reads.append((time.monotonic() - t0, d))
        return b"".join(d for _, d in reads), reads, time.monotonic() - t0
    finally:
        s.close()


def curl(port, path, *args):
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", *args,
                           "http://127.0.0.1:%d%s" % (port, path)],
                          capture_output=True, text=True, timeout=30)


def rows_for(p, path, n=1, timeout=5.0):
    return [r for r in wait_exchanges(
        p.db, lambda rows: len([r for r in rows if r["path"] == path]) >= n, timeout)
        if r["path"] == path]


# ---------------------------------------------------------------------------
# Broken answers on the wire


def test_empty_both_phases(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule e path /e => empty\n"
              "rule er status 404 path /status/* => empty\n")
    data, _, _ = raw(p.port, "/e")
    assert data == b""
    c = curl(p.port, "/e")
    assert c.returncode == 52 and "Empty reply from server" in c.stderr, c
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    with pytest.raises(http.client.RemoteDisconnected):
        conn.request("GET", "/e")
        conn.getresponse()
    conn.close()
    assert backend.requests == 0, "a request-phase empty reached the backend"
    # Response phase: the backend answered 404, the client sees nothing.
    data, _, _ = raw(p.port, "/status/404")
    assert data == b""
    assert backend.requests == 1
    rows = rows_for(p, "/e", 3)
    assert {(r["rule"], r["action"], r["error"], r["final_code"]) for r in rows} == \
        {("e", "empty", "fault_empty", None)}
    [r] = rows_for(p, "/status/404")
    assert (r["rule"], r["action"], r["error"], r["upstream_code"], r["final_code"]) == \
        ("er", "empty", "fault_empty", 404, None)


def test_garbage(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule g path /g => garbage\n"
              "rule g7 path /status/* status 200 => garbage 7\n")
    data, _, _ = raw(p.port, "/g")
    assert len(data) == 64 and data[0] >= 0x80, data
    assert not data.startswith(b"HTTP/")
    data2, _, _ = raw(p.port, "/g")
    assert len(data2) == 64 and data2 != data  # random, not a fixed pattern
    c = curl(p.port, "/g")
    assert c.returncode != 0 and "HTTP/0.9" in c.stderr, c
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    with pytest.raises(http.client.BadStatusLine):
        conn.request("GET", "/g")
        conn.getresponse()
    conn.close()
    data, _, _ = raw(p.port, "/status/200")
    assert len(data) == 7 and data[0] >= 0x80
    rows = rows_for(p, "/g", 3)
    assert {(r["rule"], r["action"], r["error"], r["final_code"]) for r in rows} == \
        {("g", "garbage 64", "fault_garbage", None)}
    [r] = rows_for(p, "/status/200")
    assert (r["action"], r["error"], r["upstream_code"]) == ("garbage 7", "fault_garbage", 200)


def test_bad_chunk_upstream_body_and_abort(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule bc path /status/* => bad-chunk\n"
              "rule bca path /a => abort 503 bad-chunk\n")
    # The backend sends a Content-Length body: the client gets it chunked,
    # one chunk, then a size line that is not hexadecimal, then the close.
    data, _, _ = raw(p.port, "/status/200?size=300")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    size_line, _, rest = body.partition(b"\r\n")
    n = int(size_line, 16)
    assert 0 < n <= 300
    assert rest[n:n + 2] == b"\r\n"
    assert rest[n + 2:] == b"zz-not-a-chunk-size\r\n"
    data, _, _ = raw(p.port, "/a")
    assert data.startswith(b"HTTP/1.1 503 ")
    assert data.endswith(b"\r\n18\r\n503 Service Unavailable\n\r\nzz-not-a-chunk-size\r\n")
    for path in ("/status/200?size=300", "/a"):
        c = curl(p.port, path)
        assert c.returncode == 56 and "chunked" in c.stderr, c
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            r.read()
        conn.close()
    rows = rows_for(p, "/status/200", 3)
    assert {(r["rule"], r["action"], r["error"], r["final_code"]) for r in rows} == \
        {("bc", "bad-chunk", "fault_bad_chunk", 200)}
    rows = rows_for(p, "/a", 3)
    assert {(r["rule"], r["action"], r["error"], r["final_code"]) for r in rows} == \
        {("bca", "abort 503 bad-chunk", "fault_bad_chunk", 503)}


def test_hang_with_duration_and_until_client_leaves(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule h path /h => hang 1s\n"
              "rule forever path /f => hang\n"
              "rule hr status 200 path /status/* => hang 1s\n")
    data, reads, t = raw(p.port, "/h")
    assert data == b"" and 0.9 <= t <= 1.0 + 2.0 * slowdown(p), t
    data, _, t = raw(p.port, "/status/200")
    assert data == b"" and 0.9 <= t, t
    assert backend.requests == 1
    # Without a duration, until the client leaves: curl's timeout, Python's.
    t0 = time.monotonic()
    c = curl(p.port, "/f", "-m", "1")
    assert c.returncode == 28, c
    assert time.monotonic() - t0 >= 0.9
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=0.8)
    with pytest.raises(socket.timeout):
        conn.request("GET", "/f")
        conn.getresponse()
    conn.close()
    # urllib: the timeout surfaces as TimeoutError (or URLError wrapping it).
    with pytest.raises((urllib.error.URLError, TimeoutError)) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/f" % p.port, timeout=0.8)
    assert "timed out" in str(e.value)
    [r] = rows_for(p, "/h")
    assert (r["rule"], r["action"], r["error"], r["final_code"]) == \
        ("h", "hang 1s", "fault_hang", None)
    [r] = rows_for(p, "/status/200")
    assert (r["action"], r["error"], r["upstream_code"]) == ("hang 1s", "fault_hang", 200)
    rows = rows_for(p, "/f", 3)
    assert {(r["action"], r["error"]) for r in rows} == {("hang", "fault_hang")}


def test_slow_head_spreads_the_head(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule sh path /status/* => slow-head 2s\n"
              "rule sha path /a => abort 503 slow-head 1500ms\n")
    for path, dur, code in (("/status/200?size=10", 2.0, b"200"), ("/a", 1.5, b"503")):
        data, reads, t = raw(p.port, path)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + code), data
        # The first bytes come at once, the head ends only after DURATION,
        # in many pieces between.
        assert reads[0][0] < dur / 3, reads[:3]
        acc = b""
        end_at = None
        for at, d in reads:
            acc += d
            if b"\r\n\r\n" in acc:
                end_at = at
                break
        assert end_at is not None and end_at >= dur * 0.9, (end_at, dur)
        assert len(reads) >= 5, len(reads)
        assert t <= dur + 2.0 * slowdown(p)
    c = curl(p.port, "/status/200?size=10", "-w", "%{http_code}")
    assert c.returncode == 0 and c.stdout == "200", c
    # A client whose timeout is shorter than the head gives up: curl's 28.
    c = curl(p.port, "/status/200?size=10", "-m", "1")
    assert c.returncode == 28, c
    [r] = rows_for(p, "/a")
    assert (r["rule"], r["action"], r["error"], r["final_code"]) == \
        ("sha", "abort 503 slow-head 1500ms", None, 503)
    rows = rows_for(p, "/status/200", 2)
    assert {(r["action"], r["final_code"]) for r in rows} == {("slow-head 2s", 200)}


# ---------------------------------------------------------------------------
# Time matchers


def test_outage_window_switches_off_on_time(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule outage path /api/* during 0s..2s => abort 503\n"
              "rule later path /later during 1500ms.. => abort 502\n")
    admin = Admin(p)
    t_start = time.monotonic()
    assert get(p.port, "/api/x").status == 503
    assert get(p.port, "/later").status == 404  # the backend: not yet
    rules = admin.rules()
    assert rules["outage"]["active"] is True
    assert 0 < rules["outage"]["next_change_ms"] <= 2000
    assert rules["later"]["active"] is False
    assert 0 < rules["later"]["next_change_ms"] <= 1500
    wait_until(lambda: time.monotonic() - t_start > 2.3, timeout=5)
    assert get(p.port, "/api/x").status == 404
    assert get(p.port, "/later").status == 502
    rules = admin.rules()
    assert rules["outage"]["active"] is False and rules["outage"]["next_change_ms"] is None
    assert rules["later"]["active"] is True and rules["later"]["next_change_ms"] is None
    # Enabling restarts the rule's clock: a new outage of 2 s.
    r = admin.request("POST", "/rules/outage/enable")
    assert r.status == 200, r
    assert get(p.port, "/api/x").status == 503
    assert admin.rules()["outage"]["active"] is True
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 6)
    api = [(r["final_code"], r["rule"]) for r in rows if r["path"] == "/api/x"]
    assert api == [(503, "outage"), (404, None), (503, "outage")]


def test_cycle_switches_on_and_off(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule flap cycle 2s on 1s => abort 503\n")
    admin = Admin(p)
    seen = []
    t_end = time.monotonic() + 5
    while time.monotonic() < t_end:
        st = admin.rules()["flap"]
        code = get(p.port, "/status/200").status
        seen.append(code)
        # The state GET /rules reports agrees with what the client sees,
        # unless the switch happened between the two.
        if st["next_change_ms"] > 150:
            assert code == (503 if st["active"] else 200), (st, code)
        assert 0 < st["next_change_ms"] <= 1000
        time.sleep(0.1)
    switches = sum(1 for a, b in zip(seen, seen[1:]) if a != b)
    assert set(seen) == {200, 503}
    assert switches >= 3, seen
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= len(seen))
    assert [r["final_code"] for r in rows] == seen
    assert {(r["final_code"], r["rule"], r["action"]) for r in rows} == \
        {(200, None, None), (503, "flap", "abort 503")}


# ---------------------------------------------------------------------------
# Rate limits


def test_rate_limit_per_client_with_retry_after(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule quota path /status/* rate-limit 3/3s per-client "
              "=> abort 429 set-header Retry-After auto\n")

    def burst(source):
        out = []
        with SourceConn(p.port, source) as c:
            for _ in range(5):
                r = c.exchange("GET", "/status/200")
                out.append((r.status, r.get("Retry-After")))
        return out

    a = burst("127.0.0.1")
    b = burst("127.0.0.2")
    for got in (a, b):
        assert [s for s, _ in got] == [200, 200, 200, 429, 429], got
        for s, ra in got[3:]:
            assert ra is not None and 1 <= int(ra) <= 3, got
    # After Retry-After seconds, the window has room again.
    time.sleep(int(a[3][1]) + 0.2)
    with SourceConn(p.port, "127.0.0.1") as c:
        assert c.exchange("GET", "/status/200").status == 200
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 11)
    per_client = {}
    for r in rows:
        per_client.setdefault(r["client"], []).append((r["final_code"], r["rule"]))
    assert per_client["127.0.0.2"] == [(200, None)] * 3 + [(429, "quota")] * 2
    assert per_client["127.0.0.1"] == [(200, None)] * 3 + [(429, "quota")] * 2 + [(200, None)]
    assert backend.requests == 7


def test_rate_limit_shared_and_in_response_phase(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule q status 200 rate-limit 2/4s => set-status 429 "
              "set-header Retry-After auto\n")
    got = []
    for src in ("127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"):
        with SourceConn(p.port, src) as c:
            r = c.exchange("GET", "/status/200")
            got.append((r.status, r.get("Retry-After")))
    assert [s for s, _ in got] == [200, 200, 429, 429], got
    assert all(3 <= int(ra) <= 4 for _, ra in got[2:]), got
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 4)
    assert [(r["upstream_code"], r["final_code"], r["rule"]) for r in rows] == \
        [(200, 200, None)] * 2 + [(200, 429, "q")] * 2


# ---------------------------------------------------------------------------
# Delay distributions


def _delays(proxy_factory, backend, tmp_path, seed, n=10):
    p = start(proxy_factory, backend, tmp_path,
              "rule tail path /status/* => delay lognormal 200ms 5s\n",
              args=["--seed", str(seed)])
    out = []
    with p.conn() as c:
        for _ in range(n):
            t0 = time.monotonic()
            assert c.exchange("GET", "/status/200").status == 200
            out.append(time.monotonic() - t0)
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= n)
    assert {r["action"] for r in rows} == {"delay lognormal 200ms 5s"}
    return out


def test_lognormal_delay_reproducible_with_seed(proxy_factory, backend, tmp_path):
    a = _delays(proxy_factory, backend, tmp_path, 11)
    b = _delays(proxy_factory, backend, tmp_path, 11)
    c = _delays(proxy_factory, backend, tmp_path, 12)
    assert all(abs(x - y) < 0.15 for x, y in zip(a, b)), (a, b)
    assert max(abs(x - y) for x, y in zip(a, c)) > 0.2, (a, c)
    assert max(a) - min(a) > 0.1, a  # a spread, not a fixed delay


def test_normal_delay_rule(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule bell path /status/* => delay normal 400ms 100ms\n", args=["--seed", "3"])
    times = []
    with p.conn() as c:
        for _ in range(6):
            t0 = time.monotonic()
            assert c.exchange("GET", "/status/200").status == 200
            times.append(time.monotonic() - t0)
    assert 0.2 < sum(times) / len(times) < 0.6 + 0.3 * slowdown(p), times
    assert max(times) - min(times) > 0.02, times  # drawn, not fixed
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 6)
    assert {r["action"] for r in rows} == {"delay normal 400ms 100ms"}


def test_time_windows_restart_with_put_rules(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule o during 0s..1s => abort 503\n")
    admin = Admin(p)
    assert get(p.port, "/status/200").status == 503
    time.sleep(1.2)
    assert get(p.port, "/status/200").status == 200
    r = admin.put_rules("rule o during 0s..1s => abort 503\n")
    assert r.status == 200, r
    assert get(p.port, "/status/200").status == 503
    assert admin.rules()["o"]["active"] is True


def test_rules_check_new_forms(statusproxy_bin, tmp_path):
    path = tmp_path / "f.rules"
    path.write_text("rule a path /x during 0s..30s => abort 503\n"
                    "rule b cycle 60s on 10s => delay lognormel 100ms 2s\n"
                    "rule c rate-limit 10/1s per-clinet => abort 429\n")
    r = subprocess.run([statusproxy_bin, "rules", "check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "%s:2:34: error: unknown delay distribution 'lognormel' (did you mean 'lognormal'?)" % path,
        "%s:3:25: error: unknown word 'per-clinet' after 'rate-limit 10/1s' "
        "(did you mean 'per-client'?)" % path,
    ]


# ---------------------------------------------------------------------------
# Fault headers


def test_new_fault_headers(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--fault-headers"])
    data, _, _ = raw(p.port, "/echo", b"X-Statusproxy-Fault: empty\r\n")
    assert data == b""
    data, _, _ = raw(p.port, "/echo", b"X-Statusproxy-Fault: garbage\r\n")
    assert len(data) == 64 and data[0] >= 0x80
    data, _, t = raw(p.port, "/echo", b"X-Statusproxy-Fault: bad-chunk\r\n")
    assert data.endswith(b"\r\nzz-not-a-chunk-size\r\n") and b"chunked" in data.lower()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=1.0)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Statusproxy-Fault: hang\r\n\r\n")
    with pytest.raises(socket.timeout):
        s.recv(10)
    s.close()
    t0 = time.monotonic()
    r = get(p.port, "/echo", headers=[("X-Statusproxy-Delay", "normal 400ms 0ms")])
    assert r.status == 200 and time.monotonic() - t0 >= 0.38
    r = get(p.port, "/echo", headers=[("X-Statusproxy-Delay", "lognormal 100ms 200ms")])
    assert r.status == 200
    # Never forwarded: only the echo/delay requests and bad-chunk reached it.
    for e in backend.log:
        assert not [n for n, _ in e["headers"] if n.lower().startswith("x-statusproxy")], e
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 6)
    got = {(r["rule"], r["action"], r["error"]) for r in rows}
    assert ("fault-header", "empty", "fault_empty") in got
    assert ("fault-header", "garbage", "fault_garbage") in got
    assert ("fault-header", "bad-chunk", "fault_bad_chunk") in got
    assert ("fault-header", "hang", "fault_hang") in got
    assert ("fault-header", "delay normal 400ms 0ms", None) in got
    assert ("fault-header", "delay lognormal 100ms 200ms", None) in got


# ---------------------------------------------------------------------------
# Blast radius


def test_max_active_faults_under_concurrency(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule slow path /status/* => delay 2s\n",
              args=["--max-active-faults", "2", "--workers", "2"])
    admin = Admin(p)
    results = []

    def one():
        t0 = time.monotonic()
        r = get(p.port, "/status/200", timeout=20)
        results.append((r.status, time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_until(lambda: admin.json("/stats")["faults"]["active"] == 2, timeout=3)
    more = [threading.Thread(target=one) for _ in range(4)]
    for t in more:
        t.start()
    for t in threads + more:
        t.join()
    slow = [d for s, d in results if d >= 1.8]
    fast = [d for s, d in results if d < 1.5]
    assert all(s == 200 for s, _ in results)
    assert len(slow) == 2 and len(fast) == 4, results
    stats = admin.json("/stats")
    assert stats["faults"] == {"active": 0, "skipped": 4, "max_active": 2}
    m = admin.metrics()
    assert metric(m, "statusproxy_faults_overflow_total") == 4
    assert metric(m, "statusproxy_faults_active") == 0
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 6)
    assert sorted((r["rule"] or "") for r in rows) == [""] * 4 + ["slow"] * 2


def test_skipped_fault_lets_later_rules_match(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule slow path /status/* => delay 3s\n"
              "rule marked path /status/* => set-header X-Fallback \"1\"\n",
              args=["--max-active-faults", "1"])
    admin = Admin(p)
    held = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    try:
        held.sendall(b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: admin.json("/stats")["faults"]["active"] == 1, timeout=3)
        t0 = time.monotonic()
        r = get(p.port, "/status/200")
        assert time.monotonic() - t0 < 2.5
        # `slow` is skipped as if it had not matched, so `marked` applies.
        assert r.status == 200 and r.get("X-Fallback") == "1", r
        first = held.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"x-fallback" not in first.lower()
    finally:
        held.close()
    rows = wait_exchanges(p.db, lambda rows: len(rows) >= 2)
    assert sorted(r["rule"] for r in rows) == ["marked", "slow"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_live_page_shows_faults_and_time_windows(proxy_factory, backend, tmp_path):
    from test_admin import dump_dom
    p = start(proxy_factory, backend, tmp_path,
              "rule slow path /slow => delay 20s\n"
              "rule flap path /flap cycle 2h on 1h => abort 503\n",
              args=["--max-active-faults", "1"])
    admin = Admin(p)
    held = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    try:
        held.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: admin.json("/stats")["faults"]["active"] == 1, timeout=3)
        # A second held fault is over the cap: skipped, the rule does not apply
        # (the backend's /slow answers at once without parameters).
        t0 = time.monotonic()
        assert get(p.port, "/slow").status == 200
        assert time.monotonic() - t0 < 5
        dom = dump_dom("http://127.0.0.1:%d/" % p.admin_port, budget_ms=3000)
    finally:
        held.close()
    assert re.search(r'<b id="faults-active">1 / 1</b>', dom), dom[:3000]
    assert re.search(r'<b id="faults-skipped">1</b>', dom), dom[:3000]
    rules = re.search(r'<table id="rules">.*?</table>', dom, re.S).group(0)
    assert re.search(r'>flap</td>.*?<td>on \(\d+\.\d s\)</td>', rules, re.S), rules


def test_max_active_faults_flag_errors(statusproxy_bin):
    for bad in ("0", "-1", "x", ""):
        r = subprocess.run([statusproxy_bin, "run", "--max-active-faults", bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (bad, r)
        assert "--max-active-faults" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_report_by_rule_shows_injected_faults(proxy_factory, backend, tmp_path, statusproxy_bin):
    p = start(proxy_factory, backend, tmp_path,
              "rule e path /e => empty\n"
              "rule g path /g => garbage 8\n")
    for path in ("/e", "/e", "/g"):
        raw(p.port, path)
    wait_exchanges(p.db, lambda rows: len(rows) >= 3)
    p.stop()
    out = subprocess.run([statusproxy_bin, "report", "--db", p.db, "--by", "rule",
                          "--format", "json"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert [(r["rule"], r["count"]) for r in json.loads(out.stdout)] == [("e", 2), ("g", 1)]


def test_hang_notices_a_client_that_pipelined_and_left(proxy_factory, backend, tmp_path):
    """A client pipelines a request behind a `hang` (no duration), then
    closes: the hang ends there (recorded fault_hang) and the proxy lets go of
    the connection, instead of waiting for input it will never parse."""
    p = start(proxy_factory, backend, tmp_path,
              "rule forever path /f => hang\n"
              "rule forever-r status 200 path /status/* => hang\n")
    fds = len(os.listdir("/proc/%d/fd" % p.pid))
    for first in (b"/f", b"/status/200"):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n" % first)
        time.sleep(0.3)
        s.sendall(b"GET /more HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        s.close()
        [r] = rows_for(p, first.decode())
        assert (r["error"], r["final_code"]) == ("fault_hang", None), r
    assert wait_until(lambda: len(os.listdir("/proc/%d/fd" % p.pid)) <= fds, 5.0)
    assert not [r for r in db_exchanges(p.db) if r["path"] in ("/next", "/more")]
