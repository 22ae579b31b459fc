"""Chaos soak: misbehaving clients and a misbehaving origin at once, with
rules that delay, abort, truncate, throttle and reset, and admin reloads of
the rules meanwhile (ISSUE 8, item 4).

It asserts what must hold whatever happens on the wire: the proxy never
dies and its stderr has no sanitizer report; a canary client doing plain
GETs sees no stall longer than STALL_S; an answer that carries X-Id belongs
to the request it answers; after the clients leave, the proxy's open fds
return to where they started and its RSS stays bounded; SIGTERM exits 0;
every complete answer a client received is in the audit database with its
code, and no record was dropped.

    CHAOS_SECONDS=40   how long the chaos runs (make soak: SOAK_SECONDS, 300)
    CHAOS_SEED=N       replay a run: the seed drives every client's choices
                       and the proxy's --seed (printed on failure)
    CHAOS_CLIENTS=6    chaos client threads

Runs with $STATUSPROXY_BIN like every e2e test; `make soak` builds and uses
the AddressSanitizer build.
"""

import os
import random
import signal
import socket
import threading
import time

from chaos_origin import ChaosOrigin, TunnelEnd, reset
from helpers import ConnectionClosed, HttpConn, ProtocolError, db_exchanges, is_sanitized
from rules_support import ASAN_ENV, Admin, metric, write_rules

SECONDS = float(os.environ.get("CHAOS_SECONDS", "40"))
CLIENTS = int(os.environ.get("CHAOS_CLIENTS", "6"))
STALL_S = 5.0
IDLE_TIMEOUT_S = 3

RULES_A = """\
rule d   path /d/*  => delay 50ms..250ms
rule ab  path /ab/* => abort 503 body "aborted"
rule tr  path /tr/* => truncate 100
rule th  path /th/* => throttle 256KB/s
rule rs  path /rs/* => reset
rule dr  path /dr/* => delay 100ms reset
rule ss  status 5xx path /ss/* => set-status 502 reason "Rewritten" set-header X-Chaos "1"
"""
# The reloads swap between these two (and a bad file that must be refused).
RULES_B = """\
rule d   path /d/*  => delay 10ms..100ms
rule ab  path /ab/* => abort 500
rule tr  path /tr/* => truncate 10
rule th  path /th/* => throttle 1MB/s
rule rs  path /rs/* chance 50% => reset
rule dr  path /dr/* => delay 20ms reset
rule ss  status 5xx path /ss/* => set-status 200
"""
RULES_BAD = "rule broken path /x/* => frobnicate 3\n"

PREFIXES = ["p", "p", "p", "d", "ab", "tr", "th", "rs", "dr", "ss"]
KINDS = ["ok", "ok", "ok", "chunked", "big", "interim", "status5", "slowhead", "resethead",
         "halfbody", "garbage", "badstatus", "up101", "hang", "halfclose"]
# Kinds that keep the origin connection usable, for pipelined bursts.
PIPE_KINDS = ["ok", "ok", "chunked", "interim", "status5", "badstatus", "slowhead",
              "halfbody", "garbage"]


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_links(pid):
    """{fd: what it points to}, sockets with their TCP ports and state."""
    tcp = {}
    for name in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(name) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    tcp[cols[9]] = "local :%d remote :%d state %s" % (
                        int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16),
                        TCP_STATES.get(cols[3], cols[3]))
        except OSError:
            pass
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            link += " " + tcp.get(link[8:-1], "(not TCP)")
        out[int(fd)] = link
    return out


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    """What the clients share: the proxy's ports, the answers they got."""

    def __init__(self, proxy, tunnel_port, seed):
        self.proxy = proxy
        self.port = proxy.port
        self.tunnel_port = tunnel_port
        self.seed = seed
        self.deadline = time.monotonic() + SECONDS
        self.lock = threading.Lock()
        self.answers = {}        # path -> status of a complete final answer
        self.detail = {}         # path -> what the answer was and what came before
        self.mismatches = []     # (sent id, X-Id received)
        self.counts = {}         # scenario -> runs
        self.requests = 0
        self.errors = []         # unexpected exceptions in client threads
        self.malformed_passed = []  # malformed requests that got a 1xx-3xx answer
        self.next_id = 0
        self.freeze_lock = threading.Lock()

    def frozen(self, fn, hold):
        """Run FN with the proxy stopped, and keep it stopped HOLD s: what
        happened on the wire meanwhile reaches it in one loop iteration (a
        reset right behind a half-close...), where lifetime races hide."""
        with self.freeze_lock:
            os.kill(self.proxy.pid, signal.SIGSTOP)
            try:
                fn()
                time.sleep(hold)
            finally:
                os.kill(self.proxy.pid, signal.SIGCONT)

    def new_id(self, tag):
        with self.lock:
            self.next_id += 1
            return "%s%d" % (tag, self.next_id)

    def running(self):
        return time.monotonic() < self.deadline

    def count(self, scenario, n=1):
        with self.lock:
            self.counts[scenario] = self.counts.get(scenario, 0) + 1
            self.requests += n

    def got(self, path, rid, resp, context=""):
        """A complete final answer to the request for PATH."""
        xid = resp.get("x-id")
        with self.lock:
            self.detail[path] = "%r %s" % (resp.status_line, context)
            if xid is not None and xid != rid:
                self.mismatches.append((path, xid))
            if resp.status >= 200:
                self.answers[path] = resp.status


def target(rng, soak, prefix=None, kind=None):
    prefix = prefix or rng.choice(PREFIXES)
    kind = kind or rng.choice(KINDS)
    rid = soak.new_id("r")
    return "/%s/%s/%s" % (prefix, kind, rid), rid


def read_answers(conn, soak, sent, timeout=8.0):
    """Read answers to SENT [(method, path, rid)] in order until one fails."""
    for i, (method, path, rid) in enumerate(sent):
        try:
            r = conn.read_response(method=method, allow_incomplete=True, keep_body=False,
                                   timeout=timeout)
        except (ProtocolError, ConnectionClosed, OSError):
            return
        if r.status == 101:
            return
        if not r.complete:
            return
        soak.got(path, rid, r, "after %s" % [m + " " + p for m, p, _ in sent[:i]])
        if (r.get("connection") or "").lower() == "close":
            return


# -- the client scenarios ---------------------------------------------------------


def sc_simple(rng, soak):
    with HttpConn(soak.port, timeout=10) as c:
        for _ in range(rng.randint(1, 3)):
            path, rid = target(rng, soak)
            method = "HEAD" if rng.random() < 0.2 else "GET"
            c.request(method, path)
            before = len(soak.answers)
            read_answers(c, soak, [(method, path, rid)])
            soak.count("simple")
            if len(soak.answers) == before:
                return


def sc_pipelined(rng, soak):
    sent, data = [], bytearray()
    for _ in range(rng.randint(2, 15)):
        path, rid = target(rng, soak, kind=rng.choice(PIPE_KINDS))
        method = "HEAD" if rng.random() < 0.25 else "GET"
        sent.append((method, path, rid))
        data += ("%s %s HTTP/1.1\r\nHost: chaos\r\n\r\n" % (method, path)).encode()
    with HttpConn(soak.port, timeout=10) as c:
        c.send(bytes(data))
        read_answers(c, soak, sent)
    soak.count("pipelined", len(sent))


def sc_reset(rng, soak):
    """Reset at a random point: mid-head, after the head, mid-answer."""
    path, _ = target(rng, soak)
    req = ("GET %s HTTP/1.1\r\nHost: chaos\r\nX-Pad: %s\r\n\r\n"
           % (path, "p" * rng.randint(0, 200))).encode()
    c = HttpConn(soak.port, timeout=5)
    c.send(req[:rng.randint(1, len(req))])
    time.sleep(rng.uniform(0, 0.3))
    if rng.random() < 0.5:
        try:
            c.sock.recv(rng.randint(1, 4096))
        except OSError:
            pass
    reset(c.sock)
    soak.count("reset")


def sc_abandoned_body(rng, soak):
    path, _ = target(rng, soak, kind="ok")
    c = HttpConn(soak.port, timeout=5)
    if rng.random() < 0.5:
        c.send(("POST %s HTTP/1.1\r\nHost: chaos\r\nContent-Length: 200000\r\n\r\n"
                % path).encode() + b"x" * rng.randint(0, 50000))
    else:
        c.send(("POST %s HTTP/1.1\r\nHost: chaos\r\nTransfer-Encoding: chunked\r\n\r\n"
                "1000\r\n" % path).encode() + b"y" * rng.randint(0, 4096))
    time.sleep(rng.uniform(0, 0.3))
    if rng.random() < 0.5:
        reset(c.sock)
    else:
        c.close()
    soak.count("abandoned_body")


def sc_slow_reader(rng, soak):
    path, rid = target(rng, soak, prefix=rng.choice(["p", "th", "tr"]), kind="big")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", soak.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: chaos\r\n\r\n" % path).encode())
        end = time.monotonic() + rng.uniform(0.2, 1.5)
        while time.monotonic() < end:
            if not s.recv(2048):
                break
            time.sleep(0.02)
    except OSError:
        pass
    finally:
        reset(s) if rng.random() < 0.5 else s.close()
    soak.count("slow_reader")


def slow_conn(port, timeout):
    """An HttpConn whose socket has a tiny receive buffer: the proxy's
    writes to it stay pending while it does not read."""
    c = HttpConn.__new__(HttpConn)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.settimeout(timeout)
    c.buf, c.eof, c.port = bytearray(), False, port
    try:
        c.sock.connect(("127.0.0.1", port))
    except OSError:
        c.sock.close()
        raise
    return c


def sc_connect(rng, soak):
    how = rng.choice(["client_reset", "client_half", "server_reset", "server_half",
                      "server_half_then_reset", "server_half_then_reset", "close"])
    if how == "server_half_then_reset":
        c = slow_conn(soak.port, 5)
    else:
        c = HttpConn(soak.port, timeout=5)
    try:
        c.send(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                % (soak.tunnel_port, soak.tunnel_port)).encode())
        r = c.read_response(method="CONNECT", keep_body=False, timeout=5)
        if r.status != 200:
            return
        c.send(b"hello tunnel")
        c.sock.recv(100)
        if how == "client_reset":
            reset(c.sock)
        elif how == "client_half":
            c.sock.shutdown(socket.SHUT_WR)
            c.read_all(2.0)
        elif how == "server_reset":
            c.send(b"RST")
            c.read_all(2.0)
        elif how == "server_half_then_reset":
            # The origin half-closes while its echo of a big piece is still
            # on the way to a client that does not read, which then resets.
            if rng.random() < 0.5:
                c.send(b"HALF" + b"h" * rng.randint(0, 100000))
                time.sleep(0.03)
                reset(c.sock)
            else:
                # The target's half-close and the client's reset reach
                # the proxy in the same loop iteration.
                c.send(b"LATEHALF")
                time.sleep(0.01)
                soak.frozen(lambda: (time.sleep(0.1), reset(c.sock)), 0.01)
        elif how == "server_half":
            c.send(b"HALF please")
            c.read_all(2.0)
            if rng.random() < 0.5:
                reset(c.sock)
    except (ProtocolError, ConnectionClosed, OSError):
        pass
    finally:
        c.close()
        soak.count("connect")


def sc_upgrade(rng, soak):
    path, _ = target(rng, soak, prefix=rng.choice(["p", "p", "d", "th"]), kind="up101")
    c = HttpConn(soak.port, timeout=3)
    try:
        c.send(("GET %s HTTP/1.1\r\nHost: chaos\r\nConnection: Upgrade\r\nUpgrade: chaos\r\n\r\n"
                % path).encode())
        c.sock.settimeout(1.5)
        c.sock.recv(4096)
        c.send(b"client bytes")
        c.sock.recv(4096)
        how = rng.random()
        if how < 0.3:
            c.sock.shutdown(socket.SHUT_WR)
            c.read_all(1.0)
        elif how < 0.6:
            reset(c.sock)
    except OSError:
        pass
    finally:
        c.close()
        soak.count("upgrade")


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    b"GET /p/ok/m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /p/ok/m HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
    b"POST /p/ok/m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    b"POST /p/ok/m HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET /p/ok/m HTTP/3.0\r\nHost: a\r\n\r\n",
    b"GET /p/ok/m HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n",
    b"GET /p/ok/m HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(8000))
    + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
]


def sc_malformed(rng, soak):
    data = rng.choice(MALFORMED)
    if rng.random() < 0.2:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    c = HttpConn(soak.port, timeout=3)
    try:
        c.send(data)
        got = c.read_all(2.0)
    except OSError:
        got = b""
    finally:
        c.close()
        soak.count("malformed")
    # Refused (4xx/5xx) or dropped; never forwarded and answered.
    if got[:10] in (b"HTTP/1.1 1", b"HTTP/1.1 2", b"HTTP/1.1 3"):
        with soak.lock:
            soak.malformed_passed.append((data[:60], got[:60]))


SCENARIOS = [(sc_simple, 30), (sc_pipelined, 10), (sc_reset, 12), (sc_abandoned_body, 6),
             (sc_slow_reader, 5), (sc_connect, 10), (sc_upgrade, 8), (sc_malformed, 8)]


def chaos_client(soak, n):
    rng = random.Random(soak.seed * 1000 + n)
    fns = [f for f, _ in SCENARIOS]
    weights = [w for _, w in SCENARIOS]
    while soak.running():
        fn = rng.choices(fns, weights)[0]
        try:
            fn(rng, soak)
        except (ProtocolError, ConnectionClosed, OSError):
            pass  # what a misbehaving peer gets; the checks come at the end
        except Exception as e:  # a bug in the test itself
            soak.errors.append(repr(e))
            return


def canary(soak, out):
    """Plain GETs on a kept connection; the longest time without an answer."""
    conn, n = None, 0
    last_ok = time.monotonic()
    out["max_gap"], out["ok"], out["failures"] = 0.0, 0, []
    while soak.running():
        n += 1
        path, rid = "/c/ok/canary%d" % n, "canary%d" % n
        try:
            if conn is None:
                conn = HttpConn(soak.port, timeout=STALL_S * 2)
            r = conn.exchange("GET", path, keep_body=False, timeout=STALL_S * 2)
            if r.status != 200 or r.get("x-id") != rid:
                out["failures"].append((path, r.status, r.get("x-id")))
            soak.got(path, rid, r)
            out["ok"] += 1
            now = time.monotonic()
            out["max_gap"] = max(out["max_gap"], now - last_ok)
            last_ok = now
        except (ProtocolError, ConnectionClosed, OSError) as e:
            out["failures"].append((path, repr(e)))
            if conn:
                conn.close()
            conn = None
        time.sleep(0.1)
    out["max_gap"] = max(out["max_gap"], time.monotonic() - last_ok)
    if conn:
        conn.close()


def reloader(soak, admin, out):
    rng = random.Random(soak.seed * 1000 + 999)
    out["reloads"], out["bad"] = 0, []
    while soak.running():
        time.sleep(rng.uniform(0.3, 1.5))
        text = rng.choice([RULES_A, RULES_B, RULES_BAD])
        try:
            r = admin.put_rules(text)
        except OSError as e:
            out["bad"].append(repr(e))
            continue
        if (r.status == 200) != (text is not RULES_BAD):
            out["bad"].append((r.status, r.body[:200]))
        out["reloads"] += 1


def freezer(soak, out):
    """Stop the proxy for a moment now and then (see Soak.frozen)."""
    rng = random.Random(soak.seed * 1000 + 998)
    out["freezes"] = 0
    while soak.running():
        time.sleep(rng.uniform(0.3, 1.5))
        soak.frozen(lambda: None, rng.uniform(0.02, 0.15))
        out["freezes"] += 1


def test_chaos_soak(proxy_factory, tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    print("chaos seed %d (replay: CHAOS_SEED=%d), %.0f s, %d clients"
          % (seed, seed, SECONDS, CLIENTS))
    origin = ChaosOrigin().start()
    tunnel = TunnelEnd().start()
    rules = write_rules(str(tmp_path), RULES_A)
    try:
        p = proxy_factory(
            upstream="http://127.0.0.1:%d" % origin.port,
            args=["--rules", rules, "--seed", str(seed), "--workers", "2",
                  "--connect-ports", str(tunnel.port), "--header-timeout", "2s",
                  "--response-timeout", "3s", "--idle-timeout", "%ds" % IDLE_TIMEOUT_S],
            env=ASAN_ENV)
        _soak(p, origin, tunnel, seed)
    finally:
        origin.stop()
        tunnel.stop()


def _soak(p, origin, tunnel, seed):
    tag = "chaos seed %d (replay: CHAOS_SEED=%d)" % (seed, seed)
    admin = Admin(p)
    fds_start = open_fds(p.pid)
    links_start = fd_links(p.pid)
    soak = Soak(p, tunnel.port, seed)
    canary_out, reload_out = {}, {}
    threads = [threading.Thread(target=chaos_client, args=(soak, i)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=canary, args=(soak, canary_out)))
    threads.append(threading.Thread(target=reloader, args=(soak, admin, reload_out)))
    threads.append(threading.Thread(target=freezer, args=(soak, reload_out)))
    for t in threads:
        t.daemon = True
        t.start()
    rss_max = 0
    while soak.running():
        assert p.proc.poll() is None, "%s: the proxy died (status %s)\n%s" % (
            tag, p.proc.returncode, p.stderr()[-5000:])
        rss_max = max(rss_max, rss_kib(p.pid))
        time.sleep(0.5)
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "%s: a client thread hangs" % tag
    summary = ("%s: %d requests, %d complete answers, scenarios %s, canary %s ok, max gap "
               "%.2f s, %d reloads, %d freezes, origin connections %d, tunnels %d"
               % (tag, soak.requests, len(soak.answers), soak.counts, canary_out.get("ok"),
                  canary_out.get("max_gap", 0), reload_out.get("reloads", 0), reload_out.get("freezes", 0), origin.accepted,
                  tunnel.accepted))
    print(summary)

    # Every check runs and every failure is reported together: one defect
    # should not hide another.
    fail = []
    if p.proc.poll() is not None:
        fail.append("the proxy died (status %s)" % p.proc.returncode)
    if soak.errors:
        fail.append("test client errors %s" % soak.errors)
    if canary_out["failures"]:
        fail.append("canary failures %s" % canary_out["failures"][:10])
    if canary_out["max_gap"] >= STALL_S:
        fail.append("the canary stalled %.1f s" % canary_out["max_gap"])
    if reload_out["bad"]:
        fail.append("unexpected reload answers %s" % reload_out["bad"])
    if soak.mismatches:
        fail.append("%d answers for another request (path, X-Id received): %s"
                    % (len(soak.mismatches), soak.mismatches[:10]))

    if soak.malformed_passed:
        fail.append("malformed requests answered as good: %s" % soak.malformed_passed[:5])

    # The clients are gone: connections wind down within the timeouts.
    settle = time.monotonic() + IDLE_TIMEOUT_S + 15
    fds = open_fds(p.pid) if p.proc.poll() is None else 0
    while fds > fds_start and time.monotonic() < settle and p.proc.poll() is None:
        time.sleep(0.25)
        fds = open_fds(p.pid)
    if fds > fds_start:
        now = fd_links(p.pid)
        new_fds = {fd: link for fd, link in now.items() if links_start.get(fd) != link}
        fail.append("%d fds open %.0f s after the clients left, %d at the start; new or "
                    "changed: %s (origin ports: %d, tunnel %d)"
                    % (fds, IDLE_TIMEOUT_S + 15, fds_start, new_fds, origin.port, tunnel.port))
    rss_limit = (400 if is_sanitized(p.binary) else 150) * 1024
    if p.proc.poll() is None:
        rss_max = max(rss_max, rss_kib(p.pid))
        dropped = metric(admin.metrics(), "statusproxy_records_dropped_total")
        if dropped != 0:
            fail.append("%s records dropped" % dropped)
    if rss_max >= rss_limit:
        fail.append("RSS reached %d KiB (limit %d)" % (rss_max, rss_limit))
    problems = p.stop(timeout=20)
    if problems:
        fail.append("stop: %s" % problems)

    # After the stop every record is on file.
    recorded = {}
    for row in db_exchanges(p.db):
        recorded.setdefault(row["path"], []).append(row["final_code"])
    missing = [(path, code, recorded.get(path), soak.detail.get(path)) for path, code in sorted(soak.answers.items())
               if code not in recorded.get(path, [])]
    if missing:
        fail.append("%d of %d answers not recorded with their code (path, code, recorded, answer): %s"
                    % (len(missing), len(soak.answers), missing[:20]))
    assert not fail, "%s:\n- %s\nstderr:\n%s" % (tag, "\n- ".join(fail), p.stderr()[-5000:])
