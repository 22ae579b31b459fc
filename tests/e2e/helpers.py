"""Wire-level helpers for the end-to-end tests: a raw HTTP/1.1 client that
keeps the exact bytes it received, free ports, and a handle on a running
statusproxy process.  Standard library only."""

import collections
import hashlib
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import time

from fields import FieldList

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
            return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host="127.0.0.1"):
    """A port nothing listens on, for a process to bind.  Taken outside the
    ephemeral range: a port the kernel hands out (bind to 0) can be taken
    back at once as the local port of an outgoing connection — the proxy's
    to its upstream, or a test client's — before the proxy binds it."""
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not lo <= p <= hi] or \
        list(range(1024, lo))
    for _ in range(200):
        port = random.choice(candidates)
        if port in _ports_given:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        _ports_given.append(port)
        return port
    raise RuntimeError("no free port found")


# Ports handed out lately: two calls before anything binds (a proxy's
# --listen and --admin) must not get the same one.
_ports_given = collections.deque(maxlen=256)


class SServer:
    """`openssl s_server -www` serving CERT/KEY on a free port of HOST (for
    an IPv6 HOST too: a port free on 127.0.0.1 is, in practice, free on ::1)."""

    def __init__(self, cert, key, workdir, host="127.0.0.1"):
        self.port = free_port()
        accept = "[%s]:%d" % (host, self.port) if ":" in host else "%s:%d" % (host, self.port)
        self.log = open(os.path.join(workdir, "s_server.%d.log" % self.port), "wb")
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", accept, "-cert", str(cert), "-key", str(key),
             "-www", "-naccept", "1000"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("openssl s_server exited with %s" % self.proc.returncode)
            try:
                socket.create_connection((host, self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("openssl s_server did not listen")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ProtocolError(Exception):
    """What the peer sent is not a well-formed HTTP/1.1 response."""


class ConnectionClosed(ProtocolError):
    """The connection closed before any byte of a response."""


class Response(FieldList):
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.status_line = None
        self.headers = []         # [(name, value)] in order, names as received
        self.body = b""           # decoded body (None when sent to a sink)
        self.body_len = 0
        self.body_sha256 = None
        self.framing = None       # "none", "length", "chunked", "close"
        self.complete = True      # False: the body ended before its framing said
        self.raw = b""            # exact bytes of this response (head + body)
        self.raw_head = b""
        self.interim = []         # 1xx responses before this one
        self.trailers = []





    def __repr__(self):
        return "<Response %s %r %r body=%d%s>" % (
            self.status, self.reason, self.headers, self.body_len,
            "" if self.complete else " INCOMPLETE")


_STATUS_RE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: (.*))?$")


class HttpConn:
    """One client connection.  send()/request() write; read_response()
    parses exactly one response (plus interim 1xx) and keeps its bytes."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.port = port

    # -- writing -------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, version="HTTP/1.1",
                host="e2e.test", chunked=False, chunk=65536, content_length=None):
        """Send a request.  HEADERS: list of (name, value), added after Host
        (host=None leaves Host out).  BODY: bytes, or an iterable of chunks
        (then give content_length, or chunked=True)."""
        lines = ["%s %s %s" % (method, target, version)]
        if host is not None:
            lines.append("Host: %s" % host)
        lines += ["%s: %s" % hv for hv in (headers or [])]
        if body is not None:
            if chunked:
                lines.append("Transfer-Encoding: chunked")
            elif isinstance(body, (bytes, bytearray, memoryview)):
                lines.append("Content-Length: %d" % len(body))
            else:
                assert content_length is not None
                lines.append("Content-Length: %d" % content_length)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body is None:
            self.send(head)
            return
        if isinstance(body, (bytes, bytearray, memoryview)):
            mv = memoryview(body)
            pieces = [mv[i:i + chunk] for i in range(0, len(mv), chunk)]
        else:
            pieces = body
        if chunked:
            self.send(head)
            for p in pieces:
                if len(p):
                    self.sock.sendall(b"%x\r\n" % len(p))
                    self.sock.sendall(p)
                    self.sock.sendall(b"\r\n")
            self.send(b"0\r\n\r\n")
        elif isinstance(body, (bytes, bytearray)) and len(body) < 65536:
            self.send(head + bytes(body))
        else:
            self.send(head)
            for p in pieces:
                self.sock.sendall(p)

    # -- reading -------------------------------------------------------------

    def _fill(self):
        if self.eof:
            return False
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self, raw):
        """One CRLF-terminated line (without CRLF); bare LF is an error."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                raw += line
                if not line.endswith(b"\r\n"):
                    raise ProtocolError("line not ended by CRLF: %r" % line)
                return line[:-2]
            if len(self.buf) > 1 << 20:
                raise ProtocolError("line too long")
            if not self._fill():
                raise _Incomplete("closed mid-line")

    def _read_head(self, resp):
        raw = bytearray()
        try:
            line = self._line(raw)
        except _Incomplete:
            if not raw and not self.buf:
                raise ConnectionClosed("connection closed before a response")
            raise ProtocolError("closed inside status line: %r" % bytes(raw + self.buf))
        resp.status_line = line
        m = _STATUS_RE.match(line)
        if not m:
            raise ProtocolError("bad status line %r" % line)
        resp.version = "HTTP/%s.%s" % (m.group(1).decode(), m.group(2).decode())
        resp.status = int(m.group(3))
        resp.reason = (m.group(4) or b"").decode("latin-1")
        while True:
            try:
                line = self._line(raw)
            except _Incomplete:
                raise ProtocolError("closed inside head: %r" % bytes(raw))
            if line == b"":
                break
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError("obs-fold in response: %r" % line)
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ProtocolError("bad header line %r" % line)
            resp.headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        resp.raw_head = bytes(raw)
        resp.raw = bytes(raw)

    def read_response(self, method="GET", sink=None, keep_body=True, allow_incomplete=False,
                      timeout=None):
        """Read one final response (interim 1xx responses land in .interim).
        SINK(memoryview) receives body bytes when given; otherwise the body
        is kept in .body (unless keep_body=False).  A body cut short raises
        ProtocolError unless allow_incomplete (then .complete is False)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        interim = []
        while True:
            resp = Response()
            self._read_head(resp)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            break
        resp.interim = interim
        h = hashlib.sha256()
        body = bytearray() if (keep_body and sink is None) else None
        raw_body = bytearray() if body is not None else None

        def take(mv):
            h.update(mv)
            resp.body_len += len(mv)
            if sink is not None:
                sink(mv)
            elif body is not None:
                body.extend(mv)

        def consume(n):
            """Pass N body bytes; returns how many arrived before EOF."""
            got = 0
            while got < n:
                if not self.buf and not self._fill():
                    return got
                k = min(n - got, len(self.buf))
                mv = memoryview(self.buf)[:k]
                take(mv)
                if raw_body is not None:
                    raw_body.extend(mv)
                mv.release()
                del self.buf[:k]
                got += k
            return got

        te = resp.tokens("transfer-encoding")
        cl = resp.get_all("content-length")
        if (method == "HEAD" or resp.status in (204, 304) or resp.status == 101
                or (method == "CONNECT" and 200 <= resp.status < 300)):
            resp.framing = "none"
        elif te:
            if te[-1] != "chunked":
                raise ProtocolError("transfer-encoding not ending in chunked: %r" % te)
            if cl:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            resp.framing = "chunked"
            try:
                while True:
                    rawl = bytearray()
                    line = self._line(rawl)
                    if raw_body is not None:
                        raw_body += rawl
                    size_text = line.split(b";", 1)[0]
                    if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
                        raise ProtocolError("bad chunk size line %r" % line)
                    size = int(size_text, 16)
                    if size == 0:
                        break
                    if consume(size) < size:
                        raise _Incomplete("chunk cut")
                    rawl = bytearray()
                    if self._line(rawl) != b"":
                        raise ProtocolError("chunk data not followed by CRLF")
                    if raw_body is not None:
                        raw_body += rawl
                while True:
                    rawl = bytearray()
                    line = self._line(rawl)
                    if raw_body is not None:
                        raw_body += rawl
                    if line == b"":
                        break
                    n, _, v = line.partition(b":")
                    resp.trailers.append((n.decode("latin-1"), v.strip().decode("latin-1")))
            except _Incomplete:
                resp.complete = False
        elif cl:
            if len(set(v.strip() for v in cl)) != 1 or not cl[0].strip().isdigit():
                raise ProtocolError("bad Content-Length %r" % cl)
            resp.framing = "length"
            n = int(cl[0])
            if consume(n) < n:
                resp.complete = False
        else:
            resp.framing = "close"
            while self.buf or self._fill():
                consume(len(self.buf))
        if body is not None:
            resp.body = bytes(body)
            resp.raw = resp.raw_head + bytes(raw_body)
        else:
            resp.body = None
        resp.body_sha256 = h.hexdigest()
        if not resp.complete and not allow_incomplete:
            raise ProtocolError("body cut short (%s framing, %d bytes): %r"
                                % (resp.framing, resp.body_len, resp))
        return resp

    def exchange(self, method, target, **kw):
        """request() then read_response(); keyword arguments for the reader
        are sink, keep_body, allow_incomplete, timeout."""
        rkw = {k: kw.pop(k) for k in ("sink", "keep_body", "allow_incomplete", "timeout")
               if k in kw}
        self.request(method, target, **kw)
        return self.read_response(method=method, **rkw)

    def read_all(self, timeout=5.0):
        """Everything until the peer closes (or TIMEOUT passes)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except socket.timeout:
            pass
        data = bytes(self.buf)
        del self.buf[:]
        return data

    def closed_by_peer(self, timeout=1.0):
        """True when the peer has closed (EOF or reset) within TIMEOUT."""
        if self.eof:
            return True
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if not data:
            self.eof = True
            return True
        self.buf += data
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Incomplete(Exception):
    pass


def raw_exchange(port, data, timeout=5.0):
    """Send DATA on a fresh connection, half-close nothing, and return every
    byte received until the peer closes or TIMEOUT passes."""
    with HttpConn(port, timeout=timeout) as c:
        c.send(data)
        return c.read_all(timeout)


# -- the proxy process ---------------------------------------------------------


def vm_hwm_kib(pid):
    """Peak resident set size (VmHWM) of PID in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM for pid %d" % pid)


def is_sanitized(binary):
    """Whether BINARY was built with AddressSanitizer."""
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


class Proxy:
    """A running `statusproxy run`.  Started by the proxy_factory fixture."""

    def __init__(self, binary, workdir, upstream=None, args=(), env=None, name="proxy"):
        self.binary = binary
        self.port = free_port()
        self.admin_port = free_port()
        self.db = os.path.join(workdir, "%s.db" % name)
        self.stderr_path = os.path.join(workdir, "%s.stderr" % name)
        self.stdout_path = os.path.join(workdir, "%s.stdout" % name)
        self.argv = [binary, "run", "--listen", "127.0.0.1:%d" % self.port,
                     "--admin", "127.0.0.1:%d" % self.admin_port, "--db", self.db]
        if upstream:
            self.argv += ["--upstream", upstream]
        self.argv += list(args)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self.returncode = None
        self.stopped = False

    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait=10.0, tries=3):
        """Start and wait until the listen port accepts.  A port taken by
        someone else between picking and binding means new ports and
        another try."""
        for attempt in range(tries):
            try:
                return self._start(wait)
            except RuntimeError as e:
                if "in use" not in str(e) or attempt == tries - 1:
                    raise
                self.stopped = False
                self.port, self.admin_port = free_port(), free_port()
                self.argv[self.argv.index("--listen") + 1] = "127.0.0.1:%d" % self.port
                self.argv[self.argv.index("--admin") + 1] = "127.0.0.1:%d" % self.admin_port

    def _start(self, wait):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env)
        try:
            return self._wait_listening(wait)
        except RuntimeError:
            self.stopped = True  # dead or killed; reported by the raise
            self._err.close()
            self._out.close()
            raise

    def _wait_listening(self, wait):
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("statusproxy exited with %s before listening: %s\nstderr:\n%s"
                                   % (self.proc.returncode, self.argv, self.stderr()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("statusproxy did not accept on %d within %.0fs: %s\nstderr:\n%s"
                                   % (self.port, wait, self.argv, self.stderr()))
            time.sleep(0.02)

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def vm_hwm_kib(self):
        return vm_hwm_kib(self.proc.pid)

    def conn(self, timeout=10.0):
        return HttpConn(self.port, timeout=timeout)

    def stop(self, timeout=10.0):
        """SIGTERM, wait.  Returns a list of problems (empty when the exit
        was clean: status 0 and no sanitizer report)."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("did not exit within %.0fs of SIGTERM (killed)" % timeout)
        else:
            problems.append("had already exited (status %s) before SIGTERM"
                            % self.proc.returncode)
        self.returncode = self.proc.returncode
        self._err.close()
        self._out.close()
        if self.returncode != 0 and not problems:
            problems.append("exit status %s after SIGTERM, expected 0" % self.returncode)
        err = self.stderr()
        for mark in SANITIZER_MARKS:
            if mark in err:
                problems.append("stderr contains %r" % mark)
        return problems


def check_synthesized(r, code, reason):
    """The shape of an answer the proxy writes itself (DESIGN §3): status
    CODE, Content-Type text/plain, body 'CODE Reason\\n'.  Returns a list of
    differences (empty when it matches)."""
    diffs = []
    if r.status != code:
        diffs.append("status %r, expected %d" % (r.status, code))
    ct = r.get("Content-Type")
    if ct is None or ct.split(";")[0].strip().lower() != "text/plain":
        diffs.append("Content-Type %r, expected text/plain" % ct)
    want = ("%d %s\n" % (code, reason)).encode()
    if r.body != want:
        diffs.append("body %r, expected %r" % (r.body, want))
    return diffs


def via_entries(values):
    """Split Via header values into their comma-separated entries."""
    out = []
    for v in values:
        out += [e.strip() for e in v.split(",") if e.strip()]
    return out


# -- the audit database --------------------------------------------------------


def db_exchanges(db):
    """Every row of the exchanges table as a dict, in id order ([] while the
    file or the table does not exist yet)."""
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM exchanges ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_until(fn, timeout=2.0, interval=0.05):
    """Call FN until it returns something true or TIMEOUT passes; returns
    the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def wait_exchanges(db, pred, timeout=5.0):
    """Poll DB until PRED(rows) holds (records reach the file within about
    1 s); returns the rows of the last poll whether or not it held."""
    last = []

    def poll():
        last[:] = db_exchanges(db)
        return pred(last)
    wait_until(poll, timeout)
    return last


# -- throwaway CAs and leaves for the TLS tests ---------------------------------

_TLS_ENV_DROP = ("ssl_cert_file", "ssl_cert_dir", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "requests_ca_bundle", "curl_ca_bundle")


def tls_clean_env(**extra):
    """The environment without proxies or CA overrides a TLS test did not ask for."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _TLS_ENV_DROP}
    env.update(extra)
    return env


def ca_init(binary, d):
    """`statusproxy ca init --dir D` with BINARY; returns D."""
    r = subprocess.run([str(binary), "ca", "init", "--dir", str(d)], capture_output=True,
                       text=True, timeout=30, env=tls_clean_env())
    assert r.returncode == 0, r.stderr
    return d


def mint_leaf(binary, ca_dir, out_dir, name):
    """A leaf for NAME signed by the CA in CA_DIR (tests/tools/mint_leaf, built
    next to BINARY): (cert path, key path) in OUT_DIR."""
    tool = os.path.join(os.path.dirname(str(binary)), "tests", "mint_leaf")
    cert, key = out_dir / ("leaf-%s.pem" % name), out_dir / ("leaf-%s-key.pem" % name)
    r = subprocess.run([tool, "--dir", str(ca_dir), "--cert", str(cert), "--key", str(key),
                        name], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not [m for m in SANITIZER_MARKS if m in r.stderr], r.stderr
    return cert, key
