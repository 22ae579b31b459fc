"""Rules at run time (DESIGN §1, §4, §5): reload by SIGHUP and by a change of
the file (counters restart), bad reloads refused with the old rules still
acting, fault headers with and without --fault-headers (never forwarded),
a bad rule file at start, and what the audit database records for
rule-driven exchanges."""

import os
import re
import signal
import subprocess
import time

import pytest

from helpers import HttpConn, check_synthesized, free_port, wait_until
from rules_support import (Admin, db_rows, get, replace_file, rules_proxy, slowdown, status_of,
                           timed)

DIAG = re.compile(r"(?P<file>/\S+\.rules):(?P<line>\d+):(?P<col>\d+): error: ")


def statuses(port, target, n):
    with HttpConn(port) as c:
        return [c.exchange("GET", target).status for _ in range(n)]


def wait_rules(p, pred, timeout=3.0):
    """Wait until PRED({name: rule}) holds for GET /rules."""
    adm = Admin(p)
    return wait_until(lambda: pred(adm.rules()), timeout=timeout)


def wait_stderr(p, pattern, timeout=3.0):
    return wait_until(lambda: re.search(pattern, p.stderr()), timeout=timeout)


# ---------------------------------------------------------------------------
# reloads


def test_sighup_reload_restarts_limit(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    "rule l path /status/* limit 2 => abort 503\n")
    assert statuses(p.port, "/status/200", 3) == [503, 503, 200]
    assert Admin(p).rules()["l"]["hits"] == 2
    os.kill(p.pid, signal.SIGHUP)
    assert wait_rules(p, lambda rs: rs["l"]["hits"] == 0), "SIGHUP did not swap in a new set"
    assert statuses(p.port, "/status/200", 3) == [503, 503, 200]


def test_sighup_reload_picks_up_new_rules(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule a path /status/* => abort 501\n")
    assert status_of(p.port, "/status/200") == 501
    with open(p.rules_path, "w") as f:
        f.write("rule b path /status/* => abort 502\n")
    os.kill(p.pid, signal.SIGHUP)
    assert wait_rules(p, lambda rs: list(rs) == ["b"])
    assert status_of(p.port, "/status/200") == 502


@pytest.mark.parametrize("how", ["in-place", "rename"])
def test_file_change_reloads(proxy_factory, backend, tmp_path, how):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule a path /status/* => abort 501\n")
    assert status_of(p.port, "/status/200") == 501
    time.sleep(0.2)  # a later mtime, for watchers that compare it
    new = "rule b path /status/* => abort 502\n"
    if how == "rename":
        replace_file(p.rules_path, new)
    else:
        with open(p.rules_path, "w") as f:
            f.write(new)
    t0 = time.monotonic()
    assert wait_until(lambda: status_of(p.port, "/status/200") == 502, timeout=3.0), \
        "a %s change of the rule file was not picked up within 3 s" % how
    assert time.monotonic() - t0 < 2.0
    # and a second change is picked up too (the watch survives a rename)
    time.sleep(0.2)
    again = "rule c path /status/* => abort 504\n"
    if how == "rename":
        replace_file(p.rules_path, again)
    else:
        with open(p.rules_path, "w") as f:
            f.write(again)
    assert wait_until(lambda: status_of(p.port, "/status/200") == 504, timeout=3.0), \
        "the second %s change was not picked up" % how


def test_file_change_restarts_every_counter(proxy_factory, backend, tmp_path):
    rule = "rule e path /status/* every 3 => abort 503\n"
    p = rules_proxy(proxy_factory, backend, tmp_path, rule)
    assert statuses(p.port, "/status/200", 2) == [200, 200]
    with open(p.rules_path, "w") as f:
        f.write("# touched\n" + rule)
    # the new set has the rule on line 2
    assert wait_rules(p, lambda rs: rs["e"]["line"] == 2), "file change not reloaded"
    # the count restarted: the next exchange is the 1st, not the 3rd
    assert statuses(p.port, "/status/200", 6) == [200, 200, 503, 200, 200, 503]


def bad_reload_keeps_old_rules(p, trigger):
    """P runs `limit 3 => abort 503`, one act used.  TRIGGER installs a bad
    file; the old set must stay with its counter (2 acts left)."""
    assert statuses(p.port, "/status/200", 1) == [503]
    err_before = p.stderr()
    trigger()
    assert wait_until(lambda: DIAG.search(p.stderr()[len(err_before):]), timeout=3.0), \
        "no FILE:LINE:COL error on stderr after a bad reload:\n" + p.stderr()
    time.sleep(0.3)
    rs = Admin(p).rules()
    assert list(rs) == ["l"] and rs["l"]["hits"] == 1, rs
    assert statuses(p.port, "/status/200", 3) == [503, 503, 200]


def test_bad_file_change_keeps_old_rules(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    "rule l path /status/* limit 3 => abort 503\n")

    def trigger():
        time.sleep(0.2)
        with open(p.rules_path, "w") as f:
            f.write("rule l path /status/* => abrot 503\n")
    bad_reload_keeps_old_rules(p, trigger)
    m = DIAG.search(p.stderr())
    assert (m["file"], m["line"]) == (p.rules_path, "1")


def test_bad_sighup_reload_keeps_old_rules(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    "rule l path /status/* limit 3 => abort 503\n")
    bad = "rule l path /status/* => abort 503\nrule l => abort 101\n"

    def trigger():
        # write the bad file atomically, then SIGHUP: whichever reload
        # runs, it must refuse the set
        replace_file(p.rules_path, bad)
        os.kill(p.pid, signal.SIGHUP)
    bad_reload_keeps_old_rules(p, trigger)


def test_good_file_after_bad_one_is_taken(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule a path /status/* => abort 501\n")
    time.sleep(0.2)
    replace_file(p.rules_path, "rule a path /status/* => abort 1000\n")
    assert wait_stderr(p, DIAG.pattern)
    assert status_of(p.port, "/status/200") == 501
    time.sleep(0.2)
    replace_file(p.rules_path, "rule b path /status/* => abort 502\n")
    assert wait_until(lambda: status_of(p.port, "/status/200") == 502, timeout=3.0)


def test_removed_rule_file_keeps_old_rules(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path, "rule a path /status/* => abort 501\n")
    os.remove(p.rules_path)
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert p.proc.poll() is None
    assert status_of(p.port, "/status/200") == 501
    assert list(Admin(p).rules()) == ["a"]
    with open(p.rules_path, "w") as f:
        f.write("rule b path /status/* => abort 502\n")
    os.kill(p.pid, signal.SIGHUP)
    assert wait_until(lambda: status_of(p.port, "/status/200") == 502, timeout=3.0)


# ---------------------------------------------------------------------------
# a bad rule file at start


def run_bad_start(statusproxy_bin, tmp_path, text):
    path = str(tmp_path / "bad.rules")
    with open(path, "w") as f:
        f.write(text)
    argv = [statusproxy_bin, "run", "--listen", "127.0.0.1:%d" % free_port(),
            "--admin", "127.0.0.1:%d" % free_port(), "--db", str(tmp_path / "bad.db"),
            "--upstream", "http://127.0.0.1:9", "--rules", path]
    return path, subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_bad_rule_file_at_start_exits_2_with_positions(statusproxy_bin, tmp_path):
    path, r = run_bad_start(statusproxy_bin, tmp_path,
                            "rule ok path /x => abort 503\n"
                            "rule a metod GET => abort 503\n"
                            "\n"
                            "rule b => abort 101\n")
    assert r.returncode == 2, (r.returncode, r.stderr)
    errs = [m.groupdict() for m in (DIAG.match(l) for l in r.stderr.splitlines()) if m]
    assert [(e["file"], e["line"], e["col"]) for e in errs] == \
        [(path, "2", "8"), (path, "4", "17")], r.stderr
    assert "listening" not in r.stderr


def test_missing_rule_file_at_start_exits_2(statusproxy_bin, tmp_path):
    argv = [statusproxy_bin, "run", "--listen", "127.0.0.1:%d" % free_port(),
            "--admin", "off", "--db", str(tmp_path / "x.db"),
            "--rules", str(tmp_path / "nope.rules")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "nope.rules" in r.stderr


# ---------------------------------------------------------------------------
# fault headers


def test_fault_headers_with_flag(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url, args=["--fault-headers"])
    with p.conn() as c:
        r = c.exchange("GET", "/echo", headers=[("X-Statusproxy-Abort", "503")])
        assert check_synthesized(r, 503, "Service Unavailable") == []
        r = c.exchange("GET", "/echo", headers=[("x-statusproxy-abort", "429")])
        assert r.status == 429
        assert backend.requests == 0, "an abort fault header reached the backend"
        t0 = time.monotonic()
        r = c.exchange("GET", "/echo", headers=[("X-Statusproxy-Delay", "400ms"),
                                                ("X-Other", "kept")])
        t = time.monotonic() - t0
        assert r.status == 200
        assert 0.39 <= t <= 0.4 + 0.5 * slowdown(p), t
    forwarded = [n.lower() for n, _ in backend.log[0]["headers"]]
    assert "x-other" in forwarded
    assert not [n for n in forwarded if n.startswith("x-statusproxy")], forwarded


def test_fault_headers_without_flag_are_ignored_and_not_forwarded(proxy_factory, backend):
    p = proxy_factory(upstream=backend.url)
    with p.conn() as c:
        t0 = time.monotonic()
        r = c.exchange("GET", "/echo", headers=[("X-Statusproxy-Abort", "503"),
                                                ("X-Statusproxy-Delay", "1s"),
                                                ("X-Other", "kept")])
        t = time.monotonic() - t0
    assert r.status == 200
    assert t < 0.8, "X-Statusproxy-Delay acted without --fault-headers (%.2fs)" % t
    forwarded = [n.lower() for n, _ in backend.log[0]["headers"]]
    assert "x-other" in forwarded
    assert not [n for n in forwarded if n.startswith("x-statusproxy")], forwarded


def test_fault_headers_and_rules_together(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    'rule h path /echo => set-header X-Rule "1"\n',
                    args=["--fault-headers", "--mark-faults"])
    r = status_of(p.port, "/echo")
    assert r == 200
    with p.conn() as c:
        r = c.exchange("GET", "/echo", headers=[("X-Statusproxy-Abort", "502")])
        assert r.status == 502
        assert r.get("X-Statusproxy-Rule") is not None
    assert backend.requests == 1


# ---------------------------------------------------------------------------
# the audit database


def test_db_records_rule_driven_exchanges(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    'rule ab path /ab => abort 503 body "{\\"e\\":1}"\n'
                    'rule rst path /status/202 => reset\n'
                    'rule rq path /status/* => set-header X-Q "1"\n'
                    'rule hide status 404 => set-status 200\n'
                    'rule cut status 503 => reset\n',
                    args=["--fault-headers"])
    assert status_of(p.port, "/ab") == 503                      # request abort
    assert status_of(p.port, "/status/404") == 200              # req + resp rule
    assert status_of(p.port, "/status/201") == 201              # request rule only
    assert status_of(p.port, "/echo") == 200                    # no rule
    for target in ["/status/202", "/status/503"]:               # resets
        with p.conn() as c:
            c.request("GET", target)
            with pytest.raises(ConnectionResetError):
                while c.sock.recv(65536):
                    pass
    with p.conn() as c:
        assert c.exchange("GET", "/echo", headers=[("X-Statusproxy-Abort", "504")]).status == 504
    time.sleep(1.5)
    rows = db_rows(p.db, want=7)
    got = [(r["path"], r["upstream_code"], r["final_code"], r["rule"], r["action"])
           for r in rows]
    assert got == [
        ("/ab", None, 503, "ab", 'abort 503 body "{\\"e\\":1}"'),
        ("/status/404", 404, 200, "hide", "set-status 200"),
        ("/status/201", 201, 201, "rq", 'set-header X-Q "1"'),
        ("/echo", 200, 200, None, None),
        ("/status/202", 202, None, "rst", "reset"),
        ("/status/503", 503, None, "cut", "reset"),
        ("/echo", None, 504, "fault-header", "abort 504"),
    ], got
    assert all(r["method"] == "GET" and r["client"] == "127.0.0.1" and r["host"] == "e2e.test"
               for r in rows)
    # the 504 fault answer never reached the backend
    assert backend.requests == 5


# ---------------------------------------------------------------------------
# exchanges in flight across a reload, a client gone during a delay


def test_reload_while_exchange_in_flight(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    'rule old path /status/* => delay 800ms set-header X-Set "old"\n')
    adm = Admin(p)
    with p.conn() as c:
        c.request("GET", "/status/200?body=x")
        time.sleep(0.2)
        r = adm.put_rules('rule new path /status/* => set-header X-Set "new"\n')
        assert r.status == 200
        os.kill(p.pid, signal.SIGHUP)   # and the file's old set, swapped in again
        r = c.read_response()
        # the exchange keeps the rule it was decided with
        assert (r.status, r.get("X-Set"), r.body) == (200, "old", b"x")
    assert wait_until(lambda: get(p.port, "/status/200").get("X-Set") == "old")


def test_client_gone_during_delay(proxy_factory, backend, tmp_path):
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    "rule d path /status/* => delay 1s\n"
                    "rule a path /ab => abort 503 delay 1s\n")
    for target in ["/status/200", "/ab"]:
        c = p.conn()
        c.request("GET", target)
        time.sleep(0.1)
        c.close()
    time.sleep(1.3)
    assert p.proc.poll() is None
    assert status_of(p.port, "/echo") == 200


def test_reload_during_throttled_body(proxy_factory, backend, tmp_path):
    from backend import det_sha256
    p = rules_proxy(proxy_factory, backend, tmp_path,
                    "rule t path /stream => throttle 128KB/s\n")
    n = 256 * 1024
    with p.conn(timeout=20) as c:
        c.request("GET", "/stream?size=%d" % n)
        time.sleep(0.5)
        assert Admin(p).put_rules("rule other path /nothing => abort 500\n").status == 200
        t0 = time.monotonic()
        r = c.read_response(timeout=20)
        # the body keeps the pace it was decided with and arrives whole
        assert r.body_sha256 == det_sha256(n)
        assert time.monotonic() - t0 >= 1.0
    r, t = timed(p.port, "/stream?size=%d" % n)
    assert r.body_len == n and t < 1.0      # the new set does not throttle
