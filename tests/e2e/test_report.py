"""End-to-end tests of `statusproxy report` and `statusproxy migrate`.

Databases are made through the real audit writer by the test tool
audit_feed (built beside the binary, in its tests/ folder), then the real
binary is run the way a user would. Expected values are computed here from
the records fed, independently of the C code.

    /usr/bin/python3 -m pytest tests/e2e/test_report.py
    STATUSPROXY_BIN=build/san/statusproxy /usr/bin/python3 -m pytest tests/e2e/test_report.py
"""
import csv
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter, namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from report_model import VIEWS, expected_rows, klass, minute_of_ms

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATUSPROXY_BIN", REPO / "build" / "statusproxy")).resolve()
FEED = BIN.parent / "tests" / "audit_feed"
MIGRATIONS = sorted((REPO / "migrations").glob("[0-9]*_*.sql"))
APPLICATION_ID = 0x53545058

Rec = namedtuple("Rec", "start host upstream final rule error")

# ---------------------------------------------------------------- helpers


def run(*args, timeout=60):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def duration_us(r):
    """A record's duration, from its own fields (so a subset of records keeps
    the durations it was fed with): 1 to about 3 ms."""
    sec = r.start.minute * 60 + r.start.second if isinstance(r.start, datetime) \
        else r.start // 1000 % 3600
    return 1000 + sec * 7 + 131 * len(r.host)


def feed_lines(records):
    lines = []
    for i, r in enumerate(records):
        start = iso(r.start) if isinstance(r.start, datetime) else str(r.start)
        lines.append("\t".join([
            start, "10.0.0.%d" % (i % 250), "GET", r.host, "/p/%d" % i,
            "-" if r.upstream is None else str(r.upstream),
            "-" if r.final is None else str(r.final),
            r.rule or "-", ("set-status %s" % r.final) if r.rule else "-", r.error or "-",
            str(duration_us(r)), "120", "3400"]))
    return "\n".join(lines) + "\n"


def feed(db, records, *args):
    assert FEED.exists(), "build the feed tool first: make %s" % FEED
    p = subprocess.run([str(FEED), "--db", str(db), *args], input=feed_lines(records),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def report(*args):
    p = run("report", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def report_json(*args):
    return json.loads(report(*args, "--format", "json"))


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------- the known mix

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=timezone.utc)


def at(minute, second=0):
    return T0 + timedelta(minutes=minute, seconds=second)


# (minute, host, upstream, final, rule, error, how many)
MIX_SPEC = [
    (0, "api.example", 200, 200, None, None, 6),
    (1, "api.example", 200, 200, None, None, 3),
    (1, "api.example", 404, 404, None, None, 2),
    (2, "api.example", 500, 503, "mask-5xx", None, 2),
    (2, "api.example", None, 503, "flaky-pay", None, 3),      # abort: no upstream
    (5, "api.example", 404, 200, "hide-404", None, 1),
    (0, "shop.example", 200, 200, None, None, 4),
    (1, "shop.example", None, 502, None, "connect_refused", 2),
    (5, "shop.example", None, 504, None, "timeout", 1),
    (2, "shop.example", 302, 302, None, None, 2),
    (5, "shop.example", 999, 502, None, "bad_response", 1),   # invalid upstream status
    (0, "web.example", 200, 200, None, None, 1),
    (2, "web.example", None, None, "kill", None, 1),          # reset: no final code
    (5, "web.example", 200, None, None, "client_closed", 1),  # client gone
    (5, "web.example", None, None, None, "client_closed", 1), # gone before any answer
    (1, "Static.Example", 304, 304, None, None, 2),
    (1, "Static.Example", 101, 101, None, None, 1),
]


def make_mix():
    recs = []
    for minute, host, up, fin, rule, err, n in MIX_SPEC:
        for k in range(n):
            recs.append(Rec(at(minute, (7 * k + 3) % 60), host, up, fin, rule, err))
    return recs


MIX = make_mix()


def codes_catalogue():
    p = run("codes", "--format", "json")
    assert p.returncode == 0, p.stderr
    return {e["code"]: e["name"] for e in json.loads(p.stdout)}


def expect(view, recs, names=None):
    """The rows DESIGN §6 asks for, computed from the records."""
    def minute(start):  # a datetime, or Unix ms
        if isinstance(start, datetime):
            return start.strftime("%Y-%m-%dT%H:%M:00Z")
        return minute_of_ms(start)
    # feed_lines gives record i the path /p/i (route /p/{n}).
    return expected_rows(view, [{"host": r.host, "upstream": r.upstream, "final": r.final,
                                 "rule": r.rule, "minute": minute(r.start),
                                 "route": "/p/{n}", "duration_us": duration_us(r)}
                                for r in recs],
                         names)





@pytest.fixture(scope="module")
def names():
    return codes_catalogue()


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="statusproxy-report-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def mixdb(work):
    db = work / "mix.db"
    out = feed(db, MIX)
    assert out.strip() == "fed %d records, 0 dropped" % len(MIX)
    return db


@pytest.fixture(scope="module")
def split_dbs(work):
    """The mix split over two databases, to merge."""
    a, b = work / "half-a.db", work / "half-b.db"
    feed(a, MIX[0::2])
    feed(b, MIX[1::2])
    return a, b


# --------------------------------------------------------------- the views


def test_mix_sanity():
    # The mix covers what the views must handle.
    assert any(r.final is None for r in MIX)
    assert any(r.upstream is None and r.final == 502 for r in MIX)
    assert any(klass(r.upstream) == "invalid" for r in MIX)
    assert len({r.host for r in MIX}) == 4
    assert len({r.rule for r in MIX if r.rule}) == 4


@pytest.mark.parametrize("view", VIEWS)
def test_json_views_exact(mixdb, names, view):
    got = report_json("--db", mixdb, "--by", view)
    assert got == expect(view, MIX, names)


def test_default_view_is_code(mixdb, names):
    assert report_json("--db", mixdb) == expect("code", MIX, names)


def test_json_types(mixdb):
    rows = report_json("--db", mixdb, "--by", "code")
    for row in rows:
        assert list(row) == ["code", "name", "class", "count", "share", "p50_ms", "p95_ms",
                             "p99_ms"]
        assert row["code"] is None or type(row["code"]) is int
        assert type(row["count"]) is int
        assert 0 <= row["share"] <= 1
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-9
    none = [r for r in rows if r["code"] is None]
    assert [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in none] == \
        [{"code": None, "name": None, "class": None, "count": 3, "share": 3 / len(MIX)}]
    assert all(type(r[p]) is float for r in rows for p in ("p50_ms", "p95_ms", "p99_ms"))
    rewrite = report_json("--db", mixdb, "--by", "rewrite")
    assert {"upstream_code": 999, "code": 502, "rule": None, "count": 1} in rewrite
    assert {"upstream_code": None, "code": 502, "rule": None, "count": 2} in rewrite
    assert {"upstream_code": 200, "code": None, "rule": None, "count": 1} in rewrite
    assert {"upstream_code": None, "code": None, "rule": "kill", "count": 1} in rewrite
    assert {"upstream_code": None, "code": None, "rule": None, "count": 1} in rewrite
    # An exchange that went through untouched is not a rewrite.
    assert not any(r["upstream_code"] == 200 and r["code"] == 200 for r in rewrite)


@pytest.mark.parametrize("view", VIEWS)
def test_csv_views(mixdb, names, view):
    text = report("--db", mixdb, "--by", view, "--format", "csv")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    want = expect(view, MIX, names)
    assert rows[0] == list(want[0].keys())
    assert len(rows) == len(want) + 1

    def cell(v):
        return "" if v is None else str(v)
    for got, w in zip(rows[1:], want):
        for name, g in zip(rows[0], got):
            if name == "share":
                assert float(g) == w["share"]
            else:
                assert g == cell(w[name])


def test_csv_quotes_fields(work):
    db = work / "quotes.db"
    feed(db, [Rec(at(0), "h.example", 500, 503, 'say "no", twice', None)])
    rows = list(csv.reader(io.StringIO(report("--db", db, "--by", "rule", "--format", "csv"),
                                       newline="")))
    assert [r[:2] for r in rows] == [["rule", "count"], ['say "no", twice', "1"]]
    assert rows[0][2:] == ["p50_ms", "p95_ms", "p99_ms"]


def test_table_code_view(mixdb, names):
    text = report("--db", mixdb, "--by", "code")
    lines = text.splitlines()
    assert re.match(r"^CODE\s+NAME\s+CLASS\s+COUNT\s+SHARE\s+P50_MS\s+P95_MS\s+P99_MS$",
                    lines[0])
    want = expect("code", MIX, names)
    count_ends = set()
    for w, line in zip(want, lines[1:]):
        pattern = r"^\s*%s\s+%s\s+%s\s+(%d)\s+%.1f%%\s+\S" % (
            "-" if w["code"] is None else w["code"], re.escape(w["name"] or "-"),
            w["class"] or "-", w["count"], w["share"] * 100)
        m = re.match(pattern, line)
        assert m, (pattern, line)
        count_ends.add(m.end(1))
    assert len(count_ends) == 1, "counts are right-aligned in one column"
    assert "%d exchanges, 0 records dropped" % len(MIX) in text


@pytest.mark.parametrize("view", ["class", "host", "rule", "rewrite", "minute"])
def test_table_other_views(mixdb, names, view):
    text = report("--db", mixdb, "--by", view)
    lines = text.splitlines()
    want = expect(view, MIX, names)
    assert lines[0].split()[0].lower() == list(want[0])[0]
    body = lines[1:1 + len(want)]
    for w, line in zip(want, body):
        fields = [("-" if v is None else str(v)) for k, v in w.items() if k != "share"]
        assert line.split()[:len(fields)] == fields, line
    assert lines[1 + len(want)] == ""


def test_ties_broken_by_key_ascending(work, names):
    # Every key of every view ties on count, so only the tie-break orders them.
    recs = []
    for host, up, fin, rule, minute in [("c.example", 503, 503, "zeta", 2),
                                        ("a.example", None, 502, None, 0),
                                        ("b.example", 200, 404, "alpha", 1),
                                        ("d.example", None, None, "mid", 3)]:
        recs += [Rec(at(minute), host, up, fin, rule, None)] * 2
    db = work / "ties.db"
    feed(db, recs)
    for view in VIEWS:
        got = report_json("--db", db, "--by", view)
        assert got == expect(view, recs, names), view
    assert [r["host"] for r in report_json("--db", db, "--by", "host")] == \
        ["a.example", "b.example", "c.example", "d.example"]
    assert [r["code"] for r in report_json("--db", db)] == [404, 502, 503, None]


def test_top_keeps_first_rows(mixdb, names):
    for view in ("code", "host", "minute", "rewrite"):
        assert report_json("--db", mixdb, "--by", view, "--top", "2") == \
            expect(view, MIX, names)[:2]
    # Shares stay relative to every exchange, not to the rows kept.
    top1 = report_json("--db", mixdb, "--by", "class", "--top", "1")
    assert top1 == expect("class", MIX)[:1]


def test_host_glob(mixdb, names):
    def only(pred):
        return [r for r in MIX if pred(r.host)]
    assert report_json("--db", mixdb, "--host", "STATIC.*") == \
        expect("code", only(lambda h: h == "Static.Example"), names)
    assert report_json("--db", mixdb, "--by", "host", "--host", "*p*.example") == \
        expect("host", only(lambda h: h in ("api.example", "shop.example")))
    assert report_json("--db", mixdb, "--by", "host", "--host", "?eb.example") == \
        expect("host", only(lambda h: h == "web.example"))
    assert report_json("--db", mixdb, "--host", "nothing.here") == []
    table = report("--db", mixdb, "--host", "nothing.here")
    assert "(no exchanges in this range)" in table


def test_since_until_iso(mixdb, names):
    def between(lo, hi):
        return [r for r in MIX if lo <= r.start < hi]
    got = report_json("--db", mixdb, "--by", "minute", "--since", "2026-11-24T10:01:00Z",
                      "--until", "2026-11-24T10:02:00Z")
    assert got == expect("minute", between(at(1), at(2)))
    got = report_json("--db", mixdb, "--since", "2026-11-24T10:02Z")
    assert got == expect("code", between(at(2), at(60)), names)
    got = report_json("--db", mixdb, "--by", "host", "--until", "2026-11-24T10:05:00.000Z")
    assert got == expect("host", between(at(-60), at(5)))
    assert report_json("--db", mixdb, "--since", "2026-11-24") == expect("code", MIX, names)
    assert report_json("--db", mixdb, "--until", "2026-11-24") == []


def test_since_until_durations(work, names):
    db = work / "recent.db"
    now = int(time.time() * 1000)
    recs = ([Rec(now - 2 * 3600_000, "a.example", 200, 200, None, None)] * 3 +
            [Rec(now - 30 * 60_000, "a.example", 500, 500, None, None)] * 2 +
            [Rec(now - 3 * 60_000, "a.example", 404, 404, None, None)])
    feed(db, recs)
    assert report_json("--db", db, "--since", "1h") == expect("code", recs[3:], names)
    assert report_json("--db", db, "--since", "3h", "--until", "1h") == \
        expect("code", recs[:3], names)
    assert report_json("--db", db, "--until", "10m") == expect("code", recs[:5], names)
    assert report_json("--db", db, "--since", "7d") == expect("code", recs, names)


def test_merge_databases(mixdb, split_dbs, names, work):
    a, b = split_dbs
    for view in VIEWS:
        assert report_json("--db", a, "--db", b, "--by", view) == expect(view, MIX, names)
    # The same file twice counts twice: merging sums.
    doubled = report_json("--db", mixdb, "--db", mixdb, "--by", "host")
    # (Percentiles of the same durations twice are the same.)
    assert doubled == [dict(r, **{k: v * 2 for k, v in r.items()
                                  if k not in ("host", "scheme") and not k.endswith("_ms")})
                       for r in expect("host", MIX)]
    # One bad file fails the whole report.
    p = run("report", "--db", a, "--db", work / "absent.db")
    assert p.returncode == 1
    assert "absent.db" in p.stderr


def test_report_does_not_modify_database(mixdb):
    before = digest(mixdb)
    for view in VIEWS:
        for fmt in ("table", "json", "csv", "html"):
            report("--db", mixdb, "--by", view, "--format", fmt)
    assert digest(mixdb) == before


# ------------------------------------------------------------- losses


def test_dropped_records_shown(work):
    db = work / "lossy.db"
    recs = [Rec(at(0, i % 60), "x.example", 200, 200, None, None) for i in range(20000)]
    out = feed(db, recs, "--queue", "10", "--no-wait")
    m = re.match(r"fed (\d+) records, (\d+) dropped", out)
    fed, dropped = int(m.group(1)), int(m.group(2))
    assert fed == 20000 and dropped > 0
    with sqlite3.connect(db) as c:
        stored = c.execute("SELECT sum(count) FROM dropped").fetchone()[0]
        kept = c.execute("SELECT count(*) FROM exchanges").fetchone()[0]
    assert stored == dropped
    assert kept == fed - dropped
    table = report("--db", db)
    assert "%d exchanges, %d records dropped" % (kept, dropped) in table
    page = report("--db", db, "--format", "html")
    assert 'data-dropped="%d"' % dropped in page
    # The JSON rows keep their fixed fields only (§6, and §11's percentiles).
    rows = report_json("--db", db)
    assert [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows] == \
        [{"code": 200, "name": "OK", "class": "2xx", "count": kept, "share": 1}]
    assert all(type(rows[0][k]) is float for k in ("p50_ms", "p95_ms", "p99_ms"))


def test_locked_database_loses_nothing(work):
    if not shutil.which("sqlite3"):
        pytest.skip("the sqlite3 command-line tool is not installed")
    db = work / "locked.db"
    assert run("migrate", "--db", db).returncode == 0
    holder = subprocess.Popen(["sqlite3", str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "locked"
    recs = [Rec(at(0, i % 60), "x.example", 200, 200, None, None) for i in range(3000)]
    fed = subprocess.Popen([str(FEED), "--db", str(db)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fed.stdin.write(feed_lines(recs))
    fed.stdin.close()
    time.sleep(2)
    assert fed.poll() is None, "the writer must wait for the lock, not give up"
    holder.stdin.write("COMMIT;\n.quit\n")
    holder.stdin.flush()
    assert holder.wait(timeout=10) == 0
    assert fed.wait(timeout=30) == 0, fed.stderr.read()
    assert fed.stdout.read().strip() == "fed 3000 records, 0 dropped"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 3000
        assert c.execute("SELECT sum(count) FROM minute_stats").fetchone()[0] == 3000


# ------------------------------------------------------------ HTML


class Page(html.parser.HTMLParser):
    """Tables by id (rows of cell texts) and the chart's path elements."""

    def __init__(self):
        super().__init__()
        self.tables, self.paths, self.tags = {}, [], Counter()
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] += 1
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "path":
            self.paths.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse_page(text):
    p = Page()
    p.feed(text)
    return p


def series_classes(page):
    return sorted(p["data-class"] for p in page.paths
                  if "series" in (p.get("class") or "").split())


def test_html_page(mixdb, names):
    text = report("--db", mixdb, "--format", "html")
    assert text.startswith("<!DOCTYPE html>")
    # Self-contained: nothing to fetch.
    assert not re.search(r"<script|<link|<img|<iframe|url\(|@import", text, re.I)
    assert not re.search(r"(src|href)=", text)
    page = parse_page(text)
    for view in VIEWS:
        rows = page.tables["by-" + view]
        want = expect(view, MIX, names)
        assert rows[0] == list(want[0])
        assert len(rows) == len(want) + 1
    code_rows = page.tables["by-code"][1:]
    assert [r[0] for r in code_rows] == \
        [("\u2014" if w["code"] is None else str(w["code"])) for w in expect("code", MIX, names)]
    assert [int(r[3]) for r in code_rows] == [w["count"] for w in expect("code", MIX, names)]
    present = sorted(k for k in Counter(klass(r.final) for r in MIX) if k)
    assert series_classes(page) == present
    assert 'data-total="%d"' % len(MIX) in text


def test_html_escapes_outside_data(work):
    db = work / "evil.db"
    feed(db, [Rec(at(0), "<script>alert(1)</script>", 200, 200, "<b>r</b>", None)])
    text = report("--db", db, "--format", "html")
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed "
                    "(apt-get install -y chromium); the HTML is still checked by parsing")
def test_html_renders_in_headless_chromium(mixdb, work):
    page_file = work / "report.html"
    page_file.write_text(report("--db", mixdb, "--format", "html"))
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work)
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--user-data-dir=" + profile, "--dump-dom", page_file.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    dom = parse_page(p.stdout)
    # One chart of classes, and one small latency chart per top route (§11).
    assert dom.tags["svg"] == 1 + min(10, len(expect("route", MIX)))
    assert "by-code" in dom.tables and len(dom.tables["by-code"]) > 1
    present = sorted(k for k in Counter(klass(r.final) for r in MIX) if k)
    assert series_classes(dom) == present, "one series per class present"
    assert all(p.get("d", "").startswith("M") for p in dom.paths)


def test_html_empty_range(mixdb):
    page = parse_page(report("--db", mixdb, "--format", "html", "--until", "2020-01-01"))
    assert series_classes(page) == []
    assert page.tables["by-code"] == [["code", "name", "class", "count", "share", "p50_ms",
                                       "p95_ms", "p99_ms"]]


def test_host_view_keyed_by_scheme(work):
    # DESIGN §9: the same host over http, https and a blind tunnel are three
    # rows of --by host, in every format.
    spec = [("api.example", "http", 200, 5), ("api.example", "https", 503, 3),
            ("api.example", "https", 200, 1), ("api.example", "tunnel", 200, 2),
            ("web.example", "https", 404, 2)]
    recs, lines = [], []
    for host, scheme, code, n in spec:
        for k in range(n):
            i = len(recs)
            recs.append({"host": host, "scheme": scheme, "upstream": code, "final": code,
                         "rule": None, "minute": "2026-11-24T10:00:00Z", "duration_us": 1000 + i})
            lines.append("\t".join([str(1795514400000 + i), "10.0.0.1",
                                    "CONNECT" if scheme == "tunnel" else "GET", host, "/x",
                                    str(code), str(code), "-", "-", "-", str(1000 + i), "1", "2",
                                    "0", scheme]))
    db = work / "schemes.db"
    p = subprocess.run([str(FEED), "--db", str(db)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = report_json("--db", db, "--by", "host")
    assert got == expected_rows("host", recs)
    assert [(r["host"], r["scheme"], r["count"]) for r in got] == [
        ("api.example", "http", 5), ("api.example", "https", 4), ("api.example", "tunnel", 2),
        ("web.example", "https", 2)]
    rows = list(csv.reader(io.StringIO(report("--db", db, "--by", "host", "--format", "csv"))))
    assert rows[0][:3] == ["host", "scheme", "count"]
    assert rows[2][:3] == ["api.example", "https", "4"]
    table = report("--db", db, "--by", "host").splitlines()
    assert table[0].split()[:3] == ["HOST", "SCHEME", "COUNT"]
    assert table[3].split()[:3] == ["api.example", "tunnel", "2"]
    page = report("--db", db, "--format", "html")
    head = re.search(r'id="by-host".*?<thead>(.*?)</thead>(.*?)</tbody>', page, re.S)
    assert head and "<th>scheme</th>" in head.group(1)
    assert re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", head.group(2)) == [
        ("api.example", "http"), ("api.example", "https"), ("api.example", "tunnel"),
        ("web.example", "https")]


# --------------------------------------------------------- migrations


def latest():
    return len(MIGRATIONS)


def make_v1(path):
    c = sqlite3.connect(path)
    c.executescript(MIGRATIONS[0].read_text())
    c.execute("PRAGMA application_id = %d" % APPLICATION_ID)
    c.execute("PRAGMA user_version = 1")
    c.execute("INSERT INTO exchanges (start_ms, client, method, host, path, upstream_code,"
              " final_code, rule, action, error, duration_us, bytes_in, bytes_out) VALUES"
              " (1795514400000, '127.0.0.1', 'GET', 'old.example', '/a', 500, 503, 'mask',"
              " 'set-status 503', NULL, 10, 1, 2)")
    c.execute("INSERT INTO minute_stats VALUES (1795514400, 'old.example', 500, 503, 'mask',"
              " 4, 40, 4, 8)")
    c.commit()
    c.close()


def test_migrate_new_database(work):
    db = work / "new.db"
    p = run("migrate", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "schema version %d\n" % latest()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == latest()
        assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    # Again: nothing to do, same answer.
    assert run("migrate", "--db", db).stdout == "schema version %d\n" % latest()


def test_migrate_version_1_keeps_rows(work, names):
    db = work / "v1.db"
    make_v1(db)
    # A version-1 database can be reported on before it is migrated.
    want = [{"upstream_code": 500, "code": 503, "rule": "mask", "count": 4}]
    assert report_json("--db", db, "--by", "rewrite") == want
    p = run("migrate", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "schema version %d\n" % latest()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT host, final_code, rule FROM exchanges").fetchall() == \
            [("old.example", 503, "mask")]
        assert c.execute("SELECT sum(count) FROM minute_stats").fetchone()[0] == 4
    assert report_json("--db", db, "--by", "rewrite") == want


def make_v4(path):
    """A database as schema 4 left it (before schemes): one plain exchange and
    one CONNECT in the raw rows, and their aggregates."""
    c = sqlite3.connect(path)
    # Schema 4 templates old raw rows with sp_route(); this file has none yet.
    c.create_function("sp_route", 1, lambda p: p)
    for m in MIGRATIONS[:4]:
        c.executescript(m.read_text())
    c.execute("PRAGMA application_id = %d" % APPLICATION_ID)
    c.execute("PRAGMA user_version = 4")
    for method, path, up, fin, dur in (("GET", "/a", 200, 200, 10),
                                       ("CONNECT", "", None, 200, 5000)):
        c.execute("INSERT INTO exchanges (start_ms, client, method, host, path, route,"
                  " upstream_code, final_code, duration_us, bytes_in, bytes_out)"
                  " VALUES (1795514400000, '127.0.0.1', ?, 'old.example', ?, ?, ?, ?, ?, 1, 2)",
                  (method, path, path or "/", up, fin, dur))
    c.execute("INSERT INTO minute_stats (minute, host, route, upstream_code, final_code, rule,"
              " count, duration_us, bytes_in, bytes_out, hist) VALUES"
              " (1795514400, 'old.example', '/a', 200, 200, '', 3, 30, 3, 6, NULL),"
              " (1795514400, 'old.example', '/', -1, 200, '', 1, 5000, 1, 2, NULL)")
    c.commit()
    c.close()


def test_migrate_version_4_adds_scheme(work):
    # DESIGN §9: every exchange has a scheme. Rows written before it keep
    # their values and read as http, except CONNECT raw rows: tunnels. The
    # aggregates keep no method, so theirs read as http.
    db = work / "v4.db"
    make_v4(db)
    want = [{"host": "old.example", "scheme": "http", "count": 4, "1xx": 0, "2xx": 4,
             "3xx": 0, "4xx": 0, "5xx": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}]
    # Read-only, before migrating: the report says http too.
    assert report_json("--db", db, "--by", "host") == want
    before = digest(db)
    p = run("migrate", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "schema version %d\n" % latest()
    assert digest(db) != before
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT method, path, final_code, duration_us, scheme FROM exchanges"
                         " ORDER BY id").fetchall() == \
            [("GET", "/a", 200, 10, "http"), ("CONNECT", "", 200, 5000, "tunnel")]
        assert c.execute("SELECT scheme, method FROM exchange_log ORDER BY id").fetchall() == \
            [("http", "GET"), ("tunnel", "CONNECT")]
        assert c.execute("SELECT scheme, host, route, count, duration_us FROM minute_stats"
                         " ORDER BY route").fetchall() == \
            [("http", "old.example", "/", 1, 5000), ("http", "old.example", "/a", 3, 30)]
        assert c.execute("SELECT scheme, count FROM minute_log ORDER BY route").fetchall() == \
            [("http", 1), ("http", 3)]
    assert report_json("--db", db, "--by", "host") == want
    # The writer goes on in the migrated file, the new scheme beside the old rows.
    line = "\t".join(["1795514401000", "127.0.0.1", "GET", "old.example", "/a", "500", "500",
                      "-", "-", "-", "2000", "1", "2", "0", "https"]) + "\n"
    p = subprocess.run([str(FEED), "--db", str(db)], input=line, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    got = report_json("--db", db, "--by", "host")
    assert [(r["host"], r["scheme"], r["count"], r["5xx"]) for r in got] == \
        [("old.example", "http", 4, 0), ("old.example", "https", 1, 1)]


def test_newer_database_refused_untouched(work):
    db = work / "future.db"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE future (x)")
    c.execute("PRAGMA application_id = %d" % APPLICATION_ID)
    c.execute("PRAGMA user_version = %d" % (latest() + 1))
    c.commit()
    c.close()
    before = digest(db)
    for args in (["migrate", "--db", db], ["report", "--db", db]):
        p = run(*args)
        assert p.returncode == 1
        assert "newer" in p.stderr and str(db) in p.stderr
        assert p.stdout == ""
        assert digest(db) == before


def test_report_missing_database_creates_nothing(work):
    db = work / "missing" / "nothing.db"
    db.parent.mkdir()
    p = run("report", "--db", db)
    assert p.returncode == 1
    assert str(db) in p.stderr and "No such file" in p.stderr
    assert list(db.parent.iterdir()) == []


def test_not_a_database(work):
    text = work / "notes.txt"
    text.write_text("this is not a database\n" * 100)
    other = work / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE users (name TEXT)")
    for path in (text, other):
        before = digest(path)
        for cmd in ("report", "migrate"):
            p = run(cmd, "--db", path)
            assert p.returncode == 1, (cmd, path)
            assert "not a statusproxy database" in p.stderr
            assert len(p.stderr.strip().splitlines()) == 1
        assert digest(path) == before


@pytest.mark.parametrize("args,flag", [
    (["report"], "--db"),
    (["report", "--db"], "--db"),
    (["report", "--db", "x.db", "--by", "colour"], "--by"),
    (["report", "--db", "x.db", "--format", "xml"], "--format"),
    (["report", "--db", "x.db", "--top", "0"], "--top"),
    (["report", "--db", "x.db", "--top", "many"], "--top"),
    (["report", "--db", "x.db", "--since", "yesterday"], "--since"),
    (["report", "--db", "x.db", "--until", "2026-11-24T10:00:00"], "--until"),
    (["report", "--db", "x.db", "--since", "1h", "--until", "2h"], "--until"),
    (["report", "--db", "x.db", "--host"], "--host"),
    (["report", "--db", "x.db", "--frobnicate"], "--frobnicate"),
    (["migrate"], "--db"),
    (["migrate", "--db"], "--db"),
    (["migrate", "--database", "x.db"], "--database"),
])
def test_bad_flags_exit_2_naming_the_flag(work, args, flag):
    p = subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=work, timeout=30)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], p.stderr
    assert not (work / "x.db").exists()
