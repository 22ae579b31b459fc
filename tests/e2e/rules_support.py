"""Helpers shared by the rule, runtime and admin end-to-end tests
(test_rules_actions.py, test_rules_runtime.py, test_admin.py): rule files,
proxies started with them, one-shot requests, the admin API, Prometheus text
and the audit database.  Standard library only."""

import http.client
import json
import os
import re
import socket
import sqlite3
import time

from helpers import HttpConn, is_sanitized


def write_rules(directory, text, name="test.rules"):
    """Write TEXT as a rule file in DIRECTORY; returns its path."""
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def replace_file(path, text):
    """Replace PATH's content the way many editors do: write a new file,
    rename it over the old one."""
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def rules_proxy(proxy_factory, backend, tmp_path, text, args=(), env=None, name=None):
    """A proxy in gateway mode to BACKEND with TEXT as its rule file.  The
    rule file's path is kept in .rules_path."""
    path = write_rules(tmp_path, text, name or "p%d.rules" % time.monotonic_ns())
    p = proxy_factory(upstream=backend.url, args=["--rules", path] + list(args), env=env)
    p.rules_path = path
    return p


def get(port, target, method="GET", timeout=10.0, **kw):
    """One request on a fresh connection; returns the Response."""
    with HttpConn(port, timeout=timeout) as c:
        return c.exchange(method, target, **kw)


def status_of(port, target, **kw):
    return get(port, target, **kw).status


def timed(port, target, method="GET", **kw):
    """(Response, seconds from sending the request to the end of the answer)."""
    with HttpConn(port) as c:
        t0 = time.monotonic()
        r = c.exchange(method, target, **kw)
        return r, time.monotonic() - t0


class SourceConn(HttpConn):
    """An HttpConn whose local address is SOURCE (e.g. 127.0.0.2)."""

    def __init__(self, port, source, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.port = port




# -- the admin API ---------------------------------------------------------------


class AdminResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # [(name, value)]
        self.body = body

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<AdminResponse %d %r>" % (self.status, self.body[:300])


class Admin:
    """The admin API of a running proxy."""

    def __init__(self, proxy, token=None):
        self.port = proxy.admin_port
        self.token = token

    def request(self, method, path, body=None, token=None, headers=None):
        """One request on a fresh connection.  TOKEN overrides the default
        (pass "" for no Authorization header)."""
        h = dict(headers or {})
        tok = self.token if token is None else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return AdminResponse(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def json(self, path):
        r = self.get(path)
        assert r.status == 200, r
        return r.json()

    def metrics(self):
        r = self.get("/metrics")
        assert r.status == 200, r
        return parse_prometheus(r.body.decode())

    def put_rules(self, text, **kw):
        return self.request("PUT", "/rules", body=text.encode(), **kw)

    def rules(self):
        return {r["name"]: r for r in self.json("/rules")}


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text):
    """Prometheus text format -> {"samples": [(name, {label: value}, float)],
    "types": {name: type}}.  Raises AssertionError on a malformed line."""
    samples, types = [], {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = _SAMPLE.match(line)
        assert m, "malformed metrics line %r" % line
        labels = {}
        rest = m.group(3) or ""
        pos = 0
        while pos < len(rest):
            lm = _LABEL.match(rest, pos)
            assert lm, "malformed labels in %r" % line
            labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n") \
                .replace("\\\\", "\\")
            pos = lm.end()
        samples.append((m.group(1), labels, float(m.group(4))))
    return {"samples": samples, "types": types}


def metric(parsed, name, **labels):
    """Value of the sample NAME whose labels are exactly LABELS (None when
    absent)."""
    for n, l, v in parsed["samples"]:
        if n == name and l == labels:
            return v
    return None


def metric_samples(parsed, name):
    return [(l, v) for n, l, v in parsed["samples"] if n == name]


# -- the audit database ------------------------------------------------------------


def db_rows(path, where="1", params=(), timeout=3.0, want=None):
    """Rows of `exchanges` (as dicts, by id) matching WHERE.  With WANT,
    polls until at least WANT rows are there (or TIMEOUT passes)."""
    def fetch():
        if not os.path.exists(path):
            return []
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT * FROM exchanges WHERE %s ORDER BY id" % where, params)]
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()
    if want is None:
        return fetch()
    deadline = time.monotonic() + timeout
    while True:
        rows = fetch()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


ASAN_ENV = {"ASAN_OPTIONS": ":".join(
    x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=16") if x)}


def slowdown(proxy):
    """A factor for time bounds: the sanitizer build is slower."""
    return 2.0 if is_sanitized(proxy.binary) else 1.0
