#!/usr/bin/env python3
"""Instructions per exchange, counted by callgrind: a figure that does not
depend on how loaded the machine is (wall-clock ratios on two shared cores
vary by 3-5%).

    python3 tests/bench/callgrind.py BIN [BIN2 ...] [--log-exchanges all|none]

For each binary it starts build/bench/backend, runs `BIN run` under
`valgrind --tool=callgrind --separate-threads=yes`, sends N1 and then N2
keep-alive `GET /bytes/64` requests from one client (two runs), and prints
(instructions of N2 - instructions of N1) / (N2 - N1) per thread, so that
start-up and shutdown cancel out. Threads: 1 main, 2 the audit writer,
3 the worker's event loop (one worker). Needs valgrind (Debian package).
"""

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BACKEND = os.environ.get("BENCH_BACKEND") or os.path.join(REPO, "build", "bench", "backend")
REQUEST = b"GET /bytes/64 HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_answer(sock, buf):
    """Read one answer with a Content-Length body; returns the bytes left over."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"content-length: *(\d+)", buf[:end], re.I)
            total = end + 4 + int(m.group(1))
            if len(buf) >= total:
                return buf[total:]
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the proxy closed the connection")
        buf += data


def thread_totals(binary, n, log_exchanges):
    """{thread number: instructions} for one run of N requests."""
    tmp = tempfile.mkdtemp(prefix="sp-callgrind-")
    be = subprocess.Popen([BACKEND, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        bport = int(be.stdout.readline().rsplit(":", 1)[1])
        port = free_port()
        proxy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             "--callgrind-out-file=%s/cg.out" % tmp, binary, "run",
             "--listen", "127.0.0.1:%d" % port, "--upstream", "http://127.0.0.1:%d" % bport,
             "--admin", "off", "--log-exchanges", log_exchanges, "--db", tmp + "/x.db"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        buf = b""
        for _ in range(n):
            sock.sendall(REQUEST)
            buf = read_answer(sock, buf)
        sock.close()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(120)
    finally:
        be.terminate()
        be.wait()
    totals = {}
    for path in glob.glob(tmp + "/cg.out-*"):
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    totals[int(path.rsplit("-", 1)[1])] = int(line.split()[1])
                    break
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--log-exchanges", default="none", choices=["all", "errors", "none"])
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=6000)
    a = ap.parse_args()
    print("instructions per exchange (%d - %d requests, --log-exchanges %s)"
          % (a.n2, a.n1, a.log_exchanges))
    print("%-50s %10s %10s %10s" % ("binary", "main", "writer", "event loop"))
    for b in a.binaries:
        t1 = thread_totals(b, a.n1, a.log_exchanges)
        t2 = thread_totals(b, a.n2, a.log_exchanges)
        per = [(t2.get(k, 0) - t1.get(k, 0)) / (a.n2 - a.n1) for k in (1, 2, 3)]
        print("%-50s %10.0f %10.0f %10.0f" % (b[-50:], *per))
    return 0


if __name__ == "__main__":
    sys.exit(main())
