"""Deeper reports (DESIGN §11) through the real binary: routes and
percentiles from a backend that sleeps a known time per path, user route
patterns and the per-host cap, the retry view with Retry-After (premature,
patient and giving-up clients), --by retry without raw rows, baselines from
two databases and from two windows, --assert exit codes, the /metrics
histogram agreeing with the report's percentiles, /stats routes, and the
migration of a database written by schema 3."""

import csv
import http.client
import io
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import wait_until
from rules_support import Admin
from test_report import BIN, FEED, MIGRATIONS, APPLICATION_ID, run
from test_report import report as report_ok, report_json as rjson

# ------------------------------------------------------------ a backend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        first = self.path.split("/")[1] if self.path.count("/") >= 1 else ""
        # /fast/N sleeps 20 ms, /slow/N 150 ms: known latencies per route.
        delay = {"fast": 0.020, "slow": 0.150}.get(first, 0)
        if delay:
            time.sleep(delay)
        code, extra = 200, []
        # /flaky-*/...: the first two requests of each path get 503 Retry-After: 1.
        if first.startswith("flaky"):
            with srv.lock:
                n = srv.seen.get(self.path, 0)
                srv.seen[self.path] = n + 1
            if n < 2:
                code, extra = 503, [("Retry-After", "1")]
        body = b"ok\n"
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def sleepy():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.seen = {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def get(proxy, path, source="127.0.0.1"):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10,
                                   source_address=(source, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def stop(proxy):
    assert proxy.stop() == []


# --------------------------------------------------- routes, percentiles


def test_routes_and_percentiles_from_known_latencies(proxy_factory, sleepy):
    p = proxy_factory(upstream=sleepy)
    for i in range(30):
        assert get(p, "/fast/%d" % (1000 + i)) == 200
    for i in range(10):
        assert get(p, "/slow/%d" % i) == 200
    adm = Admin(p)
    # /metrics is published every ~100 ms, /stats routes as the writer writes.
    stats = wait_until(lambda: (lambda s: s if sum(sum(r.values()) for r in
                                                   s["routes"].values()) == 40 else None)(
        adm.json("/stats")), timeout=5.0)
    metrics_text = adm.get("/metrics").body.decode()
    stop(p)
    rows = {r["route"]: r for r in rjson("--db", p.db, "--by", "route")}
    assert set(rows) == {"/fast/{n}", "/slow/{n}"}
    fast, slow = rows["/fast/{n}"], rows["/slow/{n}"]
    assert (fast["count"], fast["2xx"], slow["count"]) == (30, 30, 10)
    # At least the sleep, within the buckets' 5% and a loaded machine's slack
    # (more for the tail: p99 of 30 is the slowest one).
    for row, ms in ((fast, 20), (slow, 150)):
        for k, slack in (("p50_ms", 60), ("p95_ms", 250), ("p99_ms", 250)):
            assert type(row[k]) is float
            assert ms * 0.95 <= row[k] <= ms * 1.05 + slack, (k, row)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    # Raw rows keep the route.
    with sqlite3.connect(p.db) as c:
        got = c.execute("SELECT path, route FROM exchanges ORDER BY id LIMIT 1").fetchone()
    assert got == ("/fast/1000", "/fast/{n}")
    # Percentiles in the other views too, and --route filters any view.
    code = rjson("--db", p.db, "--by", "code")
    assert code[0]["code"] == 200 and code[0]["p99_ms"] >= 150 * 0.95
    only_fast = rjson("--db", p.db, "--by", "host", "--route", "/fast/*")
    assert [r["count"] for r in only_fast] == [30]
    assert only_fast[0]["p50_ms"] < 150 * 0.95
    # /metrics and the report agree on the same traffic: each report
    # percentile lies within the /metrics bucket holding that rank (±5%).
    check_metrics_agree(metrics_text, rjson("--db", p.db, "--by", "host")[0])
    # /stats: per-route counts of the top routes.
    assert stats, "the /stats routes never reached 40 exchanges"
    assert list(stats["routes"].values()) == [{"/fast/{n}": 30, "/slow/{n}": 10}]
    assert list(stats["routes"]["127.0.0.1"]) == ["/fast/{n}", "/slow/{n}"]  # busiest first


def check_metrics_agree(text, row):
    buckets = []
    for line in text.splitlines():
        if line.startswith("statusproxy_request_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            int(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1]
    assert total == row["count"]
    for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        rank = max(1, -(-int(q * total * 1000) // 1000))
        lo = 0.0
        for le, cum in buckets:
            if cum >= rank:
                break
            lo = le
        got = row[key] / 1000.0
        assert lo * 0.95 <= got <= le * 1.05, (key, got, lo, le)


def test_user_patterns_and_the_cap(proxy_factory, sleepy):
    p = proxy_factory(upstream=sleepy, args=["--route", "/users/{name}/profile",
                                             "--route", "/files/*", "--max-routes", "3"])
    for path in ("/users/alice/profile", "/users/bob/profile", "/files/a/b.txt",
                 "/orders/7", "/orders/8", "/zeta", "/omega"):
        assert get(p, path) == 200
    stop(p)
    rows = rjson("--db", p.db, "--by", "route")
    got = {r["route"]: r["count"] for r in rows}
    # Three routes kept for the host; the next ones count as {other}.
    assert got == {"/users/{name}/profile": 2, "/files/*": 1, "/orders/{n}": 2,
                   "{other}": 2}, got
    # Raw rows keep every route, uncapped.
    with sqlite3.connect(p.db) as c:
        raw = {r[0] for r in c.execute("SELECT route FROM exchanges")}
    assert {"/zeta", "/omega"} <= raw


def test_bad_route_flags_exit_2(tmp_path):
    for args, flag in ((["--route", "users"], "--route"), (["--route", "/a/*/b"], "--route"),
                       (["--max-routes", "0"], "--max-routes")):
        p = subprocess.run([str(BIN), "run", "--db", str(tmp_path / "x.db"), *args],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and flag in p.stderr, (args, p.stderr)


# ------------------------------------------------------------- retries


def test_retry_view_premature_patient_and_giving_up(proxy_factory, sleepy):
    p = proxy_factory(upstream=sleepy)
    # Eager: retries at once, twice, though Retry-After said 1 s.
    assert [get(p, "/flaky-e/1", "127.0.0.2") for _ in range(3)] == [503, 503, 200]
    # Patient: waits out Retry-After each time.
    statuses = []
    for _ in range(3):
        statuses.append(get(p, "/flaky-p/1", "127.0.0.3"))
        if statuses[-1] == 503:
            time.sleep(1.1)
    assert statuses == [503, 503, 200]
    # Gives up after the first failure.
    assert get(p, "/flaky-g/1", "127.0.0.4") == 503
    stop(p)
    with sqlite3.connect(p.db) as c:
        ras = c.execute("SELECT retry_after_ms FROM exchanges WHERE final_code = 503").fetchall()
    assert ras and all(r == (1000,) for r in ras)
    rows = {r["client"]: r for r in rjson("--db", p.db, "--by", "retry")}
    assert set(rows) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    e, pa, g = rows["127.0.0.2"], rows["127.0.0.3"], rows["127.0.0.4"]
    assert (e["method"], e["route"]) == ("GET", "/flaky-e/{n}")
    assert (e["failures"], e["retries"], e["premature"], e["recovered"]) == (2, 2, 2, True)
    assert 0 <= e["min_gap_ms"] < 1000
    assert (pa["failures"], pa["retries"], pa["premature"], pa["recovered"]) == (2, 2, 0, True)
    assert pa["min_gap_ms"] >= 1000
    assert (g["failures"], g["retries"], g["premature"], g["min_gap_ms"], g["recovered"]) == \
        (1, 0, 0, None, False)
    # Sorted by failures; the other formats carry the same fields.
    text = report_ok("--db", p.db, "--by", "retry", "--format", "csv")
    rows_csv = list(csv.reader(io.StringIO(text, newline="")))
    assert rows_csv[0] == ["client", "method", "host", "route", "failures", "retries",
                           "premature", "min_gap_ms", "recovered"]
    assert ["127.0.0.4", "GET", "127.0.0.1", "/flaky-g/{n}", "1", "0", "0", "", "false"] in \
        rows_csv
    table = report_ok("--db", p.db, "--by", "retry")
    assert table.splitlines()[0].split()[:4] == ["CLIENT", "METHOD", "HOST", "ROUTE"]


def test_retry_view_without_raw_rows_says_so(proxy_factory, sleepy):
    p = proxy_factory(upstream=sleepy, args=["--log-exchanges", "none"])
    assert get(p, "/flaky-n/1") == 503
    stop(p)
    r = run("report", "--db", p.db, "--by", "retry")
    assert r.returncode == 1
    assert "no raw rows" in r.stderr and r.stdout == ""


def test_retry_view_refuses_html(tmp_path):
    """The HTML page holds the aggregate views only: asking it for --by retry
    is refused naming the flag (it used to print the ordinary page)."""
    db = tmp_path / "r.db"
    feed_lines(db, [rec(T, 503), rec(T + 1000, 200)])
    r = run("report", "--db", str(db), "--by", "retry", "--format", "html")
    assert r.returncode == 2 and r.stdout == "", r
    assert "--format" in r.stderr and "retry" in r.stderr


# ------------------------------------------------ feeding known records


def feed_lines(db, lines):
    p = subprocess.run([str(FEED), "--db", str(db)], input="".join(lines), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def rec(ms, code, path="/x/1", dur_us=10000, host="h.example"):
    return "%d\t10.0.0.1\tGET\t%s\t%s\t%d\t%d\t-\t-\t-\t%d\t10\t10\n" % (
        ms, host, path, code, code, dur_us)


T = 1794999960000  # a fixed Unix ms, at a minute's start (aggregates are per minute)


def test_baseline_from_two_databases(tmp_path):
    base, cur = tmp_path / "base.db", tmp_path / "cur.db"
    feed_lines(base, [rec(T + i, 200, dur_us=10000) for i in range(90)] +
               [rec(T + i, 500, dur_us=10000) for i in range(10)] +
               [rec(T + i, 404) for i in range(5)])
    feed_lines(cur, [rec(T + i, 200, dur_us=40000) for i in range(80)] +
               [rec(T + i, 500, dur_us=40000) for i in range(20)])
    rows = {r["code"]: r for r in rjson("--db", cur, "--baseline", base, "--by", "code")}
    r500 = rows[500]
    assert (r500["count"], r500["base_count"]) == (20, 10)
    assert r500["share"] == pytest.approx(0.2)
    assert r500["base_share"] == pytest.approx(10 / 105)
    assert r500["delta_share"] == pytest.approx(0.2 - 10 / 105)
    assert 40 * 0.95 <= r500["p99_ms"] <= 40 * 1.05
    assert 10 * 0.95 <= r500["base_p99_ms"] <= 10 * 1.05
    assert r500["delta_p99_ms"] == pytest.approx(r500["p99_ms"] - r500["base_p99_ms"])
    # A key only in the baseline: zeros and nulls on the current side.
    r404 = rows[404]
    assert (r404["count"], r404["share"], r404["p99_ms"], r404["base_count"]) == (0, 0, None, 5)
    assert r404["delta_p99_ms"] is None
    # Views without percentiles get the share fields only.
    cls = rjson("--db", cur, "--baseline", base, "--by", "class")
    assert list(cls[0]) == ["class", "count", "share", "base_count", "base_share", "delta_share"]
    # Every format carries them; the HTML page shows both periods.
    assert "base_count" in report_ok("--db", cur, "--baseline", base, "--format", "csv")
    assert "BASE_COUNT" in report_ok("--db", cur, "--baseline", base)
    page = report_ok("--db", cur, "--baseline", base, "--format", "html")
    assert 'id="base-chart"' in page and "base_p99_ms" in page


def test_baseline_from_two_windows(tmp_path):
    db = tmp_path / "w.db"
    hour = 3600_000
    feed_lines(db, [rec(T + i, 200) for i in range(50)] +
               [rec(T + hour + i, 200) for i in range(30)] +
               [rec(T + hour + i, 503) for i in range(30)])
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    rows = {r["class"]: r for r in rjson(
        "--db", db, "--by", "class", "--since", iso(T + hour), "--until", iso(T + 2 * hour),
        "--baseline-since", iso(T), "--baseline-until", iso(T + hour))}
    assert (rows["5xx"]["count"], rows["5xx"]["base_count"]) == (30, 0)
    assert rows["5xx"]["delta_share"] == pytest.approx(0.5)
    assert (rows["2xx"]["count"], rows["2xx"]["base_count"]) == (30, 50)
    assert rows["2xx"]["delta_share"] == pytest.approx(-0.5)
    r = run("report", "--db", db, "--baseline-since", "1h")
    assert r.returncode == 2 and "--baseline-until" in r.stderr


# ------------------------------------------------------------ asserts


def test_assert_exit_codes(tmp_path):
    db = tmp_path / "a.db"
    feed_lines(db, [rec(T + i, 200, dur_us=100000) for i in range(99)] + [rec(T, 503)])
    ok = run("report", "--db", db, "--assert", "5xx < 2%", "--assert", "p99 < 500ms",
             "--assert", "code 503 == 1", "--assert", "count >= 100")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "PASS 5xx < 2% (measured 1%)"
    assert lines[1].startswith("PASS p99 < 500ms (measured 10")
    assert lines[2:] == ["PASS code 503 == 1 (measured 1)", "PASS count >= 100 (measured 100)"]
    bad = run("report", "--db", db, "--assert", "5xx < 1%", "--assert", "p50 < 50ms")
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == ["FAIL 5xx < 1% (measured 1%)",
                                       "FAIL p50 < 50ms (measured 100.4ms)"]
    # Over the report's filters.
    none = run("report", "--db", db, "--host", "nope.*", "--assert", "count == 0")
    assert (none.returncode, none.stdout) == (0, "PASS count == 0 (measured 0)\n")
    for expr in ("5xx << 1%", "p99 < 1%", "latency < 5ms", "5xx < lots", "code 5 == 1"):
        m = run("report", "--db", db, "--assert", expr)
        assert m.returncode == 2 and expr in m.stderr, (expr, m.stderr)


# --------------------------------------------------------- migration


SCHEMA3_ROWS = [
    (1795000000000, "10.0.0.1", "GET", "a.example", "/users/42", 200, 200, 5000),
    (1795000001000, "10.0.0.1", "GET", "a.example",
     "/items/123e4567-e89b-12d3-a456-426614174000", 503, 503, 7000),
]


def test_migrate_schema_3_database(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for m in MIGRATIONS[:3]:
        con.executescript(m.read_text())
    con.execute("PRAGMA application_id = %d" % APPLICATION_ID)
    con.execute("PRAGMA user_version = 3")
    for s, cl, me, h, pa, up, fin, d in SCHEMA3_ROWS:
        con.execute("INSERT INTO exchanges (start_ms, client, method, host, path, upstream_code,"
                    " final_code, duration_us, bytes_in, bytes_out) VALUES (?,?,?,?,?,?,?,?,0,0)",
                    (s, cl, me, h, pa, up, fin, d))
        con.execute("INSERT INTO minute_stats VALUES (?, ?, ?, ?, '', 1, ?, 0, 0)",
                    (s // 60000 * 60, h, up, fin, d))
    con.commit()
    con.close()
    # Read-only reports work on the old file, before migrating.
    assert [r["count"] for r in rjson("--db", db, "--by", "code")] == [1, 1]
    # ... also merged with a schema 4 file: percentiles from the rows that have them.
    new = tmp_path / "new.db"
    feed_lines(new, [rec(1795000003000, 200, path="/users/8", dur_us=20000)])
    both = {r["code"]: r for r in rjson("--db", db, "--db", new, "--by", "code")}
    assert (both[200]["count"], both[503]["count"], both[503]["p99_ms"]) == (2, 1, None)
    assert 20 * 0.95 <= both[200]["p99_ms"] <= 20 * 1.05
    both = rjson("--db", db, "--db", new, "--by", "route")
    assert [(r["route"], r["count"]) for r in both] == [(None, 2), ("/users/{n}", 1)]
    m = run("migrate", "--db", db)
    # Migrated to the newest schema (4 added routes; later ones keep them).
    assert (m.returncode, m.stdout.strip()) == (0, "schema version %d" % len(MIGRATIONS)), \
        m.stderr
    with sqlite3.connect(db) as c:
        routes = [r[0] for r in c.execute("SELECT route FROM exchanges ORDER BY id")]
        kept = c.execute("SELECT count(*), sum(count) FROM minute_stats").fetchone()
        views = (c.execute("SELECT route, retry_after_ms FROM exchange_log ORDER BY id").fetchall(),
                 c.execute("SELECT route, count FROM minute_log").fetchall())
    assert routes == ["/users/{n}", "/items/{uuid}"]
    assert kept == (2, 2)
    # The readable views were recreated with the new columns.
    assert views == ([("/users/{n}", None), ("/items/{uuid}", None)], [(None, 1), (None, 1)])
    # Old aggregates have no route and no durations; new records add both.
    rows = rjson("--db", db, "--by", "route")
    assert [(r["route"], r["count"], r["p50_ms"]) for r in rows] == [(None, 2, None)]
    feed_lines(db, [rec(1795000002000, 200, path="/users/7")])
    rows = rjson("--db", db, "--by", "route")
    assert [(r["route"], r["count"]) for r in rows] == [(None, 2), ("/users/{n}", 1)]
    retry = rjson("--db", db, "--by", "retry")
    assert [(r["route"], r["failures"]) for r in retry] == [("/items/{uuid}", 1)]


def rrec(ms, code, client="10.0.0.9", path="/r/1", ra_ms=0):
    return "%d\t%s\tGET\th.example\t%s\t%d\t%d\t-\t-\t-\t1000\t10\t10\t%d\n" % (
        ms, client, path, code, code, ra_ms)


def test_retry_view_merges_databases_by_time(tmp_path):
    # Two proxies saw the same client in the same period: the retry view of
    # both files must read their rows in time order, as one file would.
    a, b, one = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "one.db"
    lines_a = [rrec(T + 10_000, 503, ra_ms=5000),               # failure, via proxy A
               rrec(T + 40_000, 200, client="10.0.0.8")]        # another client recovers
    lines_b = [rrec(T + 1_000, 200),                            # before any failure
               rrec(T + 12_000, 200),                           # premature retry, via B
               rrec(T + 20_000, 503, client="10.0.0.8")]
    feed_lines(a, lines_a)
    feed_lines(b, lines_b)
    feed_lines(one, sorted(lines_a + lines_b, key=lambda l: int(l.split("\t")[0])))
    want = rjson("--db", one, "--by", "retry")
    got = rjson("--db", a, "--db", b, "--by", "retry")
    assert got == want
    rows = {r["client"]: r for r in got}
    assert (rows["10.0.0.9"]["retries"], rows["10.0.0.9"]["premature"],
            rows["10.0.0.9"]["min_gap_ms"], rows["10.0.0.9"]["recovered"]) == (1, 1, 1999, True)
    assert (rows["10.0.0.8"]["failures"], rows["10.0.0.8"]["retries"],
            rows["10.0.0.8"]["recovered"]) == (1, 1, True)
    # The files in the other order: the same rows.
    assert rjson("--db", b, "--db", a, "--by", "retry") == want
