"""Rules through the real binary (DESIGN §3-4): every matcher in both phases,
first-match order, a request rule and a response rule on one exchange, exact
counts for every/after/limit, chance with a fixed seed, and every action as
a client sees it on the wire (abort, set-status framing, reason, headers,
delay, throttle, reset, truncate, --mark-faults)."""

import json
import time

import pytest

from backend import det_bytes, det_sha256
from helpers import HttpConn, check_synthesized
from rules_support import (ASAN_ENV, SourceConn, get, rules_proxy, slowdown, status_of,
                           timed)


def start(proxy_factory, backend, tmp_path, text, args=(), env=None):
    return rules_proxy(proxy_factory, backend, tmp_path, text, args=args, env=env)


# ---------------------------------------------------------------------------
# Matchers, request phase (abort 503 makes a match visible; a miss reaches
# the backend and gets its 200)


def test_method_matcher(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule m method POST,PUT => abort 503\n")
    with p.conn() as c:
        assert c.exchange("GET", "/status/200").status == 200
        assert c.exchange("POST", "/status/200", body=b"x").status == 503
        assert c.exchange("PUT", "/status/200", body=b"x").status == 503
        assert c.exchange("DELETE", "/status/200").status == 200
        assert c.exchange("HEAD", "/status/200").status == 200
    assert [e["method"] for e in backend.log] == ["GET", "DELETE", "HEAD"]


def test_host_matcher_glob_case_insensitive_without_port(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule h host api.*.test => abort 503\n")
    with p.conn() as c:
        assert c.exchange("GET", "/status/200", host="api.eu.test").status == 503
        assert c.exchange("GET", "/status/200", host="API.Eu.Test:8080").status == 503
        assert c.exchange("GET", "/status/200", host="www.eu.test").status == 200
        assert c.exchange("GET", "/status/200", host="api.eu.test.evil").status == 200
    assert backend.requests == 2


def test_path_matcher_glob(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule p path /status/2*/x/* => abort 503\n"
              "rule q path /echo/v? => abort 502\n")
    cases = [
        ("/status/200/x/1", 503),
        ("/status/200/x/a/b/c", 503),       # `*` crosses `/`
        ("/status/201/x/1?y=z", 503),       # the query is not part of the path
        ("/status/2/x/", 503),              # `*` matches an empty run
        ("/status/200/x", 404),             # no match: the backend's 404
        ("/status/300/x/1", 404),
        ("/echo/v1", 502),
        ("/echo/v12", 404),
        ("/echo/v", 404),
        ("/x/status/200/x/1", 404),         # anchored at both ends
    ]
    got = [(t, status_of(p.port, t)) for t, _ in cases]
    assert got == cases


def test_path_matcher_ignores_query(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule q path /status/200 => abort 503\n")
    assert status_of(p.port, "/status/200?body=hello") == 503
    assert status_of(p.port, "/status/200") == 503
    assert status_of(p.port, "/status/2000") == 404


def test_header_matchers(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule both header X-A header X-B=on => abort 502\n'
              'rule ua header User-Agent="*curl *" => abort 503\n'
              'rule present header X-Fail => abort 504\n')
    with p.conn() as c:
        def st(headers):
            return c.exchange("GET", "/status/200", headers=headers).status
        assert st([]) == 200
        assert st([("X-Fail", "")]) == 504                      # presence, any value
        assert st([("x-fail", "whatever")]) == 504              # name case-insensitive
        assert st([("User-Agent", "my curl 8.0")]) == 503
        assert st([("User-Agent", "curl 8.0")]) == 503          # `*` matches an empty run
        assert st([("User-Agent", "curl/8.0")]) == 200          # no space after curl
        assert st([("User-Agent", "my CURL 8.0")]) == 200       # value case-sensitive
        assert st([("X-A", "1"), ("X-B", "on")]) == 502         # both header matchers
        assert st([("X-A", "1"), ("X-B", "off")]) == 200
        assert st([("X-B", "on")]) == 200
        assert st([("X-A", "1"), ("x-b", "on"), ("X-Fail", "1")]) == 502  # first match


def test_client_cidr_matcher(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule ten client 10.0.0.0/8 => abort 500\n"
              "rule two client 127.0.0.2/32 => abort 502\n"
              "rule lo client 127.0.0.0/8 => abort 503\n")
    assert status_of(p.port, "/status/200") == 503               # from 127.0.0.1
    with SourceConn(p.port, "127.0.0.2") as c:
        assert c.exchange("GET", "/status/200").status == 502
    with SourceConn(p.port, "127.0.0.3") as c:
        assert c.exchange("GET", "/status/200").status == 503
    assert backend.requests == 0


def test_host_and_path_in_forward_mode(proxy_factory, backend, tmp_path):
    # absolute-form: host and path come from the URI, not from Host
    p = start(proxy_factory, backend, tmp_path,
              "rule h host 127.0.0.1 path /status/20* => abort 503\n")
    base = "http://127.0.0.1:%d" % backend.port
    with p.conn() as c:
        assert c.exchange("GET", base + "/status/200", host="other.test").status == 503
        assert c.exchange("GET", base + "/status/404", host="other.test").status == 404
        assert c.exchange("GET", "http://localhost:%d/status/200" % backend.port,
                          host="127.0.0.1").status == 200
    # gateway mode: Host decides
    assert get(p.port, "/status/200", host="127.0.0.1:1234").status == 503
    assert get(p.port, "/status/200", host="e2e.test").status == 200


def test_client_cidr_nonmatching_passes(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule ten client 10.0.0.0/8 => abort 500\n"
              "rule v6 client ::1 => abort 500\n")
    assert status_of(p.port, "/status/200") == 200


# ---------------------------------------------------------------------------
# Matchers, response phase: `status` sees the upstream's code


@pytest.mark.parametrize("spec,hits,misses", [
    ("503", [503], [500, 502, 504, 200]),
    ("5xx", [500, 503, 599, 520], [499, 404, 200]),
    ("500-504", [500, 502, 504], [505, 499, 200]),
    ("404,418,502-503", [404, 418, 502, 503], [405, 500, 504, 200]),
    ("4xx,500", [400, 404, 451, 500], [501, 399, 200]),
])
def test_status_matcher(proxy_factory, backend, tmp_path, spec, hits, misses):
    p = start(proxy_factory, backend, tmp_path,
              "rule r status %s => set-status 299 reason \"Matched\"\n" % spec)
    with p.conn() as c:
        for code in hits:
            r = c.exchange("GET", "/status/%d?body=b%d" % (code, code))
            assert (r.status, r.reason, r.body) == (299, "Matched", b"b%d" % code), code
        for code in misses:
            r = c.exchange("GET", "/status/%d?body=b%d" % (code, code))
            assert r.status == code, code
            assert r.body == b"b%d" % code


def test_request_matchers_in_a_response_rule(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule r method GET host *.test path /status/5* header X-Hide client 127.0.0.0/8 '
              'status 5xx => set-status 200\n')
    hide = [("X-Hide", "1")]
    with p.conn() as c:
        assert c.exchange("GET", "/status/503", headers=hide).status == 200
        assert c.exchange("GET", "/status/503").status == 503                 # no header
        assert c.exchange("GET", "/status/503", headers=hide, host="x.org").status == 503
        assert c.exchange("POST", "/status/503", headers=hide, body=b"").status == 503
        assert c.exchange("GET", "/status/404", headers=hide).status == 404   # status
    # request matchers do not stop the request: all five reached the backend
    assert backend.requests == 5


def test_rule_without_matchers_applies_to_every_exchange(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, 'rule all => set-header X-All "yes"\n')
    for t in ["/status/200", "/status/404", "/echo"]:
        assert get(p.port, t).get("X-All") == "yes"


# ---------------------------------------------------------------------------
# Order: first matching enabled rule per phase; request + response rule


def test_first_match_wins_per_phase(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule a path /status/* header X-A => abort 501\n'
              'rule b path /status/* => set-header X-Rule "b"\n'
              'rule c path /status/2* => abort 502\n'
              'rule r1 status 404 => set-header X-Resp "r1"\n'
              'rule r2 status 4xx => set-header X-Resp "r2"\n')
    r = get(p.port, "/status/200", headers=[("X-A", "1")])
    assert r.status == 501
    r = get(p.port, "/status/200")
    assert (r.status, r.get("X-Rule")) == (200, "b")     # b shadows c
    r = get(p.port, "/status/404")
    assert r.get_all("X-Resp") == ["r1"]
    r = get(p.port, "/status/410")
    assert r.get_all("X-Resp") == ["r2"]


def test_request_rule_and_response_rule_on_one_exchange(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule rq path /status/* => set-status 201 set-header X-Req "1" '
              'set-header X-Both "req" reason "From Request"\n'
              'rule rs status 200 => set-status 202 set-header X-Resp "1" set-header X-Both "resp"\n',
              args=["--mark-faults"])
    r = get(p.port, "/status/200?body=hello")
    assert r.status == 202, r                # the response rule's settings win
    assert r.get("X-Req") == "1" and r.get("X-Resp") == "1"
    assert r.get_all("X-Both") == ["resp"]
    assert r.get("X-Statusproxy-Rule") == "rs"
    assert r.body == b"hello"
    # the request rule alone where no response rule matches
    r = get(p.port, "/status/404?body=nf")
    assert (r.status, r.reason, r.get("X-Req"), r.get("X-Resp")) == \
        (201, "From Request", "1", None)
    assert r.get("X-Statusproxy-Rule") == "rq"


# ---------------------------------------------------------------------------
# every / after / limit: exact counts


def statuses(port, target, n, **kw):
    with HttpConn(port) as c:
        return [c.exchange("GET", target, **kw).status for _ in range(n)]


def statuses_new_conns(port, target, n):
    return [status_of(port, target) for _ in range(n)]


def test_limit_2_first_two_fail_then_pass_one_connection(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule retry-test method GET path /orders limit 2 => abort 503 '
              'body "{\\"error\\":\\"down\\"}"\n')
    got = statuses(p.port, "/orders", 6)
    assert got == [503, 503, 404, 404, 404, 404]   # the backend's 404 for /orders
    assert backend.requests == 4


def test_limit_2_across_new_connections(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule retry-test method GET path /status/* limit 2 => abort 503\n")
    assert statuses_new_conns(p.port, "/status/200", 5) == [503, 503, 200, 200, 200]


def test_limit_counts_acts_not_exchanges(proxy_factory, backend, tmp_path):
    # `every 2` makes only the even exchanges act: limit 2 is used up by the
    # 2nd and 4th matching exchange, not by the 1st and 2nd.
    p = start(proxy_factory, backend, tmp_path,
              "rule l path /status/* every 2 limit 2 => abort 503\n")
    assert statuses(p.port, "/status/200", 8) == [200, 503, 200, 503, 200, 200, 200, 200]


def test_every_counts_only_exchanges_that_passed_static_matchers(proxy_factory, backend,
                                                                  tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule e path /status/2* every 3 => abort 503\n")
    seq = []
    with p.conn() as c:
        for i in range(9):
            seq.append(c.exchange("GET", "/status/200").status)
            # a non-matching request in between must not advance the count
            assert c.exchange("GET", "/status/404").status == 404
    assert seq == [200, 200, 503] * 3


def test_after_n(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule a path /status/* after 3 => abort 503\n")
    assert statuses_new_conns(p.port, "/status/200", 6) == [200, 200, 200, 503, 503, 503]


def test_after_and_limit(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule a path /status/* after 1 limit 2 => abort 503\n")
    assert statuses(p.port, "/status/200", 6) == [200, 503, 503, 200, 200, 200]


def test_every_after_limit_in_response_phase(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule e status 5xx every 2 => set-status 200\n"
              "rule l status 404 limit 1 => set-status 200\n"
              "rule a status 410 after 2 => set-status 200\n")
    with p.conn() as c:
        st = lambda code: c.exchange("GET", "/status/%d" % code).status  # noqa: E731
        assert [st(503), st(200), st(500), st(502), st(502)] == [503, 200, 200, 502, 200]
        assert [st(404), st(404), st(404)] == [200, 404, 404]
        assert [st(410), st(410), st(410), st(410)] == [410, 410, 200, 200]
    assert backend.requests == 12


# ---------------------------------------------------------------------------
# chance with --seed


def chance_sequence(proxy_factory, backend, tmp_path, seed, n, rule):
    p = start(proxy_factory, backend, tmp_path, rule, args=["--seed", str(seed)])
    with p.conn() as c:
        seq = [c.exchange("GET", "/status/200").status for _ in range(n)]
    p.stop()
    return seq


def test_chance_25_percent_within_binomial_bound(proxy_factory, backend, tmp_path):
    n = 400
    seq = chance_sequence(proxy_factory, backend, tmp_path, 12345, n,
                          "rule c path /status/* chance 25% => abort 503\n")
    k = seq.count(503)
    assert set(seq) <= {200, 503}
    # mean 100, sd 8.66: +-3.5 sd
    assert 70 <= k <= 130, "chance 25%% acted %d times in %d" % (k, n)
    # not clumped: each half carries a fair share
    assert 25 <= seq[:200].count(503) <= 75 and 25 <= seq[200:].count(503) <= 75
    assert backend.requests == n - k


def test_chance_same_seed_same_sequence(proxy_factory, backend, tmp_path):
    rule = "rule c path /status/* chance 25% => abort 503\n"
    a = chance_sequence(proxy_factory, backend, tmp_path, 777, 200, rule)
    b = chance_sequence(proxy_factory, backend, tmp_path, 777, 200, rule)
    c = chance_sequence(proxy_factory, backend, tmp_path, 778, 200, rule)
    assert a == b
    assert a != c, "a different seed gave the very same 200 decisions"
    assert 20 <= a.count(503) <= 80


def test_chance_in_response_phase_and_extremes(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule never path /status/200 chance 0% => abort 500\n"
              "rule always path /status/200 chance 100% => abort 502\n"
              "rule half status 503 chance 50% => set-status 200\n",
              args=["--seed", "5"])
    with p.conn() as c:
        assert [c.exchange("GET", "/status/200").status for _ in range(20)] == [502] * 20
        seq = [c.exchange("GET", "/status/503").status for _ in range(200)]
    # mean 100, sd 7.07
    assert 75 <= seq.count(200) <= 125 and seq.count(200) + seq.count(503) == 200


def test_chance_tested_after_every(proxy_factory, backend, tmp_path):
    # every 2 counts all matching exchanges, chance only sees the even ones:
    # odd exchanges never act whatever chance draws.
    p = start(proxy_factory, backend, tmp_path,
              "rule c path /status/* every 2 chance 50% => abort 503\n",
              args=["--seed", "9"])
    seq = statuses(p.port, "/status/200", 200)
    assert all(s == 200 for s in seq[0::2])
    k = seq[1::2].count(503)
    assert 30 <= k <= 70, k   # 100 draws at 50%: sd 5


# ---------------------------------------------------------------------------
# abort


def test_abort_default_body_without_contacting_upstream(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule a path /status/* => abort 503\n"
              "rule t path /teapot => abort 418\n")
    with p.conn() as c:
        r = c.exchange("GET", "/status/200")
        assert check_synthesized(r, 503, "Service Unavailable") == []
        assert r.get("Content-Length") == str(len(r.body))
        r = c.exchange("POST", "/status/200", body=det_bytes(100000))  # body discarded
        assert check_synthesized(r, 503, "Service Unavailable") == []
        r = c.exchange("GET", "/teapot")
        assert r.status == 418 and r.body.startswith(b"418 ")
        # the connection stays usable after aborts
        assert c.exchange("GET", "/echo").status == 200
    assert backend.requests == 1 and backend.log[0]["target"] == "/echo"


def test_abort_json_body_is_application_json(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule j path /j => abort 503 body "{\\"error\\":\\"down\\"}"\n'
              'rule a path /a => abort 500 body "[1,2]"\n'
              'rule t path /t => abort 429 body "slow down\\n" set-header Retry-After "5"\n')
    r = get(p.port, "/j")
    assert r.status == 503
    assert r.get("Content-Type", "").split(";")[0].strip() == "application/json"
    assert json.loads(r.body) == {"error": "down"}
    r = get(p.port, "/a")
    assert r.get("Content-Type", "").split(";")[0].strip() == "application/json"
    assert r.body == b"[1,2]"
    r = get(p.port, "/t")
    assert r.status == 429
    assert r.get("Content-Type", "").split(";")[0].strip() == "text/plain"
    assert r.body == b"slow down\n"
    assert r.get_all("Retry-After") == ["5"]
    assert backend.requests == 0


def test_abort_reason_and_head(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule a path /x => abort 503 reason "Try Later"\n')
    r = get(p.port, "/x")
    assert (r.status, r.reason) == (503, "Try Later")
    with p.conn() as c:
        r = c.exchange("HEAD", "/x")
        assert r.status == 503 and r.body == b""
        # nothing after the head: the next answer parses cleanly
        assert c.exchange("GET", "/echo").status == 200


def test_abort_in_response_phase_replaces_answer(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule r status 500 => abort 503 body "{\\"masked\\":true}" set-header X-M "1"\n'
              'rule d status 404 => abort 502\n')
    with p.conn() as c:
        r = c.exchange("GET", "/status/500?size=200000&hdr=X-Up:1")
        assert r.status == 503 and json.loads(r.body) == {"masked": True}
        assert r.get("Content-Type", "").split(";")[0].strip() == "application/json"
        assert r.get("X-M") == "1"
        r = c.exchange("GET", "/status/404?body=real&chunked=1")
        assert check_synthesized(r, 502, "Bad Gateway") == []
        # the replaced bodies did not leak into the stream
        r = c.exchange("GET", "/status/200?body=next")
        assert (r.status, r.body) == (200, b"next")
    assert backend.requests == 3


# ---------------------------------------------------------------------------
# set-status, reason, headers


def test_request_rule_actions_apply_to_forwarded_response(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule q path /status/* => set-status 503 reason "Injected" '
              'set-header X-Added "a" set-header X-Up "replaced" del-header X-Gone\n')
    r = get(p.port, "/status/200?body=payload&hdr=X-Up:orig&hdr=X-Gone:1&hdr=X-Keep:k")
    assert (r.status, r.reason, r.body) == (503, "Injected", b"payload")
    assert r.get_all("X-Added") == ["a"]
    assert r.get_all("X-Up") == ["replaced"]
    assert not r.has("X-Gone")
    assert r.get("X-Keep") == "k"
    assert backend.requests == 1


def test_response_rule_headers(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule r status 200 => set-header x-up "new" del-header X-Gone del-header Server '
              'set-header Cache-Control "no-store"\n')
    r = get(p.port, "/status/200?body=b&hdr=X-Up:1&hdr=x-up:2&hdr=X-Gone:g&hdr=Server:be"
                    "&hdr=Cache-Control:max-age=60")
    assert r.get_all("X-Up") == ["new"]           # every field of that name replaced
    assert not r.has("X-Gone") and not r.has("Server")
    assert r.get_all("Cache-Control") == ["no-store"]
    assert r.body == b"b"


def test_reason_only(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, 'rule r status 404 => reason "Gone Fishing"\n')
    r = get(p.port, "/status/404?body=x")
    assert (r.status, r.reason, r.body) == (404, "Gone Fishing", b"x")


def test_set_status_keeps_body_and_framing(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r status 200 => set-status 500\n")
    with p.conn() as c:
        r = c.exchange("GET", "/stream?size=300000")
        assert r.status == 500 and r.framing == "length"
        assert r.body_sha256 == det_sha256(300000)
        r = c.exchange("GET", "/stream?size=300000&chunked=1&chunk=10000")
        assert r.status == 500 and r.body_sha256 == det_sha256(300000)
        # the default reason follows the new code
        assert r.reason == "Internal Server Error"


@pytest.mark.parametrize("query", ["body=hello", "size=100000", "size=100000&chunked=1",
                                   "size=100000&close=1"])
def test_set_status_204_drops_body(proxy_factory, backend, tmp_path, query):
    p = start(proxy_factory, backend, tmp_path, "rule r path /status/200 => set-status 204\n")
    with p.conn() as c:
        c.request("GET", "/status/200?" + query)
        c.request("GET", "/status/201?body=after")
        r = c.read_response()
        assert r.status == 204
        assert not r.has("Content-Length") and not r.has("Transfer-Encoding"), r
        r2 = c.read_response()
        # nothing of the dropped body sits between the two answers
        assert (r2.status, r2.body) == (201, b"after")


@pytest.mark.parametrize("query", ["body=hello", "size=100000&chunked=1"])
def test_set_status_304_drops_body(proxy_factory, backend, tmp_path, query):
    p = start(proxy_factory, backend, tmp_path, "rule r status 200 => set-status 304\n")
    with p.conn() as c:
        c.request("GET", "/status/200?" + query)
        c.request("GET", "/status/201?body=after")
        r = c.read_response()
        assert r.status == 304 and not r.has("Transfer-Encoding")
        r2 = c.read_response()
        assert (r2.status, r2.body) == (201, b"after")


def test_set_status_205_has_content_length_0(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r status 200 => set-status 205\n")
    with p.conn() as c:
        for q in ["body=hello", "size=50000&chunked=1"]:
            r = c.exchange("GET", "/status/200?" + q)
            assert r.status == 205
            assert r.get_all("Content-Length") == ["0"] and not r.has("Transfer-Encoding")
            assert r.body == b""
        assert c.exchange("GET", "/status/201?body=after").body == b"after"


def test_set_status_from_204_to_200_gets_empty_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r status 204 => set-status 200\n")
    with p.conn() as c:
        r = c.exchange("GET", "/status/204")
        assert r.status == 200 and r.get_all("Content-Length") == ["0"]
        assert not r.has("Transfer-Encoding") and r.body == b""
        assert c.exchange("GET", "/status/201?body=after").body == b"after"


def test_set_status_head_stays_bodiless(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule a status 204 => set-status 200\n"
              "rule b status 200 => set-status 500\n")
    with p.conn() as c:
        c.request("HEAD", "/status/204")
        c.request("HEAD", "/status/200?size=1000")
        c.request("GET", "/status/201?body=after")
        r = c.read_response("HEAD")
        assert r.status == 200
        r = c.read_response("HEAD")
        assert r.status == 500 and r.get("Content-Length") in (None, "1000")
        r = c.read_response()
        assert (r.status, r.body) == (201, b"after")


# ---------------------------------------------------------------------------
# --mark-faults


def test_mark_faults(proxy_factory, backend, tmp_path):
    rules = ('rule ab path /ab => abort 503\n'
             'rule hd path /status/2* => set-header X-H "1"\n'
             'rule rs status 404 => set-status 200\n')
    p = start(proxy_factory, backend, tmp_path, rules, args=["--mark-faults"])
    assert get(p.port, "/ab").get_all("X-Statusproxy-Rule") == ["ab"]
    assert get(p.port, "/status/200").get_all("X-Statusproxy-Rule") == ["hd"]
    assert get(p.port, "/status/404").get_all("X-Statusproxy-Rule") == ["rs"]
    r = get(p.port, "/status/500")
    assert r.status == 500 and not r.has("X-Statusproxy-Rule")    # a real 500
    q = start(proxy_factory, backend, tmp_path, rules)
    for t in ["/ab", "/status/200", "/status/404"]:
        assert not get(q.port, t).has("X-Statusproxy-Rule"), t


# ---------------------------------------------------------------------------
# delay

# libuv timers count from the loop's cached clock, which can be a few
# milliseconds older than the moment the request arrived.
TICK = 0.01


def test_fixed_delay_request_and_response_phase(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule ab path /ab => abort 503 delay 600ms\n"
              "rule rq path /status/201 => delay 600ms\n"
              "rule rs status 202 => delay 600ms\n")
    slack = 0.7 * slowdown(p)
    _, base = timed(p.port, "/status/200")
    for target, code in [("/ab", 503), ("/status/201", 201), ("/status/202", 202)]:
        r, t = timed(p.port, target)
        assert r.status == code
        assert 0.6 - TICK <= t <= 0.6 + base + slack, "%s took %.3fs" % (target, t)
    assert backend.requests == 3   # the abort never reached it


@pytest.mark.parametrize("rule", ["rule rq path /slow => delay 500ms\n",
                                  "rule rs path /slow status 200 => delay 500ms\n"])
def test_delay_holds_head_after_upstream_head(proxy_factory, backend, tmp_path, rule):
    # upstream head after 400 ms, then a 500 ms delay: about 900 ms in all
    p = start(proxy_factory, backend, tmp_path, rule)
    r, t = timed(p.port, "/slow?head_delay_ms=400")
    assert r.status == 200
    assert 0.9 - TICK <= t <= 0.9 + 0.7 * slowdown(p), "took %.3fs" % t


def test_delay_range(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule d path /status/* => delay 200ms..800ms\n", args=["--seed", "3"])
    times = []
    for _ in range(8):
        r, t = timed(p.port, "/status/200")
        assert r.status == 200
        times.append(t)
    slack = 0.3 * slowdown(p)
    assert all(0.2 - TICK <= t <= 0.8 + slack for t in times), times
    assert max(times) - min(times) >= 0.15, "delays do not vary: %r" % times


def test_delay_range_reproducible_with_seed(proxy_factory, backend, tmp_path):
    def run():
        p = start(proxy_factory, backend, tmp_path,
                  "rule d path /status/* => delay 100ms..1500ms\n", args=["--seed", "42"])
        out = [timed(p.port, "/status/200")[1] for _ in range(5)]
        p.stop()
        return out, slowdown(p)
    (a, slow), (b, _) = run(), run()
    assert max(a) - min(a) >= 0.3, a
    assert all(abs(x - y) <= 0.15 * slow for x, y in zip(a, b)), (a, b)


# ---------------------------------------------------------------------------
# throttle


def test_throttle_paces_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule t path /stream => throttle 64KB/s\n"
              "rule q status 201 => throttle 64KB/s\n")
    n = 256 * 1024
    r, t = timed(p.port, "/stream?size=%d" % n, timeout=15)
    assert r.body_sha256 == det_sha256(n)
    assert 3.3 <= t <= 4.0 + 2.0 * slowdown(p), "256 KiB at 64KB/s took %.2fs" % t
    # response phase, chunked upstream: half the size, half the time
    r, t = timed(p.port, "/status/201?size=%d&chunked=1" % (n // 2), timeout=15)
    assert r.status == 201 and r.body == det_bytes(n // 2)
    assert 1.6 <= t <= 2.0 + 2.0 * slowdown(p), "128 KiB at 64KB/s took %.2fs" % t


def test_throttle_is_steady_not_one_burst(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule t path /stream => throttle 64KB/s\n")
    n = 192 * 1024
    arrivals = []
    t0 = time.monotonic()
    with p.conn(timeout=15) as c:
        c.exchange("GET", "/stream?size=%d" % n,
                   sink=lambda mv: arrivals.append((time.monotonic() - t0, len(mv))))
    # by 1 s no more than ~2 s worth of bytes; by 2 s at least ~1 s worth
    by1 = sum(k for t, k in arrivals if t <= 1.0)
    by2 = sum(k for t, k in arrivals if t <= 2.0)
    assert by1 <= 128 * 1024, by1
    assert by2 >= 64 * 1024, by2


def test_throttle_keeps_proxy_memory_flat(proxy_factory, backend, tmp_path):
    # 48 MiB at 12MB/s takes 4 s; the backend could send it all in well under
    # a second, so a proxy that buffered it would grow by ~48 MiB.
    p = start(proxy_factory, backend, tmp_path, "rule t path /stream => throttle 12MB/s\n",
              env=ASAN_ENV)
    get(p.port, "/status/200?size=100000")
    before = p.vm_hwm_kib()
    n = 48 << 20
    r, t = timed(p.port, "/stream?size=%d&chunk=262144" % n, sink=lambda mv: None,
                 timeout=60)
    after = p.vm_hwm_kib()
    assert r.body_len == n and r.body_sha256 == det_sha256(n)
    assert t >= 3.3, "48 MiB at 12MB/s took only %.2fs" % t
    assert after - before < 16 * 1024, "VmHWM grew from %d to %d KiB" % (before, after)


# ---------------------------------------------------------------------------
# reset


def expect_reset(conn, timeout=10.0):
    """The peer resets the connection before any complete answer: returns
    what was received (should be nothing)."""
    conn.sock.settimeout(timeout)
    got = bytearray(conn.buf)
    try:
        while True:
            data = conn.sock.recv(65536)
            if not data:
                raise AssertionError("connection closed with FIN, not reset; got %r"
                                     % bytes(got[:200]))
            got += data
    except ConnectionResetError:
        return bytes(got)


def test_reset_request_rule_forwards_then_resets(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r path /status/* => reset\n")
    with p.conn() as c:
        c.request("GET", "/status/200?body=hello")
        assert expect_reset(c) == b""
    assert backend.wait_for(lambda b: b.requests == 1)


def test_reset_response_rule(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r status 503 => reset\n")
    with p.conn() as c:
        c.request("GET", "/status/503?size=10000")
        assert expect_reset(c) == b""
    # other statuses pass, on fresh connections
    assert status_of(p.port, "/status/200") == 200


def test_reset_after_delay(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule r path /x => delay 500ms reset\n")
    with p.conn() as c:
        t0 = time.monotonic()
        c.request("GET", "/x")
        assert expect_reset(c) == b""
        assert time.monotonic() - t0 >= 0.5 - TICK


def test_reset_seen_by_a_plain_http_client(proxy_factory, backend, tmp_path):
    import http.client
    p = start(proxy_factory, backend, tmp_path, "rule r path /x => reset\n")
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    c.request("GET", "/x")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)) as ei:
        c.getresponse()
    c.close()
    assert isinstance(ei.value, ConnectionResetError), repr(ei.value)


# ---------------------------------------------------------------------------
# truncate


def test_truncate_content_length_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule t path /stream => truncate 1000\n")
    with p.conn() as c:
        r = c.exchange("GET", "/stream?size=100000", allow_incomplete=True)
        assert r.status == 200 and r.get("Content-Length") == "100000"
        assert not r.complete and r.body == det_bytes(1000)
        assert c.closed_by_peer(2.0)


def test_truncate_chunked_body_response_rule(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule t status 200 => truncate 4KB\n")
    with p.conn() as c:
        r = c.exchange("GET", "/stream?size=100000&chunked=1&chunk=1000", allow_incomplete=True)
        assert not r.complete
        assert r.body == det_bytes(4096)
        assert c.closed_by_peer(2.0)


def test_truncate_close_delimited_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule t path /stream => truncate 3000\n")
    with p.conn() as c:
        r = c.exchange("GET", "/stream?size=100000&close=1", allow_incomplete=True)
        assert r.status == 200
        assert r.body == det_bytes(3000)
        # whatever framing the proxy chose, the client must not mistake the
        # cut answer for a whole one: a length says more, or chunked is unfinished
        assert not r.complete or r.framing == "close", r
        assert c.closed_by_peer(2.0)


def test_throttle_with_truncate(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule t path /stream => throttle 32KB/s truncate 16KB\n")
    with p.conn() as c:
        t0 = time.monotonic()
        r = c.exchange("GET", "/stream?size=40000", allow_incomplete=True)
        t = time.monotonic() - t0
        assert not r.complete and r.body == det_bytes(16384)
        assert c.closed_by_peer(2.0)
    assert 0.4 <= t <= 0.5 + 1.0 * slowdown(p), "16 KiB at 32KB/s took %.2fs" % t


def test_truncate_zero_and_larger_than_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule z path /status/200 => truncate 0\n"
              "rule big path /status/201 => truncate 1MB\n")
    with p.conn() as c:
        r = c.exchange("GET", "/status/200?body=hello", allow_incomplete=True)
        assert r.status == 200 and r.body == b"" and not r.complete
        assert c.closed_by_peer(2.0)
    with p.conn() as c:
        r = c.exchange("GET", "/status/201?body=hello", allow_incomplete=True)
        assert r.status == 201 and r.body == b"hello"


# ---------------------------------------------------------------------------
# counts shared by worker threads, pipelining


def test_limit_and_every_exact_with_two_workers(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule l path /status/200 limit 2 => abort 503\n"
              "rule e path /status/201 every 3 => abort 502\n",
              args=["--workers", "2"])
    # new connections land on either worker; the counts are the set's
    got = [status_of(p.port, "/status/200") for _ in range(12)]
    assert sorted(got) == [200] * 10 + [503] * 2 and got[:2] == [503, 503], got
    got = [status_of(p.port, "/status/201") for _ in range(12)]
    assert got == [201, 201, 502] * 4, got


def test_pipelined_requests_with_aborts_answer_in_order(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              'rule ab path /ab => abort 503 body "aborted"\n'
              'rule dl path /dl => abort 504 delay 300ms\n'
              'rule rs status 404 => set-status 200 reason "Hidden"\n')
    with p.conn() as c:
        c.send(b"GET /ab HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /status/201?body=one HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /dl HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /status/404?body=two HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /ab HTTP/1.1\r\nHost: e2e.test\r\n\r\n"
               b"GET /status/202?body=three HTTP/1.1\r\nHost: e2e.test\r\n\r\n")
        got = [c.read_response() for _ in range(6)]
    assert [(r.status, r.body) for r in got] == [
        (503, b"aborted"), (201, b"one"), (504, b"504 Gateway Timeout\n"), (200, b"two"),
        (503, b"aborted"), (202, b"three")]
    assert [e["target"] for e in backend.log] == ["/status/201?body=one", "/status/404?body=two",
                                                  "/status/202?body=three"]


# ---------------------------------------------------------------------------
# actions meeting clients that behave unusually


def test_abort_answers_expect_100_continue_without_interim(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule a path /sink => abort 503\n")
    with p.conn() as c:
        c.send(b"POST /sink HTTP/1.1\r\nHost: e2e.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: 100000\r\n\r\n")
        r = c.read_response(timeout=5)
        # the final answer comes at once: no 100 Continue asks for a body
        # that will be thrown away
        assert r.status == 503 and r.interim == []
    assert backend.requests == 0


def test_delay_and_throttle_together(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path,
              "rule dt status 200 => delay 500ms throttle 64KB/s\n")
    n = 64 * 1024
    r, t = timed(p.port, "/stream?size=%d" % n, timeout=15)
    assert r.body_sha256 == det_sha256(n)
    # 0.5 s before the head, then ~1 s of body
    assert 1.3 <= t <= 1.5 + 1.0 * slowdown(p), "took %.2fs" % t


def test_client_leaves_during_throttled_body(proxy_factory, backend, tmp_path):
    p = start(proxy_factory, backend, tmp_path, "rule t path /stream => throttle 64KB/s\n")
    c = p.conn()
    c.request("GET", "/stream?size=%d" % (4 << 20))
    c.sock.recv(20000)
    time.sleep(0.3)
    c.close()
    time.sleep(0.5)
    # the proxy lives on and serves the next client at full speed
    r, t = timed(p.port, "/status/200?size=300000")
    assert r.status == 200 and r.body_len == 300000
    assert t < 1.0
