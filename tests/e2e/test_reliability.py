"""Connection-core reliability (issue 8, DESIGN §12): tunnel lifetimes, a held
101, the tunnel idle timeout, truncate on a single read, the request-head
limit counted in wire bytes, pipelining after a refused HEAD answer, HEAD
with set-status, a client that stops reading, and Connection lists that
would cost quadratic time.

The origins here are raw sockets (RawOrigin) so that each test controls the
exact bytes and the exact moment they are written. Run against the ASan
build (STATUSPROXY_BIN=build/san/statusproxy) the memory tests fail on the
sanitizer report the proxy fixture checks at exit.
"""

import os
import signal
import socket
import struct
import threading
import time

from helpers import HttpConn, wait_exchanges, wait_until


class RawOrigin:
    """A TCP server on 127.0.0.1 that runs HANDLER(sock) in a thread per
    connection. HANDLER owns the socket."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.accepted = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


def read_head(sock):
    """Read one request head (up to the blank line); returns bytes or b''."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = sock.recv(65536)
        if not d:
            return b""
        data += d
    return data


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def recv_until_closed(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not d:
            return data, True
        data += d


# -- 1. tunnels: shutdown requests outlive the tunnel --------------------------------


class SteppedTarget:
    """A CONNECT target whose connections do what the test says, when it says."""

    def __init__(self):
        self.socks = []
        self.ready = threading.Condition()
        self.origin = RawOrigin(self._handler)
        self.port = self.origin.port

    def _handler(self, s):
        with self.ready:
            self.socks.append(s)
            self.ready.notify_all()
        s.settimeout(30)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        time.sleep(1)

    def wait_sock(self, n):
        with self.ready:
            self.ready.wait_for(lambda: len(self.socks) >= n, 5)
            return self.socks[n - 1]

    def stop(self):
        self.origin.stop()


def _tunnel(p, target):
    s = socket.socket()
    s.connect(("127.0.0.1", p.port))
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % target.port)
    s.settimeout(5)
    assert s.recv(39).startswith(b"HTTP/1.1 200")
    return s


def _frozen(p, first, second):
    """Run FIRST then SECOND while the proxy is stopped, so that its next
    loop iteration sees both events at once, in that order."""
    os.kill(p.pid, signal.SIGSTOP)
    try:
        first()
        time.sleep(0.02)
        second()
        time.sleep(0.02)
    finally:
        os.kill(p.pid, signal.SIGCONT)


def test_tunnel_target_half_close_then_client_reset_is_memory_safe(proxy_factory):
    """The target half-closes (the proxy starts a shutdown of the client
    side) and the client resets before that shutdown completed: the
    pending shutdown's callback must not run on a freed tunnel (ASan reports
    a heap-use-after-free otherwise)."""
    target = SteppedTarget()
    p = proxy_factory(args=["--connect-ports", str(target.port)])
    try:
        for i in range(1, 41):
            s = _tunnel(p, target)
            t = target.wait_sock(i)
            _frozen(p, lambda: t.shutdown(socket.SHUT_WR), lambda: rst_close(s))
        assert p.proc.poll() is None
        s = _tunnel(p, target)
        s.close()
    finally:
        target.stop()


def test_tunnel_client_half_close_then_target_reset_is_memory_safe(proxy_factory):
    """The mirror case: the client half-closes, then the target resets
    before the proxy's shutdown towards it completed."""
    target = SteppedTarget()
    p = proxy_factory(args=["--connect-ports", str(target.port)])
    try:
        for i in range(1, 41):
            s = _tunnel(p, target)
            t = target.wait_sock(i)
            _frozen(p, lambda: s.shutdown(socket.SHUT_WR), lambda: rst_close(t))
            s.close()
        assert p.proc.poll() is None
    finally:
        target.stop()
