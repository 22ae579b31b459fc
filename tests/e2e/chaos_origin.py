"""A misbehaving origin and a tunnel end for the chaos soak (test_chaos.py).

ChaosOrigin answers HTTP on an ephemeral 127.0.0.1 port, one thread per
connection, keep-alive.  The path is /PREFIX/KIND/ID: PREFIX is for the
proxy's rules (the origin ignores it), ID comes back in an X-Id header so a
client can tell which request an answer belongs to.  KIND:

  ok         200 with a Content-Length body
  chunked    200 chunked, in a few chunks
  big        200 with a 300 KB body (slow readers, throttle)
  interim    100 and 103 first, then 200
  status5    503 with a body
  slowhead   the head after 0.2-1 s
  resethead  a head promising 1000 bytes, then a TCP reset
  halfbody   a head promising 1000 bytes, 10 of them, then close
  garbage    bytes that are not HTTP, then close
  badstatus  HTTP/1.1 600 Weird, then close
  up101      101 with bytes right after the head, then an echo
  hang       no answer until the peer closes
  halfclose  a close-delimited body, then a half-close (still reading)

TunnelEnd is what CONNECT reaches: an echo; data starting with RST makes it
reset the connection, data starting with HALF makes it half-close after the
echo, LATEHALF half-close 50 ms later without an echo.  Both count the connections they have open.

Only the standard library.
"""

import random
import socket
import struct
import threading
import time


def reset(sock):
    """Close with a TCP reset (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Server:
    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.port = self.lsock.getsockname()[1]
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.open = 0
        self.accepted = 0
        self.rng = random.Random(1)

    def start(self):
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def stop(self):
        self.stop_ev.set()
        try:
            self.lsock.close()
        except OSError:
            pass

    def _accept_loop(self):
        while not self.stop_ev.is_set():
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock):
        sock.settimeout(30)
        try:
            self.serve(sock)
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self.lock:
                self.open -= 1


def _drain_until_eof(sock, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue


class ChaosOrigin(_Server):
    def serve(self, sock):
        buf = bytearray()
        while not self.stop_ev.is_set():
            req = self._read_request(sock, buf)
            if req is None:
                return
            if not self._answer(sock, req):
                return

    def _read_request(self, sock, buf):
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
            if len(buf) > 1 << 20:
                return None
        i = buf.index(b"\r\n\r\n")
        head = bytes(buf[:i]).decode("latin-1").split("\r\n")
        del buf[:i + 4]
        method, target, _version = (head[0].split(" ", 2) + ["", ""])[:3]
        fields = {}
        for line in head[1:]:
            n, _, v = line.partition(":")
            fields[n.strip().lower()] = v.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._read_chunked(sock, buf)
        elif fields.get("content-length", "").isdigit():
            n = int(fields["content-length"])
            while len(buf) < n:
                data = sock.recv(65536)
                if not data:
                    return None
                buf += data
            del buf[:n]
        return method, target, fields

    @staticmethod
    def _read_chunked(sock, buf):
        def line():
            while b"\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    raise ValueError("eof in chunked body")
                buf.extend(data)
            i = buf.index(b"\r\n")
            text = bytes(buf[:i])
            del buf[:i + 2]
            return text
        while True:
            size = int(line().split(b";")[0] or b"0", 16)
            if size == 0:
                while line():
                    pass
                return
            while len(buf) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ValueError("eof in chunk")
                buf += data
            del buf[:size + 2]

    def _answer(self, sock, req):
        method, target, fields = req
        parts = target.split("?")[0].split("/")
        kind = parts[2] if len(parts) > 2 else "ok"
        rid = parts[3] if len(parts) > 3 else "-"
        head_only = method == "HEAD"
        xid = "X-Id: %s\r\n" % rid

        def simple(code, reason, body, extra=""):
            msg = ("HTTP/1.1 %d %s\r\n%s%sContent-Length: %d\r\n\r\n"
                   % (code, reason, xid, extra, len(body))).encode()
            sock.sendall(msg if head_only else msg + body)
            return True

        if kind == "ok":
            return simple(200, "OK", (b"ok %s\n" % rid.encode()) * self.rng.randint(1, 40))
        if kind == "big":
            return simple(200, "OK", b"b" * 300000)
        if kind == "status5":
            return simple(503, "Unavailable", b"down\n", "Retry-After: 1\r\n")
        if kind == "interim":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                         b"Link: </x>\r\n\r\n")
            return simple(200, "OK", b"after interim\n")
        if kind == "slowhead":
            if self.stop_ev.wait(self.rng.uniform(0.2, 1.0)):
                return False
            return simple(200, "OK", b"slow\n")
        if kind == "chunked":
            sock.sendall(("HTTP/1.1 200 OK\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                          % xid).encode())
            if not head_only:
                for _ in range(self.rng.randint(1, 5)):
                    piece = b"c" * self.rng.randint(1, 3000)
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sock.sendall(b"0\r\n\r\n")
            return True
        if kind == "resethead":
            sock.sendall(("HTTP/1.1 200 OK\r\n%sContent-Length: 1000\r\n\r\n" % xid).encode())
            time.sleep(0.01)
            reset(sock)
            return False
        if kind == "halfbody":
            sock.sendall(("HTTP/1.1 200 OK\r\n%sContent-Length: 1000\r\n\r\n" % xid).encode()
                         + b"h" * 10)
            return False
        if kind == "garbage":
            sock.sendall(b"\x00\xffthis is not HTTP\r\n\r\n")
            return False
        if kind == "badstatus":
            sock.sendall(("HTTP/1.1 600 Weird\r\n%sContent-Length: 5\r\n\r\nweird" % xid).encode())
            return False
        if kind == "up101":
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\n%sConnection: Upgrade\r\n"
                          "Upgrade: chaos\r\n\r\nimmediate-bytes-from-upstream" % xid).encode())
            while True:
                data = sock.recv(65536)
                if not data:
                    return False
                sock.sendall(data)
        if kind == "hang":
            _drain_until_eof(sock)
            return False
        if kind == "halfclose":
            sock.sendall(("HTTP/1.1 200 OK\r\n%s\r\nclose-delimited body of %s\n"
                          % (xid, rid)).encode())
            sock.shutdown(socket.SHUT_WR)
            _drain_until_eof(sock)
            return False
        return simple(404, "Not Found", b"no such kind\n")


class TunnelEnd(_Server):
    def serve(self, sock):
        while True:
            data = sock.recv(65536)
            if not data:
                return
            if data.startswith(b"LATEHALF"):
                time.sleep(0.05)
                sock.shutdown(socket.SHUT_WR)
                _drain_until_eof(sock)
                return
            if data.startswith(b"RST"):
                reset(sock)
                return
            sock.sendall(data)
            if data.startswith(b"HALF"):
                sock.shutdown(socket.SHUT_WR)
                _drain_until_eof(sock)
                return
