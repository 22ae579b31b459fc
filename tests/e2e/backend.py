"""A test backend for statusproxy's end-to-end tests.

Raw sockets, one thread per connection, HTTP/1.1 keep-alive (honours
Connection: close and HTTP/1.0), started in-process on an ephemeral
127.0.0.1 port.  It records what it received so that a test can assert what
the proxy forwarded: connections accepted, requests received, responses
finished, and one log entry per request (method, target, version, header
list in order, raw head bytes, body length and sha256).

Behaviour is chosen by the request path and query (see Backend._route):

  /status/CODE   that status (any three digits, 000 and 999 too);
                 ?reason=TEXT  reason phrase (default: Python's phrase for
                               the code, else "Custom")
                 ?body=TEXT | ?size=N   body (default: none, Content-Length 0)
                 ?chunked=1    chunked framing; ?close=1 close-delimited body
                 ?hdr=Name:Value   extra header, repeatable
                 ?early=100,103    interim responses before the final one
                 ?conn_close=1 Content-Length body, Connection: close, close
                 ?linger_close_ms=D  empty answer, then close silently after D ms
                 No body for 1xx/204/304 and for HEAD (headers as for GET).
                 /status/101 switches to an echo tunnel.
  /echo          200, JSON description of the request received
  /stream        ?size=N&chunked=1&chunk=K&delay_ms=D deterministic bytes
  /sink          reads any request body (streamed), 200 JSON {body_len, sha256};
                 ?start_delay_ms=D waits before reading it (backpressure tests)
  /slow          ?head_delay_ms=D waits before the head
  /hang          never answers (until the peer or the test closes)
  /raw/garbage, /raw/badstatus, /raw/close-mid-body, /raw/truncated-chunked,
  /raw/close-before-head, /raw/two-cl, /raw/bad-cl, /raw/obs-fold
                 malformed answers, then the connection is closed
  /ws            a WebSocket echo server (RFC 6455): a valid handshake gets
                 101 with Sec-WebSocket-Accept, then every data frame comes
                 back unmasked with its opcode, ping gets pong, close is
                 answered with close; an unmasked client frame gets close
                 1002.  A request that is not a valid handshake gets 400.
                 Frames received are logged in .ws_frames (opcode, payload).

Backend(host="::1") listens on IPv6; Backend(port=80) on a fixed port.
Backend(ssl_context=CTX) speaks TLS (a server-side ssl.SSLContext) with the
same modes; .tls_sessions holds one entry per completed handshake (True
when the session was resumed), .tls_sni the SNI names seen, .tls_failures
the handshakes that failed.
.open_connections() counts connections not yet closed by either side.

Only the standard library.
"""

import base64
import hashlib
import http
import struct
import json
import socket
import threading
import time
import urllib.parse

from fields import FieldList

# ---------------------------------------------------------------------------
# Deterministic body bytes: a pseudo-random block whose length is not a power
# of two, repeated.  A lost, duplicated or reordered piece changes the sha256.

_PERIOD = 1048583  # a prime just above 1 MiB


def _make_block():
    out = bytearray()
    i = 0
    while len(out) < _PERIOD:
        out += hashlib.sha256(b"statusproxy-e2e-%d" % i).digest()
        i += 1
    del out[_PERIOD:]
    return bytes(out)


_BLOCK = _make_block()
_BLOCK2 = memoryview(_BLOCK + _BLOCK)


def det_chunks(n, chunk=262144, offset=0):
    """Yield memoryviews covering det bytes [offset, offset+n) in pieces of
    at most CHUNK bytes (CHUNK must not exceed the period)."""
    chunk = max(1, min(chunk, _PERIOD))
    pos = offset
    end = offset + n
    while pos < end:
        k = min(chunk, end - pos)
        o = pos % _PERIOD
        yield _BLOCK2[o:o + k]
        pos += k


def det_bytes(n, offset=0):
    """The first N deterministic bytes (for small N)."""
    return b"".join(bytes(c) for c in det_chunks(n, offset=offset))


_sha_cache = {}


def det_sha256(n):
    """sha256 hex digest of det_bytes(n), computed without building it."""
    if n not in _sha_cache:
        h = hashlib.sha256()
        for c in det_chunks(n, chunk=_PERIOD):
            h.update(c)
        _sha_cache[n] = h.hexdigest()
    return _sha_cache[n]


def phrase(code):
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Custom"


NO_BODY_STATUSES = {204, 304}


class BadRequest(Exception):
    pass


class PeerClosed(Exception):
    pass


# ---------------------------------------------------------------------------


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock, stats):
        self.sock = sock
        self.buf = bytearray()
        self.stats = stats

    def fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise PeerClosed()
        self.stats(len(data))
        self.buf += data

    def read_head(self, limit=1 << 20):
        """Bytes up to and including the blank line (CRLFCRLF, or LFLF as
        a malformed request might have it)."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            j = self.buf.find(b"\n\n")
            cands = [x + 4 for x in [i] if x >= 0] + [x + 2 for x in [j] if x >= 0]
            if cands:
                end = min(cands)
                head = bytes(self.buf[:end])
                del self.buf[:end]
                return head
            if len(self.buf) > limit:
                raise BadRequest("head too large")
            self.fill()

    def read_line(self, limit=65536):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self.fill()

    def read_into(self, n, sink):
        """Pass exactly N bytes to SINK(memoryview), without holding them."""
        while n > 0:
            if not self.buf:
                self.fill()
            k = min(n, len(self.buf))
            sink(memoryview(self.buf)[:k])
            del self.buf[:k]
            n -= k


class Request(FieldList):
    def __init__(self):
        self.method = self.target = self.version = None
        self.headers = []
        self.raw_head = b""
        self.body_len = 0
        self.body_sha256 = None
        self.body_framing = None  # None, "length", "chunked"
        self.trailers = []
        self.path = ""
        self.query = {}
        self.bad = None




    def q(self, key, default=None):
        v = self.query.get(key)
        return v[-1] if v else default

    def as_log(self, conn_id):
        return {
            "conn": conn_id,
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "headers": list(self.headers),
            "raw_head": self.raw_head,
            "body_len": self.body_len,
            "body_sha256": self.body_sha256,
            "body_framing": self.body_framing,
            "trailers": list(self.trailers),
            "bad": self.bad,
            "time": time.monotonic(),
        }


def _parse_head(raw):
    req = Request()
    req.raw_head = raw
    text = raw.decode("latin-1")
    lines = text.split("\n")
    lines = [l[:-1] if l.endswith("\r") else l for l in lines]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise BadRequest("empty head")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("bad request line %r" % lines[0])
    req.method, req.target, req.version = parts
    for line in lines[1:]:
        if ":" not in line:
            raise BadRequest("bad header line %r" % line)
        name, value = line.split(":", 1)
        req.headers.append((name, value.strip(" \t")))
    parsed = urllib.parse.urlsplit(req.target)
    req.path = parsed.path
    req.query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    return req


class Backend:
    """Start with start(); the port is in .port, the base URL in .url."""

    def __init__(self, host="127.0.0.1", port=0, ssl_context=None):
        self.host = host
        self.ssl_context = ssl_context
        self.tls_sessions = []    # per TLS handshake: was the session resumed
        self.tls_sni = []         # SNI names received
        self.tls_failures = []    # failed handshakes (repr of the error)
        if ssl_context is not None:
            ssl_context.sni_callback = self._on_sni
        self.port = None
        self._want_port = port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = {}
        self._threads = []
        self._listener = None
        self.connections = 0      # connections accepted
        self.requests = 0         # request heads parsed (each logged)
        self.responses = 0        # responses finished
        self.bytes_received = 0   # every byte read from any connection
        self.log = []             # one dict per request, in arrival order
        self.errors = []          # exceptions in handlers (for debugging)
        self.ws_frames = []       # (opcode, payload) of WebSocket frames received

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self._want_port))
        except OSError:
            s.close()
            raise
        s.listen(128)
        self._listener = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="backend-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        try:
            # shutdown() wakes a thread blocked in accept(); close() alone does not.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "%s://%s" % ("https" if self.ssl_context else "http", self.authority)

    def _on_sni(self, sslobj, name, ctx):
        with self._lock:
            self.tls_sni.append(name)

    @property
    def authority(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    def open_connections(self):
        """Accepted connections that neither side has closed yet (usable
        inside a wait_for predicate: it takes no lock)."""
        return len(self._conns)

    # -- counters ----------------------------------------------------------

    def snapshot(self):
        with self._lock:
            return {
                "connections": self.connections,
                "requests": self.requests,
                "responses": self.responses,
                "bytes_received": self.bytes_received,
                "log": list(self.log),
            }

    def last(self):
        with self._lock:
            return self.log[-1] if self.log else None

    def wait_for(self, pred, timeout=5.0):
        """Wait until PRED(self) holds; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                v = pred(self)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.01)

    def _count_bytes(self, n):
        with self._lock:
            self.bytes_received += n

    # -- connections -------------------------------------------------------

    def _accept_loop(self):
        n = 0
        while not self._stop.is_set():
            try:
                c, _ = self._listener.accept()
            except OSError:
                return
            n += 1
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.settimeout(120)
            with self._lock:
                self.connections += 1
                self._conns[n] = c
            t = threading.Thread(target=self._serve, args=(n, c), name="backend-%d" % n,
                                 daemon=True)
            t.start()
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _handshake(self, cid, sock):
        """Wrap SOCK in TLS (server side); None when the handshake failed."""
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as e:
            with self._lock:
                self.tls_failures.append(repr(e))
                self._conns.pop(cid, None)
            sock.close()
            return None
        with self._lock:
            self.tls_sessions.append(tls.session_reused)
            self._conns[cid] = tls  # stop() shuts this one down
        return tls

    def _serve(self, cid, sock):
        if self.ssl_context is not None:
            sock = self._handshake(cid, sock)
            if sock is None:
                return
        rd = _Reader(sock, self._count_bytes)
        try:
            while not self._stop.is_set():
                try:
                    raw = rd.read_head()
                except PeerClosed:
                    return
                try:
                    req = _parse_head(raw)
                except BadRequest as e:
                    req = Request()
                    req.raw_head = raw
                    req.bad = str(e)
                    with self._lock:
                        self.requests += 1
                        self.log.append(req.as_log(cid))
                    self._send(sock, b"HTTP/1.1 400 Bad Request\r\nX-Backend: bad-request\r\n"
                                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                keep = self._handle(cid, sock, rd, req)
                with self._lock:
                    self.responses += 1
                if not keep:
                    return
        except (OSError, PeerClosed, BadRequest) as e:
            with self._lock:
                self.errors.append(repr(e))
        finally:
            with self._lock:
                self._conns.pop(cid, None)
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _send(sock, data):
        sock.sendall(data)

    # -- request bodies ----------------------------------------------------

    def _read_body(self, sock, rd, req):
        """Read the request body by its framing, hashing as it goes."""
        h = hashlib.sha256()
        total = [0]

        def sink(mv):
            h.update(mv)
            total[0] += len(mv)

        te = req.tokens("transfer-encoding")
        cl = req.get_all("content-length")
        if "100-continue" in req.tokens("expect") and (te or (cl and cl[0] != "0")):
            self._send(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if te:
            req.body_framing = "chunked"
            if te[-1] != "chunked":
                raise BadRequest("transfer-coding not ending in chunked")
            while True:
                line = rd.read_line()
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % line)
                if size == 0:
                    break
                rd.read_into(size, sink)
                if rd.read_line() not in (b"\r\n", b"\n"):
                    raise BadRequest("chunk not followed by CRLF")
            while True:
                line = rd.read_line()
                if line in (b"\r\n", b"\n"):
                    break
                n, _, v = line.decode("latin-1").rstrip("\r\n").partition(":")
                req.trailers.append((n, v.strip()))
        elif cl:
            req.body_framing = "length"
            rd.read_into(int(cl[0]), sink)
        req.body_len = total[0]
        req.body_sha256 = h.hexdigest()

    # -- responses ---------------------------------------------------------

    def _wants_close(self, req):
        conn = req.tokens("connection")
        if "close" in conn:
            return True
        if req.version == "HTTP/1.0" and "keep-alive" not in conn:
            return True
        return False

    def _respond(self, sock, req, status, reason=None, headers=(), body=None,
                 chunked=False, close_delimited=False, chunk=16384, delay=0.0,
                 early=(), size=None, conn_close=False):
        """Write a whole response.  BODY is bytes, or None with SIZE for
        deterministic bytes.  Returns whether the connection stays open."""
        if reason is None:
            reason = phrase(status)
        is_head = req.method == "HEAD"
        for e in early:
            self._send(sock, ("HTTP/1.1 %03d %s\r\n" % (e, phrase(e))).encode("latin-1")
                       + (b"Link: </e2e.css>; rel=preload\r\n" if e == 103 else b"")
                       + b"\r\n")
        if body is not None:
            size = len(body)
        size = size or 0
        no_body = (100 <= status < 200) or status in NO_BODY_STATUSES
        http10 = req.version == "HTTP/1.0"
        if chunked and http10:
            chunked, close_delimited = False, True
        close = self._wants_close(req) or close_delimited or conn_close
        lines = ["HTTP/1.1 %03d %s" % (status, reason) if reason != "" else
                 "HTTP/1.1 %03d " % status]
        lines += ["%s: %s" % (n, v) for n, v in headers]
        if not no_body:
            if chunked:
                lines.append("Transfer-Encoding: chunked")
            elif not close_delimited:
                lines.append("Content-Length: %d" % size)
        if close:
            lines.append("Connection: close")
        elif http10:
            lines.append("Connection: keep-alive")
        self._send(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if no_body or is_head:
            return not close
        pieces = ([memoryview(body)[i:i + chunk] for i in range(0, len(body), chunk)]
                  if body is not None else det_chunks(size, chunk))
        for p in pieces:
            if delay:
                if self._stop.wait(delay):
                    return False
            if chunked:
                sock.sendall(b"%x\r\n" % len(p))
                sock.sendall(p)
                sock.sendall(b"\r\n")
            else:
                sock.sendall(p)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return not close

    def _json(self, sock, req, obj, status=200):
        body = json.dumps(obj).encode()
        return self._respond(sock, req, status, headers=[("Content-Type", "application/json")],
                             body=body)

    def _handle(self, cid, sock, rd, req):
        path = req.path
        # Routes that decide how the body is read come first.
        if path == "/hang":
            with self._lock:
                self.requests += 1
                self.log.append(req.as_log(cid))
            # Wait until the peer closes or the backend stops; never answer.
            sock.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    if not sock.recv(65536):
                        return False
                except socket.timeout:
                    continue
                except OSError:
                    return False
            return False
        delay = req.q("start_delay_ms") if req.path == "/sink" else None
        if delay and self._stop.wait(int(delay) / 1000.0):
            return False
        try:
            self._read_body(sock, rd, req)
        except BadRequest as e:
            req.bad = str(e)
            with self._lock:
                self.requests += 1
                self.log.append(req.as_log(cid))
            self._send(sock, b"HTTP/1.1 400 Bad Request\r\nX-Backend: bad-body\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        with self._lock:
            self.requests += 1
            self.log.append(req.as_log(cid))
        return self._route(sock, req, rd)

    def _route(self, sock, req, rd):
        path = req.path
        if path.startswith("/status/"):
            code_text = path[len("/status/"):]
            if len(code_text) != 3 or not code_text.isdigit():
                return self._respond(sock, req, 404, body=b"bad code\n")
            code = int(code_text)
            reason = req.q("reason")
            if reason is None:
                reason = phrase(code)
            headers = []
            for h in req.query.get("hdr", []):
                n, _, v = h.partition(":")
                headers.append((n, v))
            early = [int(x) for x in req.q("early", "").split(",") if x]
            linger = req.q("linger_close_ms")
            if linger is not None:
                # After this answer, close the idle connection silently (no
                # Connection: close), as a server with a short idle timeout does.
                self._respond(sock, req, code, reason, headers, body=b"")
                self._stop.wait(int(linger) / 1000.0)
                return False
            if code == 101:
                return self._switch(sock, req, rd, reason, headers, early)
            body = req.q("body")
            size = req.q("size")
            return self._respond(
                sock, req, code, reason, headers,
                body=body.encode("latin-1") if body is not None else None,
                size=int(size) if size else 0,
                chunked=req.q("chunked") == "1", close_delimited=req.q("close") == "1",
                early=early, conn_close=req.q("conn_close") == "1")
        if path == "/echo":
            return self._json(sock, req, {
                "method": req.method, "target": req.target, "version": req.version,
                "headers": [[n, v] for n, v in req.headers],
                "body_len": req.body_len, "body_sha256": req.body_sha256,
                "trailers": [[n, v] for n, v in req.trailers],
            })
        if path == "/sink":
            return self._json(sock, req, {"body_len": req.body_len, "sha256": req.body_sha256})
        if path == "/stream":
            return self._respond(
                sock, req, 200, headers=[("Content-Type", "application/octet-stream")],
                size=int(req.q("size", "0")), chunked=req.q("chunked") == "1",
                close_delimited=req.q("close") == "1",
                chunk=int(req.q("chunk", "262144")), delay=int(req.q("delay_ms", "0")) / 1000.0)
        if path == "/slow":
            if self._stop.wait(int(req.q("head_delay_ms", "1000")) / 1000.0):
                return False
            return self._respond(sock, req, 200, body=b"slow\n")
        if path == "/ws":
            return self._websocket(sock, req, rd)
        if path.startswith("/raw/"):
            kind = path[len("/raw/"):]
            raw = {
                "garbage": b"this is not HTTP at all\r\n\r\n",
                "badstatus": b"HTTP/1.1 2x0 Hi\r\nContent-Length: 0\r\n\r\n",
                "close-mid-body": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                                  + det_bytes(10),
                "truncated-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"a\r\n0123456789\r\n",
                "close-before-head": b"",
                "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
                "obs-fold": b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
            }.get(kind)
            if raw is None:
                return self._respond(sock, req, 404, body=b"no such raw mode\n")
            self._send(sock, raw)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return False
        return self._respond(sock, req, 404, body=b"no such path\n")

    def _switch(self, sock, req, rd, reason, headers, early):
        """Answer 101 and echo bytes back until the peer closes."""
        for e in early:
            self._send(sock, ("HTTP/1.1 %03d %s\r\n\r\n" % (e, phrase(e))).encode())
        head = "HTTP/1.1 101 %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n" % reason
        head += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
        self._send(sock, head.encode("latin-1"))
        if rd.buf:  # bytes the client sent right behind its request
            sock.sendall(bytes(rd.buf))
            del rd.buf[:]
        sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            self._count_bytes(len(data))
            sock.sendall(data)
        return False

    # -- WebSocket (RFC 6455) ------------------------------------------------

    WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    @classmethod
    def ws_accept(cls, key):
        """Sec-WebSocket-Accept for the client's Sec-WebSocket-Key."""
        return base64.b64encode(hashlib.sha1(key.encode("latin-1") + cls.WS_GUID)
                                .digest()).decode()

    def _websocket(self, sock, req, rd):
        key = req.get("Sec-WebSocket-Key")
        if (req.method != "GET" or "websocket" not in req.tokens("upgrade")
                or "upgrade" not in req.tokens("connection") or not key
                or req.get("Sec-WebSocket-Version") != "13"):
            return self._respond(sock, req, 400, body=b"not a websocket handshake\n")
        self._send(sock, ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                          % self.ws_accept(key)).encode("latin-1"))

        def need(n):
            while len(rd.buf) < n:
                rd.fill()
            out = bytes(rd.buf[:n])
            del rd.buf[:n]
            return out

        try:
            while not self._stop.is_set():
                b0, b1 = need(2)
                opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", need(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", need(8))[0]
                if not masked:  # RFC 6455 §5.1: a server closes on an unmasked frame
                    sock.sendall(ws_frame(0x8, struct.pack(">H", 1002)))
                    return False
                mask = need(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(need(n)))
                with self._lock:
                    self.ws_frames.append((opcode, data))
                if opcode == 0x8:
                    sock.sendall(ws_frame(0x8, data))
                    return False
                if opcode == 0x9:
                    sock.sendall(ws_frame(0xA, data))
                elif opcode != 0xA:
                    sock.sendall(ws_frame(opcode, data, fin=bool(b0 & 0x80)))
        except PeerClosed:
            return False
        return False


def ws_frame(opcode, payload, mask=None, fin=True):
    """One WebSocket frame; MASK (4 bytes) for client-to-server frames."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + bytes(payload)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def refused_port(host="127.0.0.1"):
    """A port on which nothing listens (bound, then closed; outside the
    ephemeral range so no outgoing connection takes it meanwhile)."""
    from helpers import free_port
    return free_port(host)


if __name__ == "__main__":
    import sys
    b = Backend().start()
    print(b.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        b.stop()
        sys.exit(0)
