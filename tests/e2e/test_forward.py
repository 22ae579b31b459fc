"""Forward mode (DESIGN §2): absolute-form requests go to their own host,
whatever --upstream says, in origin-form with Host set to the target's
authority; real clients (curl -x, urllib's ProxyHandler, HTTP_PROXY) work;
Via and Max-Forwards are honoured, loops answered with 508, and
--proxy-auth guards forward-mode requests."""

import base64
import json
import os
import random
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from backend import Backend
from helpers import Proxy, check_synthesized, via_entries, wait_exchanges

HOSTNAME = socket.gethostname()


def our_via(proxy):
    return "1.1 %s:%d (statusproxy)" % (HOSTNAME, proxy.port)


def seen_headers(entry, name):
    return [v for n, v in entry["headers"] if n.lower() == name.lower()]


def clean_env(**extra):
    """The environment without any proxy settings, plus EXTRA."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(extra)
    return env


def nothing_reached(backend, wait=0.2):
    time.sleep(wait)  # anything forwarded would have arrived by now
    snap = backend.snapshot()
    return (snap["connections"], snap["bytes_received"]) == (0, 0)


@pytest.fixture
def fwd(proxy_factory):
    """A pure forward proxy (no --upstream)."""
    return proxy_factory()


# -- real clients -----------------------------------------------------------------


def test_curl_x(fwd, backend):
    """curl -x: the backend sees an origin-form target with the query, Host
    set to the target's authority, our Via, and not curl's
    Proxy-Connection; curl gets the backend's answer with our Via."""
    url = "http://%s/echo?a=1&b=two" % backend.authority
    out = subprocess.run(["curl", "-sS", "-D", "-", "-x", "http://127.0.0.1:%d" % fwd.port, url],
                         capture_output=True, timeout=20, env=clean_env())
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    vias = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"via:")]
    assert via_entries(vias) == [our_via(fwd)], head
    assert json.loads(body)["target"] == "/echo?a=1&b=two"
    log = backend.log[0]
    assert log["target"] == "/echo?a=1&b=two"
    assert seen_headers(log, "Host") == [backend.authority]
    assert via_entries(seen_headers(log, "Via")) == [our_via(fwd)]
    assert seen_headers(log, "Proxy-Connection") == []


def test_python_urllib_proxy_handler(fwd, backend, monkeypatch):
    """urllib with ProxyHandler: answers of every class come back as the
    backend gave them (urllib raises HTTPError for 4xx/5xx)."""
    for k in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % fwd.port}))
    with opener.open("http://%s/status/201?body=via-urllib" % backend.authority,
                     timeout=10) as r:
        assert (r.status, r.read()) == (201, b"via-urllib")
        assert our_via(fwd) in via_entries(r.headers.get_all("Via"))
    with pytest.raises(urllib.error.HTTPError) as ei:
        opener.open("http://%s/status/404?body=missing" % backend.authority, timeout=10)
    assert (ei.value.code, ei.value.read()) == (404, b"missing")
    ei.value.close()
    data = b"x" * 3000
    with opener.open(urllib.request.Request("http://%s/sink" % backend.authority, data=data),
                     timeout=10) as r:
        assert json.loads(r.read())["body_len"] == 3000
    targets = [e["target"] for e in backend.log]
    assert targets == ["/status/201?body=via-urllib", "/status/404?body=missing", "/sink"]
    assert all(seen_headers(e, "Host") == [backend.authority] for e in backend.log)


def test_curl_with_http_proxy_environment(fwd, backend):
    """curl honours the proxy environment (it reads lowercase http_proxy
    for http URLs; both spellings are set, as users do)."""
    url = "http://127.0.0.1:%d" % fwd.port
    out = subprocess.run(["curl", "-sS", "-D", "-",
                          "http://%s/status/202?body=from-env" % backend.authority],
                         capture_output=True, timeout=20,
                         env=clean_env(http_proxy=url, HTTP_PROXY=url))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert out.stdout.endswith(b"\r\n\r\nfrom-env")
    log = backend.log[0]
    assert log["target"] == "/status/202?body=from-env"
    assert via_entries(seen_headers(log, "Via")) == [our_via(fwd)], "not sent through the proxy"


# -- targets and Host ---------------------------------------------------------------


def test_absolute_form_is_sent_origin_form_with_host_of_the_target(fwd, backend):
    """RFC 9112 §3.2.2: a proxy replaces the received Host with the target's
    authority; the query and its escapes pass byte for byte."""
    target = "/echo?a=1&b=%20x&c=/d/../e&d=%2F"
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s%s" % (backend.authority, target), host="wrong.example")
        assert r.status == 200
    log = backend.log[0]
    assert log["target"] == target
    assert seen_headers(log, "Host") == [backend.authority]


@pytest.mark.parametrize("suffix,expected", [("", "/"), ("?x=1", "/?x=1")],
                         ids=["no-path", "query-only"])
def test_absolute_form_without_path_becomes_slash(fwd, backend, suffix, expected):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s%s" % (backend.authority, suffix))
        assert r.status == 404  # the backend's own answer for "/"
    assert backend.log[0]["target"] == expected


def test_http10_absolute_form_without_host_header(fwd, backend):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s/echo" % backend.authority, host=None,
                       version="HTTP/1.0")
        assert r.status == 200
    assert seen_headers(backend.log[0], "Host") == [backend.authority]


def _port80_backend():
    """A backend on port 80 of a random 127/8 address (so that parallel
    runs do not collide), or None when port 80 cannot be bound."""
    for _ in range(5):
        host = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(1, 254),
                                 random.randint(2, 254))
        try:
            return Backend(host=host, port=80).start()
        except PermissionError:
            return None
        except OSError:
            continue
    return None


def test_default_port_80_is_omitted_from_host(fwd):
    b = _port80_backend()
    if b is None:
        pytest.skip("cannot bind port 80 here")
    try:
        with fwd.conn() as c:
            for target in ("http://%s/echo?p=none" % b.host, "http://%s:80/echo?p=80" % b.host):
                r = c.exchange("GET", target)
                assert r.status == 200, target
        assert [e["target"] for e in b.log] == ["/echo?p=none", "/echo?p=80"]
        assert [seen_headers(e, "Host") for e in b.log] == [[b.host], [b.host]]
    finally:
        b.stop()


def _ipv6_backend():
    try:
        return Backend(host="::1").start()
    except OSError:
        return None


def test_ipv6_literal_target(fwd):
    b = _ipv6_backend()
    if b is None:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        with fwd.conn() as c:
            r = c.exchange("GET", "http://[::1]:%d/echo?v=6" % b.port)
            assert r.status == 200
            r = c.exchange("GET", "http://[::1]:%d/status/418?body=six" % b.port)
            assert (r.status, r.body) == (418, b"six")
        assert b.log[0]["target"] == "/echo?v=6"
        assert seen_headers(b.log[0], "Host") == ["[::1]:%d" % b.port]
    finally:
        b.stop()


def test_host_name_is_resolved(fwd, backend):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://localhost:%d/status/200?body=named" % backend.port)
        assert (r.status, r.body) == (200, b"named")
    assert seen_headers(backend.log[0], "Host") == ["localhost:%d" % backend.port]


def test_unresolvable_name_is_502(fwd, backend):
    """`.invalid` never resolves (RFC 6761); the proxy answers 502 itself,
    records it, and keeps serving."""
    with fwd.conn(timeout=30) as c:
        r = c.exchange("GET", "http://no-such-host.invalid/x?y=1", timeout=30)
        assert check_synthesized(r, 502, "Bad Gateway") == []
    with fwd.conn() as c:
        assert c.exchange("GET", "http://%s/status/200" % backend.authority).status == 200
    rows = wait_exchanges(fwd.db, lambda rs: len(rs) >= 2)
    bad = [r for r in rows if r["host"] == "no-such-host.invalid"]
    assert len(bad) == 1, rows
    assert (bad[0]["path"], bad[0]["upstream_code"], bad[0]["final_code"]) == ("/x", None, 502)
    assert bad[0]["error"], bad[0]


def test_both_modes_at_once(proxy_factory, backend):
    """With --upstream, origin-form goes to the upstream (Host unchanged) and
    absolute-form to its own host, interleaved on one client connection."""
    other = Backend().start()
    try:
        p = proxy_factory(upstream=backend.url)
        with p.conn() as c:
            assert c.exchange("GET", "/status/200?body=up1").body == b"up1"
            r = c.exchange("GET", "http://%s/status/200?body=other" % other.authority)
            assert r.body == b"other"
            assert c.exchange("GET", "/status/200?body=up2").body == b"up2"
            r = c.exchange("GET", "http://%s/status/203?body=other2" % other.authority)
            assert (r.status, r.body) == (203, b"other2")
        assert [e["target"] for e in backend.log] == ["/status/200?body=up1",
                                                      "/status/200?body=up2"]
        assert all(seen_headers(e, "Host") == ["e2e.test"] for e in backend.log)
        assert [e["target"] for e in other.log] == ["/status/200?body=other",
                                                    "/status/203?body=other2"]
        assert all(seen_headers(e, "Host") == [other.authority] for e in other.log)
    finally:
        other.stop()


def test_forward_upstream_connections_are_pooled_per_target(fwd, backend):
    """Upstream connections are reused (DESIGN §2) in forward mode too, and
    a pooled connection to one target never carries a request for another."""
    other = Backend().start()
    try:
        for i in range(10):
            with fwd.conn() as c:
                for b in (backend, other):
                    r = c.exchange("GET", "http://%s/status/200?body=%d" % (b.authority, i))
                    assert (r.status, r.body) == (200, b"%d" % i)
        assert backend.connections <= 2 and other.connections <= 2, \
            (backend.connections, other.connections)
        assert backend.requests == other.requests == 10
        for b in (backend, other):
            assert all(seen_headers(e, "Host") == [b.authority] for e in b.log)
    finally:
        other.stop()


def test_forward_exchange_is_recorded_with_host_and_path(fwd, backend):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s/status/404?body=gone" % backend.authority)
        assert r.status == 404
    rows = wait_exchanges(fwd.db, lambda rs: len(rs) >= 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["method"], row["host"], row["path"]) == ("GET", "127.0.0.1", "/status/404")
    assert (row["upstream_code"], row["final_code"], row["error"]) == (404, 404, None)


# -- Via, Max-Forwards, loops ------------------------------------------------------


def test_via_on_both_sides_in_forward_mode(fwd, backend):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s/status/200?hdr=Via:1.1%%20origin" % backend.authority,
                       headers=[("Via", "1.0 client-side")])
    assert via_entries(r.get_all("Via")) == ["1.1 origin", our_via(fwd)]
    assert via_entries(seen_headers(backend.log[0], "Via")) == ["1.0 client-side", our_via(fwd)]


MODES = ["gateway", "forward"]


def _target(mode, backend, path):
    return path if mode == "gateway" else "http://%s%s" % (backend.authority, path)


@pytest.fixture
def any_mode_proxy(request, proxy_factory, backend):
    mode = request.param
    p = proxy_factory(upstream=backend.url if mode == "gateway" else None)
    return mode, p


@pytest.mark.parametrize("any_mode_proxy", MODES, indirect=True)
def test_options_max_forwards_0_is_answered_by_the_proxy(any_mode_proxy, backend):
    mode, p = any_mode_proxy
    with p.conn() as c:
        r = c.exchange("OPTIONS", _target(mode, backend, "/echo"),
                       headers=[("Max-Forwards", "0")])
        assert r.status == 200
        allow = r.tokens("Allow")
        assert "options" in allow and "get" in allow, r.headers
        # still usable
        assert c.exchange("GET", _target(mode, backend, "/status/200?body=k")).body == b"k"
    assert [e["method"] for e in backend.log] == ["GET"], "the OPTIONS reached the backend"
    # The shape of every answer the proxy writes itself.
    assert check_synthesized(r, 200, "OK") == []


@pytest.mark.parametrize("any_mode_proxy", MODES, indirect=True)
def test_trace_max_forwards_0_is_405_from_the_proxy(any_mode_proxy, backend):
    mode, p = any_mode_proxy
    with p.conn() as c:
        r = c.exchange("TRACE", _target(mode, backend, "/echo"),
                       headers=[("Max-Forwards", "0")])
    assert check_synthesized(r, 405, "Method Not Allowed") == []
    assert r.has("Allow"), "RFC 9110 §15.5.6: a 405 carries Allow"
    assert nothing_reached(backend)


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
@pytest.mark.parametrize("any_mode_proxy", MODES, indirect=True)
def test_max_forwards_is_decremented(any_mode_proxy, backend, method):
    mode, p = any_mode_proxy
    with p.conn() as c:
        r = c.exchange(method, _target(mode, backend, "/echo"), headers=[("Max-Forwards", "5")])
        assert r.status == 200
        r = c.exchange(method, _target(mode, backend, "/echo"), headers=[("Max-Forwards", "1")])
        assert r.status == 200
    assert [seen_headers(e, "Max-Forwards") for e in backend.log] == [["4"], ["0"]]


def test_max_forwards_0_on_get_is_forwarded(fwd, backend):
    """Max-Forwards only binds OPTIONS and TRACE (RFC 9110 §7.6.2)."""
    with fwd.conn() as c:
        r = c.exchange("GET", "http://%s/status/200?body=ok" % backend.authority,
                       headers=[("Max-Forwards", "0")])
        assert (r.status, r.body) == (200, b"ok")
    assert backend.requests == 1


def _own_received_by(p, backend, mode):
    """This proxy's received-by (HOST:PORT) as the backend sees it in Via."""
    with p.conn() as c:
        assert c.exchange("GET", _target(mode, backend, "/echo")).status == 200
    ours = [e for e in via_entries(seen_headers(backend.log[-1], "Via"))
            if e.endswith("(statusproxy)")]
    assert len(ours) == 1, backend.log[-1]["headers"]
    return ours[0].split()[1]


@pytest.mark.parametrize("any_mode_proxy", MODES, indirect=True)
def test_own_via_means_a_loop_508(any_mode_proxy, backend):
    mode, p = any_mode_proxy
    rb = _own_received_by(p, backend, mode)
    assert rb == "%s:%d" % (HOSTNAME, p.port)
    vias = ["1.1 %s (statusproxy)" % rb,
            "1.0 upstream-cache, 1.1 %s (statusproxy), 1.1 other" % rb,
            "1.1 %s" % rb,
            "HTTP/1.1 %s (something else)" % rb]
    for via in vias:
        with p.conn() as c:
            r = c.exchange("GET", _target(mode, backend, "/echo"), headers=[("Via", via)])
            assert check_synthesized(r, 508, "Loop Detected") == [], via
    time.sleep(0.2)
    assert backend.requests == 1, "a looping request was forwarded"


@pytest.mark.parametrize("any_mode_proxy", MODES, indirect=True)
def test_similar_via_is_not_a_loop(any_mode_proxy, backend):
    """Another proxy on this host (other port), or another host with our
    port, is not us."""
    mode, p = any_mode_proxy
    others = ["1.1 %s:%d (statusproxy)" % (HOSTNAME, p.port + 1 if p.port < 65535 else 1),
              "1.1 not-%s:%d (statusproxy)" % (HOSTNAME, p.port),
              # our token followed by one more digit: a prefix is not a match
              "1.1 %s:%d0 (statusproxy)" % (HOSTNAME, p.port)]
    with p.conn() as c:
        for via in others:
            r = c.exchange("GET", _target(mode, backend, "/status/200?body=fine"),
                           headers=[("Via", via)])
            assert (r.status, r.body) == (200, b"fine"), via
    assert backend.requests == 3


def test_absolute_form_to_own_listen_address_is_508(fwd, backend):
    for target in ("http://127.0.0.1:%d/echo" % fwd.port,
                   "http://localhost:%d/echo" % fwd.port):
        with fwd.conn() as c:
            r = c.exchange("GET", target)
            assert check_synthesized(r, 508, "Loop Detected") == [], target
    # and the proxy still serves
    with fwd.conn() as c:
        assert c.exchange("GET", "http://%s/status/200" % backend.authority).status == 200
    rows = wait_exchanges(fwd.db, lambda rs: len(rs) >= 3)
    assert sorted(r["final_code"] for r in rows) == [200, 508, 508], rows


def test_absolute_form_to_own_admin_address_is_508(fwd):
    with fwd.conn() as c:
        r = c.exchange("GET", "http://127.0.0.1:%d/healthz" % fwd.admin_port)
    assert check_synthesized(r, 508, "Loop Detected") == []


def test_gateway_with_upstream_pointing_at_itself_is_508(statusproxy_bin, tmp_path):
    """--upstream naming the proxy's own listen address: the client gets a
    508 rather than an endless chain of connections to itself."""
    p = Proxy(statusproxy_bin, str(tmp_path), name="selfloop")
    p.argv += ["--upstream", "http://127.0.0.1:%d" % p.port]
    p.start()
    try:
        with p.conn() as c:
            r = c.exchange("GET", "/echo")
        assert check_synthesized(r, 508, "Loop Detected") == []
        with p.conn() as c:  # and it still answers
            r = c.exchange("GET", "/again")
        assert r.status == 508
    finally:
        problems = p.stop()
    assert problems == [], p.stderr()


# -- --proxy-auth ------------------------------------------------------------------


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


@pytest.fixture
def authed(proxy_factory, backend):
    return proxy_factory(upstream=backend.url, args=["--proxy-auth", "alice:s3cr:et"])


WRONG_CREDENTIALS = {
    "none": None,
    "wrong-password": basic("alice", "s3cr"),
    "wrong-user": basic("bob", "s3cr:et"),
    "not-base64": "Basic !!!not-base64!!!",
    "other-scheme": "Bearer " + base64.b64encode(b"alice:s3cr:et").decode(),
    "empty": "Basic ",
}


@pytest.mark.parametrize("cred", list(WRONG_CREDENTIALS))
def test_proxy_auth_407_without_right_credentials(authed, backend, cred):
    value = WRONG_CREDENTIALS[cred]
    headers = [("Proxy-Authorization", value)] if value is not None else []
    with authed.conn() as c:
        r = c.exchange("GET", "http://%s/echo" % backend.authority, headers=headers)
    assert check_synthesized(r, 407, "Proxy Authentication Required") == []
    pa = r.get("Proxy-Authenticate")
    assert pa and pa.split()[0].lower() == "basic", r.headers
    assert nothing_reached(backend)


def test_proxy_auth_right_credentials_pass_and_are_not_forwarded(authed, backend):
    with authed.conn() as c:
        r = c.exchange("GET", "http://%s/echo?n=1" % backend.authority,
                       headers=[("Proxy-Authorization", basic("alice", "s3cr:et"))])
        assert r.status == 200
        # the scheme name is case-insensitive (RFC 9110 §11.1)
        r = c.exchange("GET", "http://%s/echo?n=2" % backend.authority,
                       headers=[("Proxy-Authorization",
                                 "basic " + basic("alice", "s3cr:et").split()[1])])
        assert r.status == 200
        # credentials are per request, not per connection
        r = c.exchange("GET", "http://%s/echo?n=3" % backend.authority)
        assert check_synthesized(r, 407, "Proxy Authentication Required") == []
    assert [e["target"] for e in backend.log] == ["/echo?n=1", "/echo?n=2"]
    for e in backend.log:
        assert seen_headers(e, "Proxy-Authorization") == [], e["headers"]


def test_proxy_auth_with_curl(authed, backend):
    url = "http://%s/status/200?body=authed" % backend.authority
    base = ["curl", "-sS", "-o", "-", "-w", "\\n%{http_code}", "-x",
            "http://127.0.0.1:%d" % authed.port]
    out = subprocess.run(base + [url], capture_output=True, timeout=20, env=clean_env())
    assert out.stdout.endswith(b"\n407"), out
    out = subprocess.run(base + ["-U", "alice:s3cr:et", url], capture_output=True, timeout=20,
                         env=clean_env())
    assert out.stdout == b"authed\n200", out


def test_proxy_auth_guards_connect(proxy_factory, backend):
    p = proxy_factory(args=["--proxy-auth", "alice:pw",
                            "--connect-ports", str(backend.port)])
    with p.conn() as c:
        c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n"
               % (backend.authority.encode(), backend.authority.encode()))
        r = c.read_response(method="CONNECT")
        assert check_synthesized(r, 407, "Proxy Authentication Required") == []
        assert r.get("Proxy-Authenticate", "").lower().startswith("basic")
    assert nothing_reached(backend)
    with p.conn() as c:
        c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n"
               % (backend.authority.encode(), backend.authority.encode(),
                  basic("alice", "pw").encode()))
        r = c.read_response(method="CONNECT")
        assert r.status == 200
        r = c.exchange("GET", "/status/200?body=in-tunnel")
        assert r.body == b"in-tunnel"
    assert all(seen_headers(e, "Proxy-Authorization") == [] for e in backend.log)


def test_proxy_auth_does_not_apply_to_gateway_requests(authed, backend):
    """DESIGN: --proxy-auth guards forward-mode and CONNECT requests; the
    origin-form requests of gateway mode pass without it."""
    with authed.conn() as c:
        r = c.exchange("GET", "/status/200?body=gw")
    assert (r.status, r.body) == (200, b"gw")
