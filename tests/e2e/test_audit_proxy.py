"""The audit log through the real proxy (DESIGN §5, §6; issue 5).

Traffic goes through a running `statusproxy run` to the test backend; the
proxy is stopped with SIGTERM (clean exit 0 is asserted), then the SQLite
file it wrote is read with Python's sqlite3 module (read-only) and with
`statusproxy report`.  Every expected value here comes from the traffic the
test sent, computed independently of the C code:

- the record each request must leave (host, path without query, upstream
  and final code, rule, action, error, bytes in = the request bytes sent,
  bytes out = the response bytes received);
- the rows of every `report --by` view (DESIGN §6: fields, counts, order).

    STATUSPROXY_BIN=$PWD/build/statusproxy /usr/bin/python3 -m pytest -q tests/e2e/test_audit_proxy.py
    STATUSPROXY_BIN=$PWD/build/san/statusproxy /usr/bin/python3 -m pytest -q tests/e2e/test_audit_proxy.py
"""

import csv
import hashlib
import io
import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import ConnectionClosed, HttpConn, ProtocolError, free_port, wait_until

from report_model import ANY_MS, VIEWS, expected_rows, minute_of_ms, route_of

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted((REPO / "migrations").glob("[0-9]*_*.sql"))
CLIENT = "127.0.0.1"

# ------------------------------------------------------------------ helpers


def cli(binary, *args, timeout=60):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def report(binary, dbs, *args, fmt="json"):
    argv = ["report"]
    for db in ([dbs] if isinstance(dbs, (str, Path)) else dbs):
        argv += ["--db", str(db)]
    argv += list(args) + ["--format", fmt]
    p = cli(binary, *argv)
    assert p.returncode == 0, "report %s: exit %d\n%s" % (args, p.returncode, p.stderr)
    return json.loads(p.stdout) if fmt == "json" else p.stdout


def ro(db):
    """A read-only connection: the test never writes the proxy's file."""
    return sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(str(db)), uri=True,
                           timeout=10)


COLS = ("id", "start_ms", "client", "method", "host", "path", "upstream_code", "final_code",
        "rule", "action", "error", "duration_us", "bytes_in", "bytes_out")


def raw_rows(db):
    with ro(db) as c:
        return [dict(zip(COLS, r)) for r in
                c.execute("SELECT %s FROM exchanges ORDER BY id" % ", ".join(COLS))]


def scalar(db, sql):
    c = ro(db)
    try:
        return c.execute(sql).fetchone()[0]
    finally:
        c.close()


def minute_total(db):
    return scalar(db, "SELECT coalesce(sum(count), 0) FROM minute_stats")


def dropped_total(db):
    return scalar(db, "SELECT coalesce(sum(count), 0) FROM dropped")


def expect_view(view, recs, names=None):
    """DESIGN §6 rows for RECS, dicts with host, upstream, final, rule and
    start_ms."""
    return expected_rows(view, [dict(r, minute=minute_of_ms(r["start_ms"])) if "start_ms" in r
                                else r for r in recs], names)


def approx_shares(rows):
    """Shares compared to 1e-9 (the JSON may print fewer digits)."""
    return [dict(r, share=pytest.approx(r["share"], rel=1e-9, abs=1e-12)) if "share" in r
            else r for r in rows]


def assert_views(binary, dbs, recs, names, *args):
    for view in VIEWS:
        got = report(binary, dbs, "--by", view, *args)
        want = expect_view(view, recs, names)
        assert got == approx_shares(want), "--by %s %s" % (view, " ".join(args))


@pytest.fixture(scope="module")
def names(statusproxy_bin):
    p = cli(statusproxy_bin, "codes", "--format", "json")
    assert p.returncode == 0, p.stderr
    return {e["code"]: e["name"] for e in json.loads(p.stdout)}


def write_rules(tmp_path, text, name="audit.rules"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def stop_clean(p):
    """SIGTERM and wait: exit 0, no sanitizer report (DESIGN §5)."""
    problems = p.stop(timeout=15)
    assert problems == [], "\n".join(problems) + "\n" + p.stderr()[-3000:]


def admin_get(p, path):
    with HttpConn(p.admin_port) as c:
        return c.exchange("GET", path, host="127.0.0.1:%d" % p.admin_port)


def metric(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert m, "no %s in /metrics:\n%s" % (name, text)
    return float(m.group(1))


class Sent:
    """One request sent on its own connection, with what the proxy must
    record for it.  GONE_AFTER: the client resets its connection (RST, no
    FIN: a FIN after a whole request is a half-close the proxy answers)
    that many seconds after sending, without reading.  CONTENT_LENGTH
    larger than the body: the request body stays unfinished."""

    def __init__(self, method, target, host, expect, body=None, gone_after=None,
                 content_length=None):
        self.method, self.target, self.host, self.body = method, target, host, body
        self.expect = expect          # host, path, upstream, final, rule, action, error
        self.gone_after = gone_after
        lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % host]
        if body is not None:
            lines.append("Content-Length: %d" % (content_length or len(body)))
        self.raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        self.response = None          # helpers.Response, or None (reset / cut / gone)
        self.failure = None

    def run(self, port):
        with HttpConn(port, timeout=15) as c:
            c.send(self.raw)
            if self.gone_after is not None:
                time.sleep(self.gone_after)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return self
            try:
                self.response = c.read_response(method=self.method, allow_incomplete=True)
            except (ConnectionClosed, ConnectionResetError) as e:
                self.failure = e
        return self


def exp(host, path, upstream, final, rule=None, action=None, error=None):
    return {"host": host, "path": path, "upstream": upstream, "final": final, "rule": rule,
            "action": action, "error": error}


class AnyOf:
    """An expected field value where the contract allows several."""

    def __init__(self, *values):
        self.values = values

    def __eq__(self, other):
        return other in self.values

    def __repr__(self):
        return "AnyOf%r" % (self.values,)


def row_view(row):
    return {"host": row["host"], "path": row["path"], "upstream": row["upstream_code"],
            "final": row["final_code"], "rule": row["rule"], "action": row["action"],
            "error": row["error"]}


def match_rows(rows, sent):
    """Pair each sent request with one raw row (each row used once), on the
    record fields; returns [(sent, row)] or fails listing the differences."""
    left = list(rows)
    pairs, missing = [], []
    for s in sent:
        for i, row in enumerate(left):
            if s.expect == row_view(row):
                pairs.append((s, left.pop(i)))
                break
        else:
            missing.append(s)
    assert not missing and not left, (
        "records differ from the traffic sent\nexpected, not found:\n  %s\nrecorded, not "
        "expected:\n  %s" % ("\n  ".join("%s %s Host:%s -> %r" % (s.method, s.target, s.host,
                                                                    s.expect)
                                         for s in missing),
                             "\n  ".join(repr(row_view(r)) for r in left)))
    return pairs


# ============================================================ the known mix

MIX_RULES = """\
# issue 5: a known mix of rewrites, aborts and a reset
rule hide  path /status/404 status 404  => set-status 200
rule mask  status 500                   => set-status 503
rule down  path /down                   => abort 503
rule flaky path /flaky every 2          => abort 500
rule r     path /r                      => reset
"""


def mix_plan(backend_port, refused):
    """(the requests, in the order sent).  Gateway requests vary the Host
    header (port and query must not reach the record); forward requests
    name the backend as localhost and 127.0.0.1."""
    fwd_local = "http://localhost:%d" % backend_port
    fwd_ip = "http://127.0.0.1:%d" % backend_port
    plan = []

    def add(n, method, target, host, expect, body=None):
        for _ in range(n):
            plan.append(Sent(method, target, host, dict(expect), body))

    # api.example: plain successes, methods, a port in Host, a query.
    add(4, "GET", "/status/200", "api.example", exp("api.example", "/status/200", 200, 200))
    add(2, "GET", "/status/200?body=hello&x=1", "api.example:8443",
        exp("api.example", "/status/200", 200, 200))
    add(2, "POST", "/status/201?body=made", "api.example",
        exp("api.example", "/status/201", 201, 201), body=b'{"new": 1}')
    add(1, "HEAD", "/status/200", "api.example", exp("api.example", "/status/200", 200, 200))
    add(1, "DELETE", "/status/204", "api.example", exp("api.example", "/status/204", 204, 204))
    # shop.example: rewrites by rule, redirects, 4xx passing through.
    add(3, "GET", "/status/404?body=gone", "shop.example",
        exp("shop.example", "/status/404", 404, 200, "hide", "set-status 200"))
    add(2, "GET", "/status/500", "shop.example",
        exp("shop.example", "/status/500", 500, 503, "mask", "set-status 503"))
    add(2, "GET", "/status/302?hdr=Location:/x", "shop.example",
        exp("shop.example", "/status/302", 302, 302))
    add(1, "GET", "/status/418", "shop.example", exp("shop.example", "/status/418", 418, 418))
    # web.example: aborts (no upstream contacted), every-2, the reset.
    add(2, "GET", "/down", "web.example", exp("web.example", "/down", None, 503, "down",
                                                "abort 503"))
    for k in range(4):  # 1st and 3rd pass (the backend has no /flaky: 404), 2nd and 4th abort
        if k % 2 == 0:
            add(1, "GET", "/flaky", "web.example", exp("web.example", "/flaky", 404, 404))
        else:
            add(1, "GET", "/flaky", "web.example",
                exp("web.example", "/flaky", None, 500, "flaky", "abort 500"))
    # A reset is a request rule acting on the response that comes back
    # (DESIGN §4): the backend answered (404), the client got nothing.
    # Which error a rule-made reset records is not fixed: none or "reset".
    add(1, "GET", "/r", "web.example",
        exp("web.example", "/r", 404, None, "r", "reset", AnyOf(None, "reset")))
    # bad.example: broken upstream answers -> 502.
    add(1, "GET", "/raw/badstatus", "bad.example",
        exp("bad.example", "/raw/badstatus", None, 502, error="bad_response"))
    add(1, "GET", "/raw/garbage", "bad.example",
        exp("bad.example", "/raw/garbage", None, 502, error="bad_response"))
    add(1, "GET", "/status/999", "bad.example",
        exp("bad.example", "/status/999", 999, 502, error="invalid_status"))
    # edge.example: an upstream timeout (--response-timeout 1s), an answer
    # cut by the upstream (the head went out: final 200), clients gone.
    add(1, "GET", "/hang", "edge.example",
        exp("edge.example", "/hang", None, 504, error="timeout"))
    add(1, "GET", "/raw/close-mid-body", "edge.example",
        exp("edge.example", "/raw/close-mid-body", 200, 200, error="upstream_closed"))
    # Gone before the answer came: whether the proxy still waited for the
    # upstream's code is its choice; the client received nothing.
    plan.append(Sent("GET", "/slow?head_delay_ms=500", "edge.example",
                     exp("edge.example", "/slow", AnyOf(None, 200), None,
                         error="client_closed"), gone_after=0.1))
    plan.append(Sent("POST", "/sink", "edge.example",
                     exp("edge.example", "/sink", None, None, error="client_closed"),
                     body=b"x" * 100, content_length=1000, gone_after=0.2))
    # Forward mode: the record's host is the URI's, whatever Host says.
    add(2, "GET", fwd_local + "/status/200?q=1", "localhost:%d" % backend_port,
        exp("localhost", "/status/200", 200, 200))
    add(1, "GET", fwd_local + "/status/503", "ignored.example",
        exp("localhost", "/status/503", 503, 503))
    add(1, "GET", fwd_ip + "/status/404", "127.0.0.1:%d" % backend_port,
        exp("127.0.0.1", "/status/404", 404, 200, "hide", "set-status 200"))
    add(1, "GET", fwd_ip + "/status/301?hdr=Location:/y", "127.0.0.1",
        exp("127.0.0.1", "/status/301", 301, 301))
    add(2, "GET", "http://127.0.0.1:%d/nothing/here?x" % refused, "127.0.0.1:%d" % refused,
        exp("127.0.0.1", "/nothing/here", None, 502, error="connect_refused"))
    return plan


def run_plan(p, plan):
    t0 = int(time.time() * 1000)
    for s in plan:
        s.run(p.port)
    t1 = int(time.time() * 1000)
    return t0, t1


def check_answers(plan):
    """What the clients saw agrees with the records we expect."""
    for s in plan:
        if s.gone_after is not None:
            continue
        if s.expect["final"] is None:
            assert s.response is None, "%s %s: expected a reset, got %r" % (
                s.method, s.target, s.response)
        else:
            assert s.response is not None, "%s %s: no answer (%r)" % (s.method, s.target,
                                                                      s.failure)
            assert s.response.status == s.expect["final"], (s.method, s.target, s.response)
            assert s.response.complete == (s.expect["error"] != "upstream_closed"), \
                (s.method, s.target, s.response)


def recs_of(plan, rows_by_sent=None):
    out = []
    for s in plan:
        r = {"host": s.expect["host"], "upstream": s.expect["upstream"],
             "final": s.expect["final"], "rule": s.expect["rule"],
             "route": route_of(s.expect["path"])}
        if rows_by_sent is not None:   # the row matched the expectation (AnyOf resolved)
            row = rows_by_sent[id(s)]
            r.update(upstream=row["upstream_code"], start_ms=row["start_ms"],
                     duration_us=row["duration_us"])
        out.append(r)
    return out


def test_known_mix_every_view(proxy_factory, backend, refused_port, statusproxy_bin, names,
                              tmp_path):
    """A known mix through the binary -> after SIGTERM, the raw rows and
    every `--by` view are exactly what was sent; csv/table agree; time and
    host filters select as asked."""
    rules = write_rules(tmp_path, MIX_RULES)
    p = proxy_factory(upstream=backend.url, args=["--rules", rules, "--response-timeout", "1s"])
    plan = mix_plan(backend.port, refused_port)
    t0, t1 = run_plan(p, plan)
    check_answers(plan)
    stop_clean(p)

    rows = raw_rows(p.db)
    pairs = match_rows(rows, plan)
    for s, row in pairs:
        what = "%s %s Host:%s" % (s.method, s.target, s.host)
        assert row["client"] == CLIENT, what
        assert row["method"] == s.method, what
        assert t0 - 1000 <= row["start_ms"] <= t1 + 1000, (what, row, t0, t1)
        assert 0 <= row["duration_us"] <= (t1 - t0 + 1000) * 1000, (what, row)
        assert row["bytes_in"] == len(s.raw), (what, "bytes_in", row["bytes_in"], len(s.raw))
        got_out = len(s.response.raw) if s.response is not None else 0
        assert row["bytes_out"] == got_out, (what, "bytes_out", row["bytes_out"], got_out)
    assert len({r["id"] for r in rows}) == len(plan)
    assert minute_total(p.db) == len(plan), "minute_stats counts every exchange once"
    assert dropped_total(p.db) == 0

    recs = recs_of(plan, {id(s): row for s, row in pairs})
    # Spot checks of the expectations themselves (the mix covers what it should).
    assert {r["host"] for r in recs} == {"api.example", "shop.example", "web.example",
                                        "bad.example", "edge.example", "localhost",
                                        "127.0.0.1"}
    assert any(r["final"] is None for r in recs) and any(r["upstream"] == 999 for r in recs)
    assert_views(statusproxy_bin, p.db, recs, names)
    assert report(statusproxy_bin, p.db) == approx_shares(expect_view("code", recs, names))

    # A few exact rows, written out rather than computed.
    by_code = {r["code"]: r["count"] for r in report(statusproxy_bin, p.db)}
    assert by_code == {200: 14, 201: 2, 204: 1, 503: 5, 302: 2, 418: 1, 500: 2, 404: 2,
                       502: 5, 504: 1, 301: 1, None: 3}
    rewrite = report(statusproxy_bin, p.db, "--by", "rewrite")
    assert {"upstream_code": 404, "code": 200, "rule": "hide", "count": 4} in rewrite
    assert {"upstream_code": None, "code": 502, "rule": None, "count": 4} in rewrite
    assert {"upstream_code": None, "code": 504, "rule": None, "count": 1} in rewrite
    assert {"upstream_code": 999, "code": 502, "rule": None, "count": 1} in rewrite
    assert {"upstream_code": 404, "code": None, "rule": "r", "count": 1} in rewrite
    pcts = {"p50_ms": ANY_MS, "p95_ms": ANY_MS, "p99_ms": ANY_MS}
    assert report(statusproxy_bin, p.db, "--by", "rule") == [
        dict(r, **pcts) for r in (
            {"rule": "hide", "count": 4}, {"rule": "down", "count": 2},
            {"rule": "flaky", "count": 2}, {"rule": "mask", "count": 2}, {"rule": "r", "count": 1})]

    # csv: a header row, then the json rows as text.
    for view in ("host", "rewrite"):
        text = report(statusproxy_bin, p.db, "--by", view, fmt="csv")
        table = list(csv.reader(io.StringIO(text, newline="")))
        want = expect_view(view, recs, names)
        assert table[0] == list(want[0])
        assert table[1:] == [["" if v is None else str(v) for v in w.values()] for w in want]
    # table: one line per row, the key first and the count in its column.
    text = report(statusproxy_bin, p.db, "--by", "host", fmt="table")
    lines = text.splitlines()
    assert lines[0].split()[0].lower() == "host"
    for w, line in zip(expect_view("host", recs), lines[1:]):
        assert line.split()[:7] == [str(v) for v in w.values()][:7], line
    text = report(statusproxy_bin, p.db, "--by", "code", fmt="table")
    assert re.search(r"^\s*200\s+OK\s+2xx\s+14\s", text, re.M), text

    # Time filters: everything is within the last hour, nothing before the test.
    assert_views(statusproxy_bin, p.db, recs, names, "--since", "1h")
    since_iso = datetime.fromtimestamp((t0 - 60000) / 1000, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert_views(statusproxy_bin, p.db, recs, names, "--since", since_iso)
    # Reports read the per-minute aggregates, so a time inside a minute
    # selects whole minutes; the start of the minute of the first request
    # is before the test and must exclude every exchange.
    before_iso = datetime.fromtimestamp(t0 // 60000 * 60, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    for view in VIEWS:
        assert report(statusproxy_bin, p.db, "--by", view, "--until", before_iso) == [], view
    after_iso = datetime.fromtimestamp(t1 / 1000 + 120, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert report(statusproxy_bin, p.db, "--since", after_iso) == []
    assert report(statusproxy_bin, p.db, "--until", after_iso) == \
        approx_shares(expect_view("code", recs, names))

    # --host globs.
    def only(pred):
        return [r for r in recs if pred(r["host"])]
    assert report(statusproxy_bin, p.db, "--by", "host", "--host", "*.example") == \
        expect_view("host", only(lambda h: h.endswith(".example")))
    assert report(statusproxy_bin, p.db, "--host", "shop.*") == \
        approx_shares(expect_view("code", only(lambda h: h == "shop.example"), names))
    assert report(statusproxy_bin, p.db, "--by", "rewrite", "--host", "127.0.0.1") == \
        expect_view("rewrite", only(lambda h: h == "127.0.0.1"))
    assert report(statusproxy_bin, p.db, "--by", "host", "--host", "?eb.example") == \
        expect_view("host", only(lambda h: h == "web.example"))
    assert report(statusproxy_bin, p.db, "--by", "host", "--host", "local*") == \
        expect_view("host", only(lambda h: h == "localhost"))
    assert report(statusproxy_bin, p.db, "--host", "nothing.here") == []


def test_merge_two_proxy_runs(proxy_factory, backend, refused_port, statusproxy_bin, names,
                              tmp_path):
    """Two proxies, two files: `report --db A --db B` is the sum of both."""
    rules = write_rules(tmp_path, MIX_RULES)
    a = proxy_factory(upstream=backend.url, args=["--rules", rules, "--response-timeout", "1s"])
    b = proxy_factory(upstream=backend.url)   # no rules: nothing rewritten here
    plan_a = mix_plan(backend.port, refused_port)
    plan_b = []
    for k in range(3):
        plan_b.append(Sent("GET", "/status/200", "api.example",
                           exp("api.example", "/status/200", 200, 200)))
    plan_b.append(Sent("GET", "/status/404", "shop.example",
                       exp("shop.example", "/status/404", 404, 404)))
    plan_b.append(Sent("GET", "/status/500", "other.example",
                       exp("other.example", "/status/500", 500, 500)))
    plan_b.append(Sent("GET", "/down", "web.example", exp("web.example", "/down", 404, 404)))
    plan_b.append(Sent("GET", "http://127.0.0.1:%d/x" % refused_port, "x",
                       exp("127.0.0.1", "/x", None, 502, error="connect_refused")))
    run_plan(a, plan_a)
    run_plan(b, plan_b)
    check_answers(plan_a)
    check_answers(plan_b)
    stop_clean(a)
    stop_clean(b)
    pa = match_rows(raw_rows(a.db), plan_a)
    pb = match_rows(raw_rows(b.db), plan_b)
    starts = {id(s): row for s, row in pa + pb}
    recs_a, recs_b = recs_of(plan_a, starts), recs_of(plan_b, starts)
    assert_views(statusproxy_bin, a.db, recs_a, names)
    assert_views(statusproxy_bin, b.db, recs_b, names)
    assert_views(statusproxy_bin, [a.db, b.db], recs_a + recs_b, names)
    assert_views(statusproxy_bin, [b.db, a.db], recs_a + recs_b, names)
    assert_views(statusproxy_bin, [a.db, b.db], recs_a + recs_b, names, "--since", "1h")
    merged = report(statusproxy_bin, [a.db, b.db], "--by", "host", "--host", "shop.*")
    assert merged == [{"host": "shop.example", "scheme": "http", "count": 9, "1xx": 0, "2xx": 3, "3xx": 2,
                       "4xx": 2, "5xx": 2, "p50_ms": ANY_MS, "p95_ms": ANY_MS,
                       "p99_ms": ANY_MS}]


# ================================================== records reach the file


def test_record_in_file_within_a_second(proxy, statusproxy_bin):
    """Each answered exchange is in the file within ~1 s while the proxy
    keeps running (polled read-only from outside the process)."""
    lags = []
    for i in range(3):
        with proxy.conn() as c:
            r = c.exchange("GET", "/status/201?body=soon", host="soon%d.example" % i)
        assert r.status == 201
        t_answer = time.monotonic()

        def landed():
            try:
                return scalar(proxy.db, "SELECT count(*) FROM exchanges WHERE host = "
                              "'soon%d.example'" % i) == 1 and \
                    scalar(proxy.db, "SELECT coalesce(sum(count), 0) FROM minute_stats "
                           "WHERE host = 'soon%d.example'" % i) == 1
            except sqlite3.OperationalError:  # busy for a moment while it writes
                return False
        assert wait_until(landed, 5.0, interval=0.02), "record %d not in the file after 5 s" % i
        lags.append(time.monotonic() - t_answer)
        assert proxy.proc.poll() is None, "the proxy must keep running"
    # 1 s by contract; 0.5 s of slack for a loaded test machine.
    assert max(lags) <= 1.5, "records reached the file after %s s" % lags
    rows = raw_rows(proxy.db)
    assert [(r["host"], r["path"], r["upstream_code"], r["final_code"], r["error"])
            for r in rows] == [("soon%d.example" % i, "/status/201", 201, 201, None)
                               for i in range(3)]


# ====================================================== SIGTERM under load


def test_sigterm_under_load_records_exactly_what_was_answered(proxy_factory, backend,
                                                               statusproxy_bin, names):
    """Client threads send as fast as they can; SIGTERM mid-load, with a
    slow exchange in flight.

    Accounting.  A client thread counts an exchange as *answered* when it
    read a complete response (by status), and as *cut* when it had written
    a whole request but the connection ended (EOF, reset, timeout) before a
    complete response.  A connection that could not be opened sent nothing.
    - Every answered exchange must be recorded, with that final code:
      report counts per code == answered per code, exactly.
    - A cut request may never have reached the proxy (written into a
      connection it was closing), or reached it and got no answer: the
      latter is recorded with no final code and an error saying why.  So
      rows without final code <= cut, and each has an error.
    - Nothing else: report total == answered + rows without final code,
      raw rows (--log-exchanges all) and minute_stats agree, nothing dropped.
    - The exchange in flight at SIGTERM (a 700 ms backend answer) is
      finished, not cut (DESIGN §5: finish in-flight exchanges)."""
    p = proxy_factory(upstream=backend.url)
    stop_load = threading.Event()
    lock = threading.Lock()
    answered, cut, errors = Counter(), [0], []

    def client(tid):
        c = None
        try:
            while not stop_load.is_set():
                if c is None:
                    try:
                        c = HttpConn(p.port, timeout=5)
                    except OSError:
                        return  # refused: the proxy stopped accepting
                try:
                    c.request("GET", "/status/200?body=x", host="load%d.example" % tid)
                except OSError:
                    c.close()   # the request never went whole: not an exchange
                    c = None
                    continue
                try:
                    r = c.read_response()
                except (ProtocolError, OSError):
                    with lock:
                        cut[0] += 1
                    c.close()
                    c = None
                    continue
                with lock:
                    answered[r.status] += 1
                if "close" in r.tokens("connection"):
                    c.close()
                    c = None
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))
        finally:
            if c is not None:
                c.close()

    slow_result = {}

    def slow_client():
        try:
            with HttpConn(p.port, timeout=15) as c:
                slow_result["r"] = c.exchange("GET", "/slow?head_delay_ms=700",
                                              host="slow.example")
        except Exception as e:  # noqa: BLE001
            slow_result["e"] = e

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    st = threading.Thread(target=slow_client, daemon=True)
    st.start()
    assert backend.wait_for(lambda b: any(e["target"].startswith("/slow")
                                          for e in b.log), 5.0), "slow request not upstream"
    problems = []
    stopper = threading.Thread(target=lambda: problems.extend(p.stop(timeout=15)))
    t_term = time.monotonic()
    stopper.start()
    time.sleep(1.0)        # load keeps coming for ~1 s after SIGTERM
    stop_load.set()
    for t in threads:
        t.join(20)
    st.join(20)
    stopper.join(20)
    exit_after = time.monotonic() - t_term
    assert problems == [], "\n".join(problems) + "\n" + p.stderr()[-3000:]
    assert errors == []
    assert exit_after < 12, "exit took %.1f s" % exit_after
    assert "r" in slow_result, "in-flight exchange cut by SIGTERM: %r" % slow_result.get("e")
    assert slow_result["r"].status == 200 and slow_result["r"].body == b"slow\n"
    answered[200] += 1   # the slow one
    n_answered = sum(answered.values())
    assert n_answered > 50, "too little load to mean anything: %r" % answered

    rows = raw_rows(p.db)
    got = {r["code"]: r["count"] for r in report(statusproxy_bin, p.db)}
    not_answered = got.pop(None, 0)
    assert got == dict(answered), "report per code != answers the clients read " \
        "(cut: %d)" % cut[0]
    assert not_answered <= cut[0], "%d records without final code, only %d requests cut" % (
        not_answered, cut[0])
    no_final = [r for r in rows if r["final_code"] is None]
    assert len(no_final) == not_answered
    assert all(r["error"] for r in no_final), no_final
    total = n_answered + not_answered
    assert len(rows) == total and len({r["id"] for r in rows}) == total
    assert minute_total(p.db) == total
    assert dropped_total(p.db) == 0
    assert [r for r in rows if r["host"] == "slow.example"][0]["final_code"] == 200
    # Exchanges answered whole have no error.
    assert all(r["error"] is None for r in rows if r["final_code"] == 200)


def test_sigterm_with_several_pooled_upstream_connections(proxy, backend, statusproxy_bin):
    """The smallest shape of the load test above: two client connections
    open at once make two upstream connections, both idle in the pool when
    SIGTERM comes.  The proxy must still exit 0 promptly, both records kept."""
    c1, c2 = proxy.conn(), proxy.conn()
    try:
        c1.request("GET", "/slow?head_delay_ms=300", host="one.example")  # keeps its
        assert backend.wait_for(lambda b: b.requests == 1, 5.0)          # upstream busy
        c2.request("GET", "/status/201", host="two.example")
        assert c1.read_response().status == 200
        assert c2.read_response().status == 201
    finally:
        c1.close()
        c2.close()
    assert backend.connections == 2, "expected two upstream connections"
    t = time.monotonic()
    stop_clean(proxy)
    assert time.monotonic() - t < 5, "exit took %.1f s with no exchange in flight" % (
        time.monotonic() - t)
    assert sorted((r["host"], r["final_code"]) for r in raw_rows(proxy.db)) == \
        [("one.example", 200), ("two.example", 201)]


def test_sigterm_finishes_in_flight_and_stops_accepting(proxy, backend, statusproxy_bin):
    """SIGTERM while a 1.5 s answer is in flight: new connections are
    refused at once, the in-flight answer arrives whole, then exit 0 with
    its record in the file."""
    result = {}

    def slow():
        try:
            with HttpConn(proxy.port, timeout=15) as c:
                result["r"] = c.exchange("GET", "/slow?head_delay_ms=1500", host="late.example")
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    t = threading.Thread(target=slow)
    t.start()
    assert backend.wait_for(lambda b: b.requests == 1, 5.0)
    problems = []
    stopper = threading.Thread(target=lambda: problems.extend(proxy.stop(timeout=15)))
    stopper.start()
    time.sleep(0.4)
    refused = False
    try:
        with HttpConn(proxy.port, timeout=2) as c:
            c.request("GET", "/status/200", host="new.example")
            c.read_response()
    except (ConnectionRefusedError, ConnectionClosed, ConnectionResetError):
        refused = True
    except (ProtocolError, OSError):
        refused = True
    t.join(20)
    stopper.join(20)
    assert problems == [], "\n".join(problems) + "\n" + proxy.stderr()[-3000:]
    assert refused, "a new connection was served after SIGTERM"
    assert "r" in result, "in-flight exchange cut: %r" % result.get("e")
    assert result["r"].status == 200 and result["r"].body == b"slow\n"
    assert [(r["host"], r["path"], r["final_code"], r["error"]) for r in raw_rows(proxy.db)] \
        == [("late.example", "/slow", 200, None)]


# ======================================================= a locked database

LOCK_HOLDER = """\
.bail on
.timeout 5000
BEGIN EXCLUSIVE;
SELECT 'locked';
"""


def lock_after_one_record(proxy):
    """Send one request, wait for its record, then start the sqlite3 CLI
    holding an exclusive lock on the proxy's database. Returns the holder
    process, once it holds the lock; it ends with 'COMMIT;' on its stdin."""
    with proxy.conn() as c:
        assert c.exchange("GET", "/status/200", host="warmup.example").status == 200
    assert wait_until(lambda: scalar(proxy.db, "SELECT count(*) FROM exchanges") == 1, 5.0)
    holder = subprocess.Popen(["sqlite3", proxy.db], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder.stdin.write(LOCK_HOLDER)
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    return holder


def test_locked_database_loses_nothing(proxy, backend, statusproxy_bin, names):
    """Another process holds an exclusive lock for ~2 s while N requests go
    through: every answer is prompt, then all N records arrive once the
    lock is released, none twice, none counted as dropped."""
    n = 40
    holder = lock_after_one_record(proxy)
    try:
        t_lock = time.monotonic()
        slowest = 0.0
        for i in range(n):
            with proxy.conn() as c:
                t = time.monotonic()
                r = c.exchange("GET", "/status/%d" % (200 + i % 3),
                               host="h%02d.lock.example" % i)
                slowest = max(slowest, time.monotonic() - t)
            assert r.status == 200 + i % 3
        assert slowest < 1.0, "answers waited for the database (%.2f s)" % slowest
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t_lock)))
        # The lock really held: nothing of the N is committed yet.
        assert scalar(proxy.db, "SELECT count(*) FROM exchanges") == 1
        assert holder.poll() is None
        holder.stdin.write("COMMIT;\n.quit\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert wait_until(lambda: scalar(proxy.db, "SELECT count(*) FROM exchanges") >= n + 1
                      and minute_total(proxy.db) >= n + 1, 10.0), \
        "records lost after the lock: %d of %d" % (
            scalar(proxy.db, "SELECT count(*) FROM exchanges"), n + 1)
    time.sleep(1.2)   # anything duplicated would land by now
    m = admin_get(proxy, "/metrics")
    assert m.status == 200
    assert metric(m.body.decode(), "statusproxy_records_dropped_total") == 0
    stats = json.loads(admin_get(proxy, "/stats").body)
    assert stats["dropped"] == 0
    stop_clean(proxy)

    rows = raw_rows(proxy.db)
    hosts = Counter(r["host"] for r in rows)
    assert hosts == Counter(["warmup.example"] + ["h%02d.lock.example" % i for i in range(n)])
    assert len({r["id"] for r in rows}) == n + 1
    for r in rows:
        if r["host"] != "warmup.example":
            i = int(r["host"][1:3])
            assert (r["upstream_code"], r["final_code"], r["error"]) == \
                (200 + i % 3, 200 + i % 3, None), r
    assert minute_total(proxy.db) == n + 1
    assert dropped_total(proxy.db) == 0
    got = report(statusproxy_bin, proxy.db)
    assert {r["code"]: r["count"] for r in got} == {200: 1 + 14, 201: 13, 202: 13}


def test_sigterm_while_database_locked_flushes_after_release(proxy, backend,
                                                             statusproxy_bin):
    """SIGTERM while another process holds the lock: the proxy waits for
    it (DESIGN §5: flush everything) and, once it is released 1.5 s later,
    writes every record and exits 0."""
    n = 12
    holder = lock_after_one_record(proxy)
    problems = []
    stopper = threading.Thread(target=lambda: problems.extend(proxy.stop(timeout=20)))
    try:
        for i in range(n):
            with proxy.conn() as c:
                assert c.exchange("GET", "/status/202", host="t%02d.example" % i).status == 202
        stopper.start()
        time.sleep(1.5)
        assert proxy.proc.poll() is None, "exited (status %s) with records unwritten" % (
            proxy.proc.returncode)
        holder.stdin.write("COMMIT;\n.quit\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    stopper.join(30)
    assert problems == [], "\n".join(problems) + "\n" + proxy.stderr()[-3000:]
    rows = raw_rows(proxy.db)
    assert Counter(r["host"] for r in rows) == \
        Counter(["warmup.example"] + ["t%02d.example" % i for i in range(n)])
    assert minute_total(proxy.db) == n + 1
    assert dropped_total(proxy.db) == 0


# =================================================== --log-exchanges modes

MODE_RULES = """\
rule hide  path /status/404 status 404 => set-status 200
rule break path /status/203            => set-status 500
rule down  path /down                  => abort 503
rule r     path /r                     => reset
"""


def mode_plan(backend_port, refused):
    plan = []

    def add(n, target, expect, host="m.example"):
        for _ in range(n):
            plan.append(Sent("GET", target, host, dict(expect)))
    add(3, "/status/200", exp("m.example", "/status/200", 200, 200))
    add(1, "/status/201", exp("m.example", "/status/201", 201, 201))
    add(1, "/status/299", exp("m.example", "/status/299", 299, 299))     # non-standard, fine
    add(1, "/status/302", exp("m.example", "/status/302", 302, 302))
    add(1, "/status/404", exp("m.example", "/status/404", 404, 200, "hide", "set-status 200"))
    add(1, "/status/410", exp("m.example", "/status/410", 410, 410))
    add(1, "/status/500", exp("m.example", "/status/500", 500, 500))
    add(1, "/status/203", exp("m.example", "/status/203", 203, 500, "break", "set-status 500"))
    add(1, "/down", exp("m.example", "/down", None, 503, "down", "abort 503"))
    add(1, "/r", exp("m.example", "/r", 404, None, "r", "reset", AnyOf(None, "reset")))
    add(1, "/status/999", exp("m.example", "/status/999", 999, 502, error="invalid_status"))
    add(1, "http://127.0.0.1:%d/gone" % refused,
        exp("127.0.0.1", "/gone", None, 502, error="connect_refused"), host="127.0.0.1")
    return plan


def kept_in_errors_mode(e):
    """DESIGN / issue 5: raw rows for final or upstream code >= 400, no
    final code, or an error."""
    return ((e["final"] is not None and e["final"] >= 400)
            or (e["upstream"] is not None and e["upstream"] >= 400)
            or e["final"] is None or e["error"] is not None)


@pytest.mark.parametrize("mode", ["all", "errors", "none"])
def test_log_exchanges_modes(proxy_factory, backend, refused_port, statusproxy_bin, names,
                             tmp_path, mode):
    rules = write_rules(tmp_path, MODE_RULES)
    p = proxy_factory(upstream=backend.url, args=["--rules", rules, "--log-exchanges", mode])
    plan = mode_plan(backend.port, refused_port)
    run_plan(p, plan)
    check_answers(plan)
    stop_clean(p)
    keep = {"all": lambda e: True, "errors": kept_in_errors_mode, "none": lambda e: False}[mode]
    kept = [s for s in plan if keep(s.expect)]
    if mode == "errors":   # the plan does exercise the filter both ways
        assert 0 < len(kept) < len(plan)
        assert {s.target for s in plan if not keep(s.expect)} == \
            {"/status/200", "/status/201", "/status/299", "/status/302"}
    match_rows(raw_rows(p.db), kept)
    # The aggregates are complete whatever the mode.
    assert minute_total(p.db) == len(plan)
    recs = recs_of(plan)
    for view in ("code", "class", "host", "rule", "rewrite"):
        assert report(statusproxy_bin, p.db, "--by", view) == \
            approx_shares(expect_view(view, recs, names)), (mode, view)
    minutes = report(statusproxy_bin, p.db, "--by", "minute")
    assert sum(r["count"] for r in minutes) == len(plan)
    assert sum(r["5xx"] for r in minutes) == 5 and sum(r["4xx"] for r in minutes) == 1


# ============================================================ --workers 2


def test_two_workers_record_everything_once(proxy_factory, backend, statusproxy_bin, names):
    """Many connections over both workers (SO_REUSEPORT spreads them by
    4-tuple; 48 connections all on one worker would be a 2^-47 chance):
    every exchange recorded exactly once."""
    p = proxy_factory(upstream=backend.url, args=["--workers", "2"])
    n_threads, conns_per_thread, reqs_per_conn = 8, 6, 4
    errors, answered = [], Counter()
    lock = threading.Lock()

    def client(t):
        try:
            for k in range(conns_per_thread):
                host = "w%d-%d.example" % (t, k)
                with p.conn() as c:
                    for j in range(reqs_per_conn):
                        code = (200, 201, 404, 503)[j]
                        r = c.exchange("GET", "/status/%d" % code, host=host)
                        assert r.status == code
                        with lock:
                            answered[code] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    total = n_threads * conns_per_thread * reqs_per_conn
    assert sum(answered.values()) == total
    stop_clean(p)
    rows = raw_rows(p.db)
    assert len(rows) == total and len({r["id"] for r in rows}) == total
    per_host = Counter((r["host"], r["final_code"]) for r in rows)
    assert per_host == Counter({("w%d-%d.example" % (t, k), code): 1
                                for t in range(n_threads) for k in range(conns_per_thread)
                                for code in (200, 201, 404, 503)})
    assert minute_total(p.db) == total
    assert {r["code"]: r["count"] for r in report(statusproxy_bin, p.db)} == \
        {200: total // 4, 201: total // 4, 404: total // 4, 503: total // 4}
    hosts = report(statusproxy_bin, p.db, "--by", "host")
    assert len(hosts) == n_threads * conns_per_thread
    assert all(h["count"] == 4 and h["2xx"] == 2 and h["4xx"] == 1 and h["5xx"] == 1
               for h in hosts)


# ====================================================== schema / migrations


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def latest():
    return max(int(m.name.split("_", 1)[0]) for m in MIGRATIONS)


def test_migrate_fresh_file(statusproxy_bin, tmp_path):
    db = tmp_path / "fresh.db"
    p = cli(statusproxy_bin, "migrate", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "schema version %d\n" % latest()
    assert scalar(db, "PRAGMA user_version") == latest()


def test_database_from_a_run_reported_after_stop(proxy_factory, backend, statusproxy_bin):
    """The file a proxy run created (no migrate beforehand) is a complete
    database once the proxy has stopped: reportable, at the latest schema."""
    p = proxy_factory(upstream=backend.url)
    with p.conn() as c:
        for code in (200, 200, 500):
            assert c.exchange("GET", "/status/%d" % code, host="after.example").status == code
    stop_clean(p)
    assert scalar(p.db, "PRAGMA user_version") == latest()
    want = [{"host": "after.example", "scheme": "http", "count": 3, "1xx": 0, "2xx": 2, "3xx": 0,
             "4xx": 0, "5xx": 1, "p50_ms": ANY_MS, "p95_ms": ANY_MS, "p99_ms": ANY_MS}]
    assert report(statusproxy_bin, p.db, "--by", "host") == want
    m = cli(statusproxy_bin, "migrate", "--db", p.db)
    assert m.returncode == 0 and m.stdout == "schema version %d\n" % latest(), m.stderr
    assert report(statusproxy_bin, p.db, "--by", "host") == want


def test_run_refuses_newer_database_untouched(proxy_factory, backend, statusproxy_bin,
                                              tmp_path):
    # A database a proxy run made, then marked as from a newer binary.
    p = proxy_factory(upstream=backend.url)
    with p.conn() as c:
        assert c.exchange("GET", "/status/200", host="old.example").status == 200
    stop_clean(p)
    db = Path(p.db)
    c = sqlite3.connect(db)
    c.execute("PRAGMA user_version = %d" % (latest() + 1))
    c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    before = digest(db)
    files_before = sorted(os.listdir(tmp_path))
    port = free_port()
    proc = subprocess.Popen([statusproxy_bin, "run", "--listen", "127.0.0.1:%d" % port,
                             "--admin", "off", "--db", str(db), "--upstream", backend.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("run on a newer database kept running: %s" % err[-2000:])
    assert proc.returncode != 0, err
    assert "newer" in err.lower() and str(db) in err, err
    assert len(err.strip().splitlines()) <= 3, "a clear error, not a dump: %r" % err
    assert digest(db) == before, "the newer database was modified"
    assert sorted(os.listdir(tmp_path)) == files_before
    assert scalar(db, "PRAGMA user_version") == latest() + 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
