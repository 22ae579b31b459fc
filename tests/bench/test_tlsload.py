"""Self-check of tests/bench/tlsload (not part of `make test`):

    make build/bench/tlsload && /usr/bin/python3 -m pytest -q tests/bench/test_tlsload.py

A Python TLS origin (a throwaway CA made by bench.make_tls_files) answers
with each body framing tlsload must read; a small CONNECT proxy in front of
it counts tunnels or refuses them. Each test checks what tlsload reports.
"""

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

TLSLOAD = os.environ.get("BENCH_TLSLOAD") or os.path.join(bench.REPO, "build", "bench", "tlsload")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"x" * 1000
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:300], body[300:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/close":  # no length: the body ends when the server closes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_response(404 if self.path == "/missing" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("tlsload"))
    ca, bundle = bench.make_tls_files(tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(bundle)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other_ca, _ = bench.make_tls_files(str(tmp_path_factory.mktemp("other")))
    yield {"port": server.server_address[1], "ca": ca, "other_ca": other_ca}
    server.shutdown()


class ConnectProxy:
    """A blind CONNECT tunnel that counts tunnels, or answers `refuse`."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.tunnels = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
        target = head.split(b" ")[1].decode()
        if self.refuse:
            client.sendall(self.refuse)
            client.close()
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        with self.lock:
            self.tunnels += 1
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self):
        self.sock.close()


def tlsload(*args):
    if not os.access(TLSLOAD, os.X_OK):
        pytest.skip("build tlsload first: make build/bench/tlsload")
    out = subprocess.run([TLSLOAD, "--duration", "0.5"] + list(args), capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("path", ["/length", "/chunked", "/close"])
def test_reads_every_framing(origin, path):
    r = tlsload("--cafile", origin["ca"], "--connections", "2",
                "https://127.0.0.1:%d%s" % (origin["port"], path))
    assert r["errors"] == 0, r["error"]
    assert r["requests"] > 0 and r["non2xx"] == 0
    assert r["p50_ms"] is not None and r["p50_ms"] <= r["p99_ms"]
    if path == "/close":  # a new connection for each answer
        assert r["connections"] >= r["requests"]
    else:
        assert r["connections"] == 2


def test_counts_non_2xx(origin):
    r = tlsload("--cafile", origin["ca"], "https://localhost:%d/missing" % origin["port"])
    assert r["errors"] == 0, r["error"]
    assert r["requests"] > 0 and r["non2xx"] == r["requests"]


def test_rejects_an_untrusted_certificate(origin):
    r = tlsload("--cafile", origin["other_ca"], "https://127.0.0.1:%d/length" % origin["port"])
    assert r["requests"] == 0 and r["errors"] > 0
    assert "certificate" in r["error"]


def test_through_connect_keep_alive_and_new_connections(origin):
    proxy = ConnectProxy()
    try:
        url = "https://127.0.0.1:%d/length" % origin["port"]
        r = tlsload("--proxy", "127.0.0.1:%d" % proxy.port, "--cafile", origin["ca"],
                    "--connections", "3", url)
        assert r["errors"] == 0, r["error"]
        assert r["requests"] > 3 and proxy.tunnels == 3
        before = proxy.tunnels
        r = tlsload("--proxy", "127.0.0.1:%d" % proxy.port, "--cafile", origin["ca"],
                    "--connections", "2", "--new-connection", url)
        assert r["errors"] == 0, r["error"]
        assert r["requests"] > 0
        assert proxy.tunnels - before == r["connections"] >= r["requests"]
    finally:
        proxy.close()


def test_reports_a_refused_connect(origin):
    proxy = ConnectProxy(refuse=b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    try:
        r = tlsload("--proxy", "127.0.0.1:%d" % proxy.port, "--cafile", origin["ca"],
                    "https://127.0.0.1:%d/length" % origin["port"])
        assert r["requests"] == 0 and r["errors"] > 0
        assert r["error"].startswith("CONNECT answered: HTTP/1.1 403"), r["error"]
    finally:
        proxy.close()


def test_bad_arguments_exit_2():
    if not os.access(TLSLOAD, os.X_OK):
        pytest.skip("build tlsload first: make build/bench/tlsload")
    for argv in (["http://127.0.0.1/"], ["--connections", "0", "https://127.0.0.1/"],
                 ["--proxy", "nocolon", "https://127.0.0.1/"], ["--bogus"]):
        out = subprocess.run([TLSLOAD] + argv, capture_output=True, timeout=10)
        assert out.returncode == 2, argv
        assert out.stderr.startswith(b"tlsload: "), out.stderr
