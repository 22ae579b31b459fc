"""The admin API (DESIGN §7) through the real binary: /healthz, /metrics
(names, types, label values matching the traffic sent), /stats, /rules GET,
PUT (good and bad), enable/disable, the bearer token, and the live page in
headless Chromium."""

import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import HttpConn, wait_until
from rules_support import (Admin, get, metric, metric_samples, parse_prometheus, rules_proxy,
                           status_of)

RULES = ('rule ab path /ab => abort 503\n'
         'rule hide status 404 => set-status 200\n'
         'rule slow path /status/201 => delay 300ms\n')


def traffic(p, refused_port):
    """Send a known mix; returns the number of exchanges."""
    with p.conn() as c:
        for _ in range(3):
            assert c.exchange("GET", "/status/200").status == 200
        for _ in range(2):
            assert c.exchange("GET", "/ab").status == 503
        assert c.exchange("GET", "/status/404").status == 200
        assert c.exchange("GET", "/status/201").status == 201
    with p.conn() as c:
        r = c.exchange("GET", "http://127.0.0.1:%d/x" % refused_port)
        assert r.status == 502
    return 8


@pytest.fixture
def rp(proxy_factory, backend, tmp_path):
    return rules_proxy(proxy_factory, backend, tmp_path, RULES)


# ---------------------------------------------------------------------------
# /healthz, routing


def test_healthz_and_unknown_routes(rp):
    adm = Admin(rp)
    r = adm.get("/healthz")
    assert r.status == 200
    r = adm.get("/nope")
    assert r.status == 404
    r = adm.request("POST", "/metrics", body=b"")
    assert r.status == 405
    r = adm.request("DELETE", "/rules")
    assert r.status == 405
    r = adm.get("/rules/ab/disable")         # toggles need POST
    assert r.status == 405
    assert adm.rules()["ab"]["enabled"] is True


# ---------------------------------------------------------------------------
# /metrics


def wait_metrics(adm, pred, timeout=2.0):
    """Poll /metrics (published every ~100 ms) until PRED(parsed) holds;
    returns the last parse."""
    last = [None]

    def once():
        last[0] = adm.metrics()
        return pred(last[0])
    wait_until(once, timeout=timeout)
    return last[0]


def responses(m, code, upstream_code, rule, cls, scheme="http"):
    return metric(m, "statusproxy_responses_total", code=code, **{"class": cls},
                  upstream_code=upstream_code, rule=rule, scheme=scheme)


def test_metrics_match_traffic(rp, refused_port):
    adm = Admin(rp)
    r = adm.get("/metrics")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/plain")
    m = parse_prometheus(r.body.decode())
    assert m["types"] == {
        "statusproxy_responses_total": "counter",
        "statusproxy_request_duration_seconds": "histogram",
        "statusproxy_upstream_errors_total": "counter",
        "statusproxy_active_connections": "gauge",
        "statusproxy_rule_hits_total": "counter",
        "statusproxy_records_dropped_total": "counter",
        "statusproxy_faults_active": "gauge",
        "statusproxy_faults_overflow_total": "counter",
        "statusproxy_audit_errors_total": "counter",
    }
    assert metric(m, "statusproxy_faults_overflow_total") == 0
    n = traffic(rp, refused_port)
    m = wait_metrics(adm, lambda m: metric(m, "statusproxy_request_duration_seconds_count") == n)
    got = {(l["code"], l["class"], l["upstream_code"], l["rule"], l["scheme"]): v
           for l, v in metric_samples(m, "statusproxy_responses_total")}
    assert got == {
        ("200", "2xx", "200", "", "http"): 3,
        ("503", "5xx", "", "ab", "http"): 2,
        ("200", "2xx", "404", "hide", "http"): 1,
        ("201", "2xx", "201", "slow", "http"): 1,
        ("502", "5xx", "", "", "http"): 1,
    }, got
    assert {l["rule"]: v for l, v in metric_samples(m, "statusproxy_rule_hits_total")} == \
        {"ab": 2, "hide": 1, "slow": 1}
    assert {l["error"]: v for l, v in metric_samples(m, "statusproxy_upstream_errors_total")} \
        == {"connect_refused": 1}
    assert metric(m, "statusproxy_records_dropped_total") == 0
    # the histogram: cumulative buckets, +Inf == count, a sum that includes
    # the 300 ms delay
    buckets = [(l["le"], v) for l, v in metric_samples(m, "statusproxy_request_duration_seconds_bucket")]
    assert buckets[-1] == ("+Inf", n)
    les = [float(le) for le, _ in buckets[:-1]]
    assert les == sorted(les) and len(les) >= 5
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    below_300ms = max((v for le, v in buckets if le != "+Inf" and float(le) < 0.3), default=0)
    assert below_300ms <= n - 1, buckets
    assert metric(m, "statusproxy_request_duration_seconds_sum") >= 0.3


def test_hits_count_both_rules_of_one_exchange(proxy_factory, backend, tmp_path):
    # a request rule and a response rule both act on one exchange: each
    # counts a hit; the exchange is counted under the response rule
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    'rule rq path /status/* => set-header X-Q "1"\n'
                    'rule rs status 404 => set-status 200\n')
    r = get(p.port, "/status/404")
    assert r.status == 200 and r.get("X-Q") == "1"
    adm = Admin(p)
    m = wait_metrics(adm, lambda m: metric(m, "statusproxy_request_duration_seconds_count") == 1)
    assert {l["rule"]: v for l, v in metric_samples(m, "statusproxy_rule_hits_total")} == \
        {"rq": 1, "rs": 1}
    assert {x["name"]: x["hits"] for x in adm.json("/rules")} == {"rq": 1, "rs": 1}
    assert [(l["upstream_code"], l["rule"], l["scheme"])
            for l, _ in metric_samples(m, "statusproxy_responses_total")] == [("404", "rs", "http")]


def test_metrics_for_a_reset_use_empty_labels(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule rst status 202 => reset\n")
    with p.conn() as c:
        c.request("GET", "/status/202")
        with pytest.raises(ConnectionResetError):
            while c.sock.recv(65536):
                pass
    adm = Admin(p)
    m = wait_metrics(adm, lambda m: metric(m, "statusproxy_request_duration_seconds_count") == 1)
    got = {(l["code"], l["class"], l["upstream_code"], l["rule"], l["scheme"]): v
           for l, v in metric_samples(m, "statusproxy_responses_total")}
    assert got == {("", "", "202", "rst", "http"): 1}, got
    assert {l["rule"]: v for l, v in metric_samples(m, "statusproxy_rule_hits_total")} == \
        {"rst": 1}


def test_active_connections_gauge(rp):
    adm = Admin(rp)
    conns = [rp.conn() for _ in range(3)]
    try:
        for c in conns:
            assert c.exchange("GET", "/status/200").status == 200
        m = wait_metrics(adm, lambda m: metric(m, "statusproxy_active_connections") == 3)
        assert metric(m, "statusproxy_active_connections") == 3
        assert adm.json("/stats")["active_connections"] == 3
    finally:
        for c in conns:
            c.close()
    m = wait_metrics(adm, lambda m: metric(m, "statusproxy_active_connections") == 0)
    assert metric(m, "statusproxy_active_connections") == 0


# ---------------------------------------------------------------------------
# /stats


def test_stats_json(rp, refused_port):
    adm = Admin(rp)
    r = adm.get("/stats")
    assert r.status == 200
    assert r.header("Content-Type").split(";")[0] == "application/json"
    s = r.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", s["since"]), s["since"]
    assert (s["requests"], s["codes"], s["dropped"]) == (0, {}, 0)
    n = traffic(rp, refused_port)
    s = wait_until(lambda: (lambda s: s if s["requests"] == n else None)(adm.json("/stats")))
    assert s, adm.json("/stats")
    assert s["codes"] == {"200": 4, "201": 1, "503": 2, "502": 1}
    assert s["classes"] == {"2xx": 5, "5xx": 3}
    assert s["schemes"] == {"http": 8}
    assert s["upstream_errors"] == {"connect_refused": 1}
    assert s["rules"] == {"ab": 2, "hide": 1, "slow": 1}
    assert s["dropped"] == 0
    assert isinstance(s["active_connections"], int)
    assert set(s) >= {"since", "requests", "codes", "classes", "schemes", "upstream_errors", "rules",
                      "dropped", "active_connections"}


# ---------------------------------------------------------------------------
# /rules


def test_get_rules(rp):
    adm = Admin(rp)
    assert get(rp.port, "/ab").status == 503
    got = wait_until(lambda: (lambda l: l if l[0]["hits"] == 1 else None)(adm.json("/rules")))
    assert got, adm.json("/rules")
    assert [(r["name"], r["phase"], r["line"], r["enabled"], r["hits"]) for r in got] == [
        ("ab", "request", 1, True, 1),
        ("hide", "response", 2, True, 0),
        ("slow", "request", 3, True, 0),
    ]
    assert [r["source"] for r in got] == [l for l in RULES.splitlines()]
    assert all(set(r) >= {"name", "phase", "line", "source", "enabled", "hits"} for r in got)


def test_put_rules_good_replaces_and_acts(rp, backend):
    adm = Admin(rp)
    assert status_of(rp.port, "/ab") == 503
    new = ('# replaced\n'
           'rule put-a path /ab => abort 418\n'
           'rule put-b status 200 limit 1 => set-status 299\n')
    r = adm.put_rules(new)
    assert r.status == 200, r
    lst = r.json()
    assert [(x["name"], x["phase"], x["line"], x["enabled"], x["hits"]) for x in lst] == [
        ("put-a", "request", 2, True, 0), ("put-b", "response", 3, True, 0)]
    # in effect for the very next request
    assert status_of(rp.port, "/ab") == 418
    assert status_of(rp.port, "/status/404") == 404          # `hide` is gone
    assert [status_of(rp.port, "/status/200") for _ in range(2)] == [299, 200]
    assert [x["name"] for x in adm.json("/rules")] == ["put-a", "put-b"]


def test_put_rules_bad_keeps_old_set(rp):
    adm = Admin(rp)
    assert status_of(rp.port, "/ab") == 503
    r = adm.put_rules("rule ok path /x => abort 500\nrule bad path /y => abort 101\n")
    assert r.status == 400, r
    err = r.json()
    assert set(err) == {"error"}
    assert re.match(r"line 2:\d+: ", err["error"]), err
    # the old set stays, with its counters, and keeps acting
    assert status_of(rp.port, "/ab") == 503
    rs = wait_until(lambda: (lambda d: d if d["ab"]["hits"] == 2 else None)(adm.rules()))
    assert rs and list(rs) == ["ab", "hide", "slow"], adm.rules()
    # the refused set's `ok` would answer 500; the old `hide` turns the
    # backend's 404 into 200
    assert status_of(rp.port, "/x") == 200


def test_put_rules_empty_and_without_rules_file(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url)         # no --rules
    adm = Admin(p)
    assert adm.json("/rules") == []
    r = adm.put_rules("rule a path /status/* => abort 502\n")
    assert r.status == 200, r
    assert status_of(p.port, "/status/200") == 502
    r = adm.put_rules("")
    assert r.status == 200 and r.json() == []
    assert status_of(p.port, "/status/200") == 200


def test_put_rules_with_warnings_only_is_taken(rp):
    # a 301 without Location is a warning, not an error
    r = Admin(rp).put_rules("rule moved path /old => abort 301\n")
    assert r.status == 200, r
    assert [x["name"] for x in r.json()] == ["moved"]
    assert status_of(rp.port, "/old") == 301


def test_put_rules_restarts_counters(rp):
    adm = Admin(rp)
    text = "rule l path /status/* limit 1 => abort 503\n"
    assert adm.put_rules(text).status == 200
    assert [status_of(rp.port, "/status/200") for _ in range(2)] == [503, 200]
    assert adm.put_rules(text).status == 200
    assert [status_of(rp.port, "/status/200") for _ in range(2)] == [503, 200]


def test_enable_disable(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    'rule first path /x => abort 501\n'
                    'rule second path /x => abort 502\n')
    adm = Admin(p)
    assert status_of(p.port, "/x") == 501
    r = adm.request("POST", "/rules/first/disable")
    assert r.status == 200, r
    assert {x["name"]: x["enabled"] for x in r.json()} == {"first": False, "second": True}
    assert status_of(p.port, "/x") == 502             # the next enabled rule matches
    assert adm.request("POST", "/rules/second/disable").status == 200
    assert status_of(p.port, "/x") == 404             # no rule: the backend's answer
    assert adm.request("POST", "/rules/first/enable").status == 200
    assert status_of(p.port, "/x") == 501
    assert {x["name"]: x["enabled"] for x in adm.json("/rules")} == \
        {"first": True, "second": False}
    r = adm.request("POST", "/rules/nosuch/disable")
    assert r.status == 404
    assert "error" in r.json()


# ---------------------------------------------------------------------------
# the bearer token


TOKEN = "s3cret-Tok.en"


def test_token_required_and_accepted(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule a path /x => abort 503\n",
                    args=["--admin-token", TOKEN])
    adm = Admin(p, token=TOKEN)
    for token in ["", "wrong", TOKEN + "x", TOKEN[:-1]]:
        for method, path, body in [("GET", "/metrics", None), ("GET", "/stats", None),
                                   ("GET", "/rules", None),
                                   ("PUT", "/rules", b"rule z path /x => abort 500\n"),
                                   ("POST", "/rules/a/disable", b"")]:
            r = adm.request(method, path, body=body, token=token)
            assert r.status == 401, (method, path, token, r)
    r = adm.request("GET", "/rules", token="", headers={"Authorization": "Basic " + TOKEN})
    assert r.status == 401
    # nothing changed by the refused requests
    assert [(x["name"], x["enabled"]) for x in adm.json("/rules")] == [("a", True)]
    assert status_of(p.port, "/x") == 503
    # with the token
    assert adm.get("/metrics").status == 200
    assert adm.get("/stats").status == 200
    assert adm.request("POST", "/rules/a/disable").status == 200
    assert status_of(p.port, "/x") == 404
    assert adm.put_rules("rule z path /x => abort 500\n").status == 200
    assert status_of(p.port, "/x") == 500
    # /healthz and the page need none
    assert adm.get("/healthz", token="").status == 200
    r = adm.get("/", token="")
    assert r.status == 200 and r.header("Content-Type").startswith("text/html")


def test_no_token_configured_needs_none(rp):
    adm = Admin(rp)
    assert adm.get("/metrics").status == 200
    assert adm.get("/stats", token="anything").status == 200


# ---------------------------------------------------------------------------
# the live page


def test_live_page_served(rp):
    r = Admin(rp).get("/")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/html")
    assert b"<svg" in r.body and b"/stats" in r.body


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url, budget_ms=4000):
    """The DOM after BUDGET_MS of virtual time.  Virtual time runs far faster
    than real time, so the page's 1 s ticks come milliseconds apart; a long
    budget gives it enough real time to see the counters (published every
    ~100 ms) move between two ticks."""
    profile = tempfile.mkdtemp(prefix="sp-chromium-")
    try:
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile,
             "--virtual-time-budget=%d" % budget_ms, "--dump-dom", url],
            capture_output=True, text=True, timeout=90)
        return r.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Traffic:
    """Background requests while the page polls: 200s, 503s (rule `ab`)."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.count = 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            with HttpConn(self.port) as c:
                for i in range(20):
                    if self.stop.is_set():
                        break
                    c.exchange("GET", "/ab" if i % 4 == 0 else "/status/200")
                    self.count += 1
                    time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(10)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium) — the live page is not checked in a browser")
def test_live_page_in_headless_chromium(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, RULES, args=["--admin-token", TOKEN])
    with Traffic(p.port) as tr:
        wait_until(lambda: tr.count > 20, timeout=5)
        dom = dump_dom("http://127.0.0.1:%d/#token=%s" % (p.admin_port, TOKEN), budget_ms=60000)
    assert tr.count > 20
    assert '<div id="error"></div>' in dom, dom[:3000]
    assert re.search(r'<polyline[^>]*class="series series-2xx"', dom), dom[:6000]
    assert re.search(r'<polyline[^>]*class="series series-5xx"', dom), dom[:6000]
    # the codes table has rows for what was sent
    codes = re.search(r'<table id="codes">.*?</table>', dom, re.S).group(0)
    assert re.search(r'<td class="c2xx">200</td><td class="n">[1-9]\d*</td>', codes), codes
    assert re.search(r'<td class="c5xx">503</td><td class="n">[1-9]\d*</td>', codes), codes
    rules = re.search(r'<table id="rules">.*?</table>', dom, re.S).group(0)
    assert re.search(r'<td[^>]*>ab</td><td>request</td><td class="n">[1-9]\d*</td>', rules), rules
    assert ">hide</td><td>response</td>" in rules
    total = re.search(r'<b id="total">(\d+)</b>', dom)
    assert total and int(total.group(1)) > 0, dom[:3000]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_live_page_without_token_says_so(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, RULES, args=["--admin-token", TOKEN])
    dom = dump_dom("http://127.0.0.1:%d/" % p.admin_port, budget_ms=2000)
    err = re.search(r'<div id="error">(.*?)</div>', dom, re.S)
    assert err and "cannot reach the admin API" in err.group(1) and "401" in err.group(1), \
        dom[:3000]
    chart = re.search(r'<svg id="chart".*?</svg>', dom, re.S)
    assert chart and "<polyline" not in chart.group(0)
