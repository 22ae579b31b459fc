#!/usr/bin/env python3
"""statusproxy's throughput benchmark: ratios measured in one run.

Starts tests/bench/backend (a fast C origin), two statusproxy processes in
front of it (--log-exchanges none and all, one worker each) and HAProxy
(nbthread 1, http-reuse always, no logging) when it is installed, then runs
wrk against each of them and against the backend directly, for each body
size. Configurations are interleaved round by round (the order rotates) and
each figure is the median over the rounds, so that load from other work on
the machine hits every configuration alike. Read the RATIOS, not the
absolute numbers.

For every run it also reads the CPU time each server process used
(/proc/PID/stat), so requests per CPU-second shows efficiency even when the
cores are shared with wrk, the backend and other people's tests.

With --intercept it measures HTTPS interception instead: tests/bench/tlsload
(an HTTPS load generator that sends CONNECT, which wrk cannot) goes through
statusproxy --intercept, mitmdump and Squid's ssl-bump to a TLS origin, and
straight to that origin. With --tls-listen, tlsload speaks TLS straight to
statusproxy's TLS listener and to HAProxy's `bind ... ssl crt`.

Environment: STATUSPROXY_BIN (default build/statusproxy), BENCH_BACKEND
(default build/bench/backend), BENCH_TLSLOAD (default build/bench/tlsload);
wrk, haproxy, mitmdump and squid are looked up on PATH (and /usr/sbin). See
tests/bench/README.md. Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_WAIT = 15  # seconds a server has to exit after SIGTERM before it is killed

CONFIGS = [
    ("direct", "backend, direct"),
    ("none", "statusproxy none"),
    ("all", "statusproxy all"),
    ("haproxy", "haproxy"),
    ("rules20", "statusproxy rules20"),
]
# With --candidate BIN: a second statusproxy build measured in the same run.
# rules20: 20 rules that use the matchers of DESIGN §10 (during, cycle,
# rate-limit) and the new actions, but never match the benchmark's GET
# /bytes/N, measured against no rules (issue 11: under 3% req/s). Half fail
# on a cheap matcher written first (method, path, header, host, status), half
# pass those and fail on a time window that has not begun, so the clock is
# read on every exchange.
RULES20 = """\
rule n01 path /never/* during 0s..1h => abort 503
rule n02 method DELETE cycle 10s on 5s => hang
rule n03 path /api/* rate-limit 10/1s per-client => abort 429 set-header Retry-After auto
rule n04 header X-Never cycle 1s on 500ms => empty
rule n05 host never.invalid rate-limit 5/1s => abort 429 set-header Retry-After auto
rule n06 method POST rate-limit 1000/1m => garbage 32
rule n07 path /bytes/never during 0s.. => bad-chunk
rule n08 header X-Never-Either during 0s..30s cycle 2s on 1s => slow-head 1s
rule n09 status 599 rate-limit 1/1s => set-status 429 set-header Retry-After auto
rule n10 status 598 cycle 1m on 10s => empty
rule n11 during 24h.. => abort 503
rule n12 during 24h..48h => delay lognormal 100ms 2s
rule n13 during 25h.. cycle 60s on 10s => hang 5s
rule n14 during 26h.. => delay normal 300ms 50ms
rule n15 during 27h.. rate-limit 1/1s => abort 429 set-header Retry-After auto
rule n16 during 28h.. => garbage
rule n17 during 29h..30h => empty
rule n18 during 30h.. cycle 10s on 1s => bad-chunk
rule n19 during 31h.. => slow-head 2s
rule n20 status 200 during 32h.. => hang
"""

CANDIDATE_CONFIGS = [
    ("cand-none", "candidate none"),
    ("cand-all", "candidate all"),
]
RATIOS = [
    ("none", "direct", ""),
    ("all", "direct", ""),
    ("none", "haproxy", "   (target >= 1)"),
    ("all", "haproxy", ""),
    ("all", "none", "   (target >= 0.95)"),
    ("rules20", "none", "   (target >= 0.97)"),
    ("cand-none", "none", "   (candidate / baseline)"),
    ("cand-all", "all", "   (candidate / baseline)"),
    ("cand-none", "haproxy", ""),
    ("cand-all", "cand-none", ""),
]


# --intercept: HTTPS through a proxy that terminates the client's TLS with a
# certificate it minted (CONNECT, then TLS inside the tunnel), measured with
# tlsload because wrk cannot send CONNECT.
INTERCEPT_CONFIGS = [
    ("direct", "origin, direct"),
    ("statusproxy", "statusproxy"),
    ("statusproxy-all", "statusproxy all"),
    ("mitmdump", "mitmdump"),
    ("squid", "squid ssl-bump"),
]
INTERCEPT_RATIOS = [
    ("statusproxy", "mitmdump", "   (target >= 10)"),
    ("statusproxy", "squid", ""),
    ("statusproxy-all", "statusproxy", "   (recording every exchange)"),
    ("statusproxy", "direct", ""),
    ("mitmdump", "direct", ""),
    ("squid", "direct", ""),
]


def parse_size(text):
    m = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError("bad size %r (e.g. 64, 1k, 64k, 1m)" % text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def size_name(n):
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return "%d MiB" % (n // (1024 * 1024))
    if n >= 1024 and n % 1024 == 0:
        return "%d KiB" % (n // 1024)
    return "%d B" % n


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_accepting(port, proc, name, wait=10.0):
    deadline = time.monotonic() + wait
    while True:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s before accepting" % (name, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not accept on port %d within %.0fs" % (name, port, wait))
        time.sleep(0.02)


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid):
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


# --tls-listen: clients speak TLS to the proxy itself (no CONNECT); each proxy
# is a gateway to the plain backend. Measured with tlsload straight to the
# proxy's TLS port.
TLS_LISTEN_CONFIGS = [
    ("statusproxy", "statusproxy"),
    ("statusproxy-all", "statusproxy all"),
    ("haproxy", "haproxy ssl"),
]
TLS_LISTEN_RATIOS = [
    ("statusproxy", "haproxy", "   (TLS listener vs bind ... ssl crt)"),
    ("statusproxy-all", "statusproxy", "   (recording every exchange)"),
]


def find_tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


class Server:
    """One long-lived server process with its log files in the run's tmp dir."""

    def __init__(self, name, argv, tmp, port=None, cpu=None, ignore_sigpipe=False, wait=10.0):
        self.name = name
        self.wait = wait  # seconds it may take to accept (mitmdump starts slowly)
        self.argv = argv
        self.port = port
        self.err_path = os.path.join(tmp, name + ".stderr")
        self.out_path = os.path.join(tmp, name + ".stdout")
        self.cpu = cpu
        self.ignore_sigpipe = ignore_sigpipe
        self.proc = None
        self.returncode = None
        self.stop_seconds = None
        self.term_sent = None
        self.killed = False

    def start(self):
        cpu, ignore = self.cpu, self.ignore_sigpipe

        def setup():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            if ignore:  # inherited across exec
                signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, preexec_fn=setup)
        if self.port is None:  # the backend says which port it took
            deadline = time.monotonic() + 10
            while self.port is None:
                with open(self.out_path) as f:
                    m = re.search(r"listening on [\d.]+:(\d+)", f.read())
                if m:
                    self.port = int(m.group(1))
                elif self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("%s did not start: %s" % (self.name, self.stderr()))
                else:
                    time.sleep(0.02)
        wait_accepting(self.port, self.proc, self.name, self.wait)
        return self

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def signal_stop(self):
        """Send SIGTERM once (servers may read a second one as "stop now")."""
        if self.proc is not None and self.term_sent is None and self.proc.poll() is None:
            self.term_sent = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        """SIGTERM, then wait up to STOP_WAIT seconds, then SIGKILL."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        self.signal_stop()
        if self.term_sent is not None:
            try:
                self.proc.wait(timeout=max(0.0, self.term_sent + STOP_WAIT - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        self.stop_seconds = time.monotonic() - self.term_sent if self.term_sent else 0.0
        self.returncode = self.proc.returncode
        return self.returncode

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(text):
    """Requests/s, latency percentiles (ms), counts and errors from wrk's output."""
    r = {"rps": 0.0, "requests": 0, "p50": None, "p99": None, "socket_errors": 0,
         "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, text, re.M)
        if m:
            r["p" + pct] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = sum(int(g) for g in m.groups())
        r["socket_detail"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def run_wrk(wrk, url, args, cpu=None):
    argv = [wrk, "-t%d" % args.threads, "-c%d" % args.connections,
            "-d%gs" % args.duration, "--latency", url]
    pin = None
    if cpu is not None:
        def pin():
            os.sched_setaffinity(0, {cpu})
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=args.duration + 60, preexec_fn=pin)
    text = out.stdout.decode("utf-8", "replace")
    r = parse_wrk(text)
    r["wrk_exit"] = out.returncode
    r["wrk_output"] = text
    return r


def stop_all(servers):
    """SIGTERM to every server at once; each gets STOP_WAIT seconds to exit,
    and its own time to exit is kept (stop_seconds)."""
    for s in servers:
        s.signal_stop()
    deadline = time.monotonic() + STOP_WAIT
    waiting = [s for s in servers if s.term_sent is not None]
    while waiting and time.monotonic() < deadline:
        for s in list(waiting):
            if s.proc.poll() is not None:
                s.stop_seconds = time.monotonic() - s.term_sent
                s.returncode = s.proc.returncode
                waiting.remove(s)
        time.sleep(0.02)
    for s in servers:
        if s.returncode is None:
            s.stop()


def died(server):
    code = server.proc.returncode
    how = "exit status %d" % code
    if code < 0:
        how = "killed by %s" % signal.Signals(-code).name
    hint = ""
    if code == -signal.SIGPIPE:
        hint = ("\n(a peer closed while it was writing and SIGPIPE is not ignored; "
                "--ignore-sigpipe measures anyway)")
    return "%s died during the run, %s%s\n--- its stderr (tail) ---\n%s" % (
        server.name, how, hint, server.stderr()[-2000:])


def make_tls_files(tmp):
    """A throwaway CA and a leaf for 127.0.0.1 signed by it (openssl CLI).
    Returns (ca.pem, origin.pem with the leaf and its key, for HAProxy)."""
    ca, ca_key = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca-key.pem")
    leaf, key = os.path.join(tmp, "leaf.pem"), os.path.join(tmp, "leaf-key.pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(["openssl", "req", "-x509"] + ec + ["-keyout", ca_key, "-out", ca,
                    "-days", "2", "-subj", "/CN=statusproxy bench CA"],
                   check=True, capture_output=True)
    csr = os.path.join(tmp, "leaf.csr")
    subprocess.run(["openssl", "req"] + ec + ["-keyout", key, "-out", csr,
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    ext = os.path.join(tmp, "leaf.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", leaf],
                   check=True, capture_output=True)
    bundle = os.path.join(tmp, "origin.pem")
    with open(bundle, "w") as out:
        for part in (leaf, key):
            with open(part) as f:
                out.write(f.read())
    return ca, bundle


def tls_origin_config(tmp, port, backend_port, bundle):
    """HAProxy as the TLS origin: mode tcp, it only decrypts and passes the
    bytes to the backend, so the origin stays cheap and alike for every proxy."""
    path = os.path.join(tmp, "tls-origin.cfg")
    with open(path, "w") as f:
        f.write("""global
    nbthread 1
    maxconn 8192

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tls
    bind 127.0.0.1:%d ssl crt %s alpn http/1.1
    default_backend plain

backend plain
    server b 127.0.0.1:%d
""" % (port, bundle, backend_port))
    return path


def haproxy_config(tmp, port, backend_port, ca=None):
    server_tls = (" ssl verify required ca-file %s alpn http/1.1" % ca) if ca else ""
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write("""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:%d
    default_backend be

backend be
    server origin 127.0.0.1:%d%s
""" % (port, backend_port, server_tls))
    return path


def fmt_ms(v):
    if v is None:
        return "-"
    return "%.2fms" % v if v < 100 else "%.0fms" % v


def fmt_ratio(a, b):
    if not a or not b:
        return "-"
    return "%.2f" % (a / b)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(samples):
    """Medians over the rounds of one configuration and body size."""
    return {
        "rps": median([s["rps"] for s in samples]),
        "p50": median([s["p50"] for s in samples]),
        "p99": median([s["p99"] for s in samples]),
        "cpu": median([s["cpu"] for s in samples]),
        "eff": median([s["eff"] for s in samples]),
        "backend_cpu": median([s["backend_cpu"] for s in samples]),
        "errors": sum(s["socket_errors"] for s in samples),
        "non2xx": sum(s["non2xx"] for s in samples),
        "requests": sum(s["requests"] for s in samples),
        "rps_all": [round(s["rps"]) for s in samples],
    }


def print_table(size, summary, configs, args, ratios=RATIOS, title=None):
    print()
    if title:
        print(title)
    else:
        print("body %s: %d connections, wrk -t%d, %gs x %d rounds (medians)%s"
              % (size_name(size), args.connections, args.threads, args.duration, args.rounds,
                 "" if not args.tls else "; TLS to the upstream" + (
                     ", a new upstream connection and handshake per request (req/s = handshakes/s)"
                     if args.handshakes else ", keep-alive")))
    print("  %-17s %10s %9s %9s %10s %12s %11s %s"
          % ("", "req/s", "p50", "p99", "proxy CPU", "req/CPU-s", "backend CPU", "errors"))
    for key, label in configs:
        s = summary.get(key)
        if s is None:
            continue
        problems = []
        if s["errors"]:
            problems.append("%d socket" % s["errors"])
        if s["non2xx"]:
            problems.append("%d non-2xx" % s["non2xx"])
        cpu = "-" if key == "direct" else "%.0f%%" % (100 * s["cpu"])
        print("  %-17s %10.0f %9s %9s %10s %12.0f %10.0f%% %s"
              % (label, s["rps"], fmt_ms(s["p50"]), fmt_ms(s["p99"]), cpu, s["eff"],
                 100 * s["backend_cpu"], ", ".join(problems) or "0"))
    print("  ratios (throughput; efficiency = req/CPU-s of the proxy process):")
    width = max([20] + [len(a) + len(b) + 3 for a, b, _ in ratios
                        if summary.get(a) and summary.get(b)])
    for a, b, note in ratios:
        sa, sb = summary.get(a), summary.get(b)
        if not sa or not sb:
            continue
        eff = "" if b == "direct" else "   efficiency %s" % fmt_ratio(sa["eff"], sb["eff"])
        print("    %-*s %s%s%s" % (width, "%s / %s" % (a, b), fmt_ratio(sa["rps"], sb["rps"]),
                                 eff, note))


def db_counts(path):
    """What the `all` proxy recorded: raw rows, counted exchanges, dropped."""
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            rows = db.execute("SELECT count(*) FROM exchanges").fetchone()[0]
            counted = db.execute("SELECT coalesce(sum(count), 0) FROM minute_stats").fetchone()[0]
            dropped = db.execute("SELECT coalesce(sum(count), 0) FROM dropped").fetchone()[0]
            return rows, counted, dropped
        finally:
            db.close()
    except sqlite3.Error as e:
        return "error: %s" % e


def run_tlsload(tlsload, url, args, proxy, cafile, cpu=None, duration=None):
    """One tlsload run; returns the same fields as parse_wrk."""
    duration = args.duration if duration is None else duration
    argv = [tlsload, "--connections", str(args.connections), "--duration", "%g" % duration,
            "--cafile", cafile]
    if proxy:
        argv += ["--proxy", proxy]
    if args.handshakes:
        argv.append("--new-connection")
    argv.append(url)
    pin = None
    if cpu is not None:
        def pin():
            os.sched_setaffinity(0, {cpu})
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=duration + 60, preexec_fn=pin)
    r = {"rps": 0.0, "requests": 0, "p50": None, "p99": None, "socket_errors": 0,
         "non2xx": 0, "wrk_exit": out.returncode}
    try:
        j = json.loads(out.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        r["socket_errors"] = 1
        r["socket_detail"] = "tlsload: " + out.stderr.decode("utf-8", "replace").strip()[-300:]
        return r
    r.update(rps=j["rps"], requests=j["requests"], p50=j["p50_ms"], p99=j["p99_ms"],
             socket_errors=j["errors"], non2xx=j["non2xx"])
    if j["error"]:
        r["socket_detail"] = "first error: %s" % j["error"]
    return r


def squid_config(sdir, port, origin_ca):
    """Squid 5 with ssl-bump: peek at the client's SNI, then bump (mint a
    certificate with the squid CA made here, open a verified TLS connection
    to the origin); no cache, no access log, like the other proxies."""
    path = os.path.join(sdir, "squid.conf")
    with open(path, "w") as f:
        f.write("""http_port 127.0.0.1:%(port)d ssl-bump tls-cert=%(d)s/ca.pem tls-key=%(d)s/ca-key.pem generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s %(d)s/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=%(ca)s
acl bench src 127.0.0.1/32
http_access allow bench
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log %(d)s/cache.log
pid_filename %(d)s/squid.pid
coredump_dir %(d)s
pinger_enable off
shutdown_lifetime 1 seconds
visible_hostname statusproxy-bench
workers 1
""" % {"port": port, "d": sdir, "ca": origin_ca})
    return path


def start_squid(squid, tmp, origin_ca, cpu):
    """Squid ssl-bump, or (None, None, reason). Run as root, squid switches to
    its 'proxy' user, so its directory is that user's."""
    certgen = "/usr/lib/squid/security_file_certgen"
    if not os.access(certgen, os.X_OK):
        return None, None, "%s is missing (squid without OpenSSL? install squid-openssl)" % certgen
    sdir = os.path.join(tmp, "squid")
    os.mkdir(sdir)
    ca = os.path.join(sdir, "ca.pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(["openssl", "req", "-x509"] + ec + ["-keyout", os.path.join(sdir, "ca-key.pem"),
                    "-out", ca, "-days", "2", "-subj", "/CN=squid bench CA"],
                   check=True, capture_output=True)
    shutil.copy(origin_ca, os.path.join(sdir, "origin-ca.pem"))
    port = free_port()
    cfg = squid_config(sdir, port, os.path.join(sdir, "origin-ca.pem"))
    init = subprocess.run([certgen, "-c", "-s", os.path.join(sdir, "ssl_db"), "-M", "16MB"],
                          capture_output=True)
    if init.returncode:
        return None, None, "security_file_certgen -c failed: %s" % init.stderr.decode().strip()
    if os.geteuid() == 0:
        os.chmod(tmp, 0o711)
        for root, dirs, files in os.walk(sdir):
            for name in [root] + [os.path.join(root, x) for x in dirs + files]:
                shutil.chown(name, "proxy", "proxy")
    server = Server("squid", [squid, "-N", "-f", cfg], tmp, port=port, cpu=cpu, wait=30)
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        log = os.path.join(sdir, "cache.log")
        tail = open(log).read().strip().splitlines()[-3:] if os.path.exists(log) else []
        return None, None, "%s; %s" % (e, " / ".join(tail) or server.stderr().strip()[-300:])
    return server, ca, None


def start_statusproxy(args, tmp, sp_bin, origin_ca, cpu, key, mode):
    """statusproxy --intercept with its own CA (`ca init`) and --log-exchanges
    MODE: (Server, CA file), or None after printing why it did not start."""
    ca_dir = os.path.join(tmp, key + "-ca")
    init = subprocess.run([sp_bin, "ca", "init", "--dir", ca_dir], capture_output=True)
    if init.returncode:
        print("bench: skipping %s: `statusproxy ca init` failed (exit %d): %s"
              % (key, init.returncode, init.stderr.decode().strip()[-300:]))
        return None
    port = free_port()
    s = Server(key, [sp_bin, "run", "--listen", "127.0.0.1:%d" % port, "--admin", "off",
                     "--intercept", "--ca-dir", ca_dir, "--upstream-ca", origin_ca,
                     # CONNECT is only allowed to listed ports (443 by default).
                     "--connect-ports", str(args.origin_port),
                     "--log-exchanges", mode, "--db", os.path.join(tmp, "bench-%s.db" % key),
                     "--workers", "1"],
               tmp, port=port, cpu=cpu, ignore_sigpipe=args.ignore_sigpipe)
    try:
        return s.start(), os.path.join(ca_dir, "ca.pem")
    except RuntimeError:
        s.stop()
        msg = (s.stderr().strip().splitlines() or ["(no message)"])[0]
        if s.returncode == 2:
            print("bench: skipping %s: this build refuses `run --intercept` (exit 2: %s); "
                  "its column needs a build with interception" % (key, msg))
        else:
            print("bench: skipping %s: it did not start (exit %s): %s" % (key, s.returncode, msg))
        return None


def start_intercept(args, tmp, sp_bin, origin_ca, wanted, proxy_cpu):
    """The intercepting proxies in `wanted` that start. Returns key ->
    (Server, the CA file the client must trust); prints why others are skipped."""
    out = {}
    for key, mode in (("statusproxy", "none"), ("statusproxy-all", "all")):
        if key in wanted:
            started = start_statusproxy(args, tmp, sp_bin, origin_ca, proxy_cpu, key, mode)
            if started:
                out[key] = started
    if "mitmdump" in wanted:
        mitmdump = find_tool("mitmdump")
        if not mitmdump:
            print("bench: skipping mitmdump: not installed (make bench-deps: Debian's mitmproxy)")
        else:
            port, confdir = free_port(), os.path.join(tmp, "mitm")
            # confdir: a CA of its own, created at start; -q: no flow log.
            s = Server("mitmdump", [mitmdump, "--mode", "regular", "--listen-host", "127.0.0.1",
                                    "--listen-port", str(port), "-q",
                                    "--set", "confdir=" + confdir,
                                    "--set", "ssl_verify_upstream_trusted_ca=" + origin_ca],
                       tmp, port=port, cpu=proxy_cpu, wait=60)
            try:
                s.start()
                out["mitmdump"] = (s, os.path.join(confdir, "mitmproxy-ca-cert.pem"))
            except RuntimeError as e:
                s.stop()
                print("bench: skipping mitmdump: %s: %s" % (e, s.stderr().strip()[-300:]))
    if "squid" in wanted:
        squid = find_tool("squid")
        if not squid:
            print("bench: skipping squid: not installed (make bench-deps: squid-openssl)")
        else:
            s, ca, why = start_squid(squid, tmp, origin_ca, proxy_cpu)
            if s:
                out["squid"] = (s, ca)
            else:
                print("bench: skipping squid: %s" % why)
    return out


def intercept_rounds(args, configs, sizes, targets, one, backend, servers):
    """Warm-up, then the interleaved rounds; returns (key, size) -> samples.
    one(key, size, duration) runs tlsload against a configuration."""
    if args.warmup > 0:
        for key, _ in configs:
            for size in sizes:
                one(key, size, args.warmup)
    samples = {(k, size): [] for k, _ in configs for size in sizes}
    for rnd in range(args.rounds):
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for size in sizes:
            for key, label in order:
                proc = targets[key][0]
                cpu0, bcpu0, t0 = proc.cpu_seconds(), backend.cpu_seconds(), time.monotonic()
                r = one(key, size)
                wall = time.monotonic() - t0
                r["cpu"] = (proc.cpu_seconds() - cpu0) / wall
                r["backend_cpu"] = (backend.cpu_seconds() - bcpu0) / wall
                r["eff"] = r["requests"] / (r["cpu"] * wall) if r["cpu"] else 0.0
                r["round"] = rnd
                samples[(key, size)].append(r)
                print("  round %d  %-7s %-17s %9.0f req/s  cpu %3.0f%%%s"
                      % (rnd + 1, size_name(size), label, r["rps"], 100 * r["cpu"],
                         "" if not (r["socket_errors"] or r["non2xx"] or r["wrk_exit"])
                         else "  !! errors %d non-2xx %d exit %d %s" % (
                             r["socket_errors"], r["non2xx"], r["wrk_exit"],
                             r.get("socket_detail", ""))))
                sys.stdout.flush()
                for s in servers + [backend]:
                    if not s.alive():
                        raise RuntimeError(died(s))
    return samples


def main_intercept(args, sizes, sp_bin, backend_bin):
    """--intercept: tlsload through CONNECT and TLS interception to a TLS
    origin (HAProxy mode tcp in front of the backend), against tlsload
    straight to that origin."""
    tlsload = os.environ.get("BENCH_TLSLOAD") or os.path.join(REPO, "build", "bench", "tlsload")
    haproxy = find_tool("haproxy")
    if not os.access(tlsload, os.X_OK):
        print("bench: tlsload not found at %s (make build/bench/tlsload)" % tlsload,
              file=sys.stderr)
        return 1
    if not haproxy:
        print("bench: --intercept needs haproxy as the TLS origin (make bench-deps)",
              file=sys.stderr)
        return 1
    wanted = [k for k, _ in INTERCEPT_CONFIGS]
    if args.only:
        wanted = [k.strip() for k in args.only.split(",")]
        unknown = set(wanted) - {k for k, _ in INTERCEPT_CONFIGS}
        if unknown:
            print("bench: --only with --intercept: unknown configuration(s) %s (choose among %s)"
                  % (", ".join(sorted(unknown)), ",".join(k for k, _ in INTERCEPT_CONFIGS)),
                  file=sys.stderr)
            return 2
    proxy_cpu = 0 if args.pin else None
    load_cpu = 1 if args.pin and os.cpu_count() > 1 else None
    tmp = tempfile.mkdtemp(prefix="statusproxy-bench-")
    servers = {}
    backend = Server("backend", [backend_bin, "--listen", "127.0.0.1:0"], tmp, cpu=load_cpu)
    try:
        backend.start()
        origin_ca, bundle = make_tls_files(tmp)
        port = free_port()
        origin = Server("tls-origin", [haproxy, "-f", tls_origin_config(tmp, port, backend.port,
                                                                        bundle), "-db"],
                        tmp, port=port, cpu=load_cpu)
        servers["tls-origin"] = origin.start()
        args.origin_port = servers["tls-origin"].port
        proxies = start_intercept(args, tmp, sp_bin, origin_ca, wanted, proxy_cpu)
        servers.update({k: v[0] for k, v in proxies.items()})
        # key -> (process doing the work, --proxy, --cafile)
        targets = {k: (s, "127.0.0.1:%d" % s.port, ca) for k, (s, ca) in proxies.items()}
        if "direct" in wanted:
            targets["direct"] = (origin, None, origin_ca)
        configs = [(k, label) for k, label in INTERCEPT_CONFIGS if k in targets]
        origin_url = "https://127.0.0.1:%d" % port
        print("statusproxy bench --intercept: %s" % sp_bin)
        print("  backend on :%d behind a TLS origin (haproxy mode tcp) on :%d; load: %s" % (
            backend.port, port, tlsload))
        print("  %d CPUs, load average %s at start%s" % (
            os.cpu_count(), " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "; proxies pinned to CPU 0, tlsload and origin to CPU 1" if args.pin else ""))
        sys.stdout.flush()
        if not configs:
            print("bench: nothing to measure", file=sys.stderr)
            return 1

        def one(key, size, duration=None):
            proc, proxy, ca = targets[key]
            return run_tlsload(tlsload, "%s/bytes/%d" % (origin_url, size), args, proxy, ca,
                               load_cpu, duration)

        samples = intercept_rounds(args, configs, sizes, targets, one, backend,
                                   list(servers.values()))
        summaries = {}
        for size in sizes:
            summary = {k: summarize(samples[(k, size)]) for k, _ in configs}
            summaries[size] = summary
            title = ("body %s: %d connections, tlsload, %gs x %d rounds (medians); CONNECT and "
                     "TLS interception, %s" % (
                         size_name(size), args.connections, args.duration, args.rounds,
                         "a new connection, CONNECT and TLS handshake per request "
                         "(req/s = handshakes/s)" if args.handshakes
                         else "keep-alive inside the tunnel"))
            print_table(size, summary, configs, args, INTERCEPT_RATIOS, title)
        print()
        for key in wanted:
            if key not in targets:
                print("  %s was not measured: see why above" % dict(INTERCEPT_CONFIGS)[key])
        print("  load average %s at the end" % " ".join(f"{x:.2f}" for x in os.getloadavg()))
        labels = dict(configs)
        for key, s in servers.items():
            if s.alive():
                rss, hwm = memory_kib(s.proc.pid)
                print("  %-17s memory after the runs: RSS %.1f MiB, peak %.1f MiB"
                      % (labels.get(key, key), rss / 1024, hwm / 1024))
        if "statusproxy-all" in servers:  # stopped first, so that its writer has flushed
            stop_all([servers["statusproxy-all"]])
            counts = db_counts(os.path.join(tmp, "bench-statusproxy-all.db"))
            done = sum(r["requests"] for (k, _), v in samples.items()
                       if k == "statusproxy-all" for r in v)
            if isinstance(counts, tuple):
                print("  statusproxy all recorded %d raw rows, %d counted, %d dropped "
                      "(tlsload completed %d measured requests, plus warm-up)"
                      % (counts + (done,)))
            else:
                print("  statusproxy all database: %s" % counts)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({
                    "args": vars(args),
                    "samples": [dict(config=k, size=size, **r)
                                for (k, size), v in samples.items() for r in v],
                    "medians": {str(size): s for size, s in summaries.items()},
                }, f, indent=1)
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        stop_all(list(servers.values()) + [backend])
        if args.keep:
            print("  kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def tls_listen_haproxy_config(tmp, port, backend_port, bundle):
    """HAProxy terminating the client's TLS (bind ... ssl crt) as a gateway
    to the plain backend, like statusproxy --tls-listen."""
    path = os.path.join(tmp, "haproxy-tls.cfg")
    with open(path, "w") as f:
        f.write("""global
    nbthread 1
    maxconn 8192

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:%d ssl crt %s alpn http/1.1
    default_backend be

backend be
    server b 127.0.0.1:%d
""" % (port, bundle, backend_port))
    return path


def start_tls_listeners(args, tmp, sp_bin, backend, bundle, wanted, cpu):
    """The servers of --tls-listen that start: key -> (Server, https URL)."""
    out = {}
    leaf, key = os.path.join(tmp, "leaf.pem"), os.path.join(tmp, "leaf-key.pem")
    for name, mode in (("statusproxy", "none"), ("statusproxy-all", "all")):
        if name not in wanted:
            continue
        port = free_port()
        argv = [sp_bin, "run", "--listen", "127.0.0.1:%d" % free_port(),
                "--tls-listen", "127.0.0.1:%d" % port, "--tls-cert", leaf, "--tls-key", key,
                "--upstream", "http://127.0.0.1:%d" % backend.port, "--admin", "off",
                "--db", os.path.join(tmp, "bench-%s.db" % name), "--log-exchanges", mode,
                "--log-level", "warn"]
        out[name] = (Server(name, argv, tmp, port=port, cpu=cpu,
                            ignore_sigpipe=args.ignore_sigpipe).start(),
                     "https://127.0.0.1:%d" % port)
    haproxy = find_tool("haproxy")
    if "haproxy" in wanted and not haproxy:
        print("bench: skipping haproxy: not installed (make bench-deps)")
    elif "haproxy" in wanted:
        port = free_port()
        cfg = tls_listen_haproxy_config(tmp, port, backend.port, bundle)
        out["haproxy"] = (Server("haproxy", [haproxy, "-f", cfg, "-db"], tmp, port=port,
                                 cpu=cpu).start(), "https://127.0.0.1:%d" % port)
    return out


def main_tls_listen(args, sizes, sp_bin, backend_bin):
    """--tls-listen: tlsload straight to statusproxy's TLS listener and to
    HAProxy's `bind ... ssl crt`, both gateways to the plain backend."""
    tlsload = os.environ.get("BENCH_TLSLOAD") or os.path.join(REPO, "build", "bench", "tlsload")
    if not os.access(tlsload, os.X_OK):
        print("bench: tlsload not found at %s (make build/bench/tlsload)" % tlsload,
              file=sys.stderr)
        return 1
    wanted = [k.strip() for k in args.only.split(",")] if args.only else \
        [k for k, _ in TLS_LISTEN_CONFIGS]
    proxy_cpu = 0 if args.pin else None
    load_cpu = 1 if args.pin and os.cpu_count() > 1 else None
    tmp = tempfile.mkdtemp(prefix="statusproxy-bench-")
    servers = {}
    backend = Server("backend", [backend_bin, "--listen", "127.0.0.1:0"], tmp, cpu=load_cpu)
    try:
        backend.start()
        ca, bundle = make_tls_files(tmp)
        targets = start_tls_listeners(args, tmp, sp_bin, backend, bundle, wanted, proxy_cpu)
        servers.update({k: v[0] for k, v in targets.items()})
        configs = [(k, label) for k, label in TLS_LISTEN_CONFIGS if k in targets]
        if not configs:
            print("bench: nothing to measure", file=sys.stderr)
            return 1
        print("statusproxy bench --tls-listen: %s; backend on :%d; load: %s"
              % (sp_bin, backend.port, tlsload))

        def one(key, size, duration=None):
            return run_tlsload(tlsload, "%s/bytes/%d" % (targets[key][1], size), args, None, ca,
                               load_cpu, duration)

        samples = intercept_rounds(args, configs, sizes, targets, one, backend,
                                   list(servers.values()))
        for size in sizes:
            summary = {k: summarize(samples[(k, size)]) for k, _ in configs}
            print_table(size, summary, configs, args, TLS_LISTEN_RATIOS,
                        "body %s: %d connections, tlsload, %gs x %d rounds (medians); clients "
                        "speak TLS to the proxy, %s" % (
                            size_name(size), args.connections, args.duration, args.rounds,
                            "a new connection and full handshake per request (req/s = "
                            "handshakes/s)" if args.handshakes else "keep-alive"))
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        stop_all(list(servers.values()) + [backend])
        if args.keep:
            print("  kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run [5]")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections [50]")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    ap.add_argument("--sizes", default="64,64k",
                    help="response body sizes, comma-separated, e.g. 64,1k,64k,1m [64,64k]")
    ap.add_argument("--only", default="",
                    help="configurations to run, comma-separated among direct,none,all,haproxy,rules20"
                         " (and cand-none,cand-all with --candidate); with --intercept among "
                         "direct,statusproxy,statusproxy-all,mitmdump,squid")
    ap.add_argument("--candidate", metavar="BIN",
                    help="a second statusproxy binary to compare with STATUSPROXY_BIN in the "
                         "same run (configurations cand-none and cand-all)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of wrk against each target before measuring [1]")
    ap.add_argument("--pin", action="store_true",
                    help="pin the proxies to CPU 0 and wrk and the backend to CPU 1")
    ap.add_argument("--ignore-sigpipe", action="store_true",
                    help="start statusproxy with SIGPIPE ignored (to measure a build that "
                         "does not ignore it itself)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 1 s, no warm-up")
    ap.add_argument("--tls", action="store_true",
                    help="TLS to the upstream: the origin is HAProxy (mode tcp) terminating TLS "
                         "in front of the backend; statusproxy gets --upstream https://, HAProxy "
                         "'server ... ssl verify required', direct is wrk over https")
    ap.add_argument("--handshakes", action="store_true",
                    help="with --tls: the backend closes after every answer, so each request "
                         "costs the proxy a new upstream connection and TLS handshake "
                         "(req/s = handshakes/s)")
    ap.add_argument("--intercept", action="store_true",
                    help="HTTPS interception: tlsload sends CONNECT and speaks TLS through "
                         "statusproxy --intercept, mitmdump and squid ssl-bump to a TLS origin, "
                         "and straight to that origin (direct); with --handshakes a new "
                         "connection and handshake per request")
    ap.add_argument("--tls-listen", action="store_true",
                    help="TLS from the client: tlsload to statusproxy --tls-listen and to "
                         "HAProxy 'bind ... ssl crt', both gateways to the backend; with "
                         "--handshakes a new connection and handshake per request")
    ap.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the tmp dir (logs, databases)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 1.0, 1, 0.0
    if args.handshakes and not (args.tls or args.intercept or args.tls_listen):
        ap.error("--handshakes needs --tls, --intercept or --tls-listen")
    if args.tls_listen and (args.tls or args.intercept or args.candidate):
        ap.error("--tls-listen goes without --tls, --intercept and --candidate")
    if args.intercept and (args.tls or args.candidate):
        ap.error("--intercept goes without --tls and --candidate")
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))

    sp_bin = os.environ.get("STATUSPROXY_BIN") or os.path.join(REPO, "build", "statusproxy")
    backend_bin = os.environ.get("BENCH_BACKEND") or os.path.join(REPO, "build", "bench", "backend")
    checks = [(sp_bin, "statusproxy (make)"), (backend_bin, "the backend (make build/bench/backend)")]
    if args.candidate:
        args.candidate = os.path.abspath(args.candidate)
        checks.append((args.candidate, "the --candidate binary"))
    for path, what in checks:
        if not os.access(path, os.X_OK):
            print("bench: %s not found at %s" % (what, path), file=sys.stderr)
            return 1
    if args.intercept:
        return main_intercept(args, sizes, sp_bin, backend_bin)
    if args.tls_listen:
        return main_tls_listen(args, sizes, sp_bin, backend_bin)
    wrk = find_tool("wrk")
    if not wrk:
        print("bench: wrk is not installed (make bench-deps)", file=sys.stderr)
        return 1
    haproxy = find_tool("haproxy")

    all_configs = CONFIGS + (CANDIDATE_CONFIGS if args.candidate else [])
    wanted = [k for k, _ in all_configs]
    if args.only:
        wanted = [k.strip() for k in args.only.split(",")]
        unknown = set(wanted) - {k for k, _ in all_configs}
        if unknown:
            ap.error("--only: unknown configuration(s) %s" % ", ".join(sorted(unknown)))
    if args.tls and not haproxy:
        print("bench: --tls needs haproxy as the TLS origin (make bench-deps)", file=sys.stderr)
        return 1
    if args.tls and "rules20" in wanted:
        wanted.remove("rules20")
    if "haproxy" in wanted and not haproxy:
        print("bench: haproxy is not installed: skipping its column (make bench-deps)")
        wanted.remove("haproxy")
    configs = [(k, label) for k, label in all_configs if k in wanted]
    # statusproxy configurations: key -> (binary, --log-exchanges mode)
    sp_configs = {"none": (sp_bin, "none"), "all": (sp_bin, "all"), "rules20": (sp_bin, "none"),
                  "cand-none": (args.candidate, "none"), "cand-all": (args.candidate, "all")}
    sp_configs = {k: v for k, v in sp_configs.items() if k in wanted}

    proxy_cpu = 0 if args.pin else None
    load_cpu = 1 if args.pin and os.cpu_count() > 1 else None

    tmp = tempfile.mkdtemp(prefix="statusproxy-bench-")
    servers = {}
    backend = Server("backend", [backend_bin, "--listen", "127.0.0.1:0"]
                     + (["--close"] if args.handshakes else []), tmp, cpu=load_cpu)
    ca = None
    try:
        backend.start()
        upstream = "http://127.0.0.1:%d" % backend.port
        direct_url = "http://127.0.0.1:%d" % backend.port
        tls_args = []
        if args.tls:
            ca, bundle = make_tls_files(tmp)
            port = free_port()
            servers["tls-origin"] = Server(
                "tls-origin", [haproxy, "-f", tls_origin_config(tmp, port, backend.port, bundle),
                               "-db"], tmp, port=port, cpu=load_cpu)
            servers["tls-origin"].start()
            upstream = direct_url = "https://127.0.0.1:%d" % port
            tls_args = ["--upstream-ca", ca]
        rules20 = os.path.join(tmp, "rules20.rules")
        with open(rules20, "w") as f:
            f.write(RULES20)
        for key, (binary, mode) in sp_configs.items():
            port = free_port()
            servers[key] = Server(
                "statusproxy-" + key,
                [binary, "run", "--listen", "127.0.0.1:%d" % port, "--admin", "off",
                 "--upstream", upstream, "--db", os.path.join(tmp, "bench-%s.db" % key),
                 "--log-exchanges", mode, "--workers", "1"] + tls_args
                + (["--rules", rules20] if key == "rules20" else []),
                tmp, port=port, cpu=proxy_cpu, ignore_sigpipe=args.ignore_sigpipe)
            servers[key].start()
        if "haproxy" in wanted:
            port = free_port()
            cfg = haproxy_config(tmp, port, servers["tls-origin"].port if args.tls
                                 else backend.port, ca)
            servers["haproxy"] = Server("haproxy", [haproxy, "-f", cfg, "-db"], tmp,
                                        port=port, cpu=proxy_cpu)
            servers["haproxy"].start()
        targets = {k: "http://127.0.0.1:%d" % s.port for k, s in servers.items()}
        targets["direct"] = direct_url
        # For "direct" the process doing the work is the origin: with --tls, its
        # TLS terminator.
        direct_proc = servers.get("tls-origin", backend)

        print("statusproxy bench: %s" % sp_bin)
        if args.candidate:
            print("  candidate: %s" % args.candidate)
        print("  backend %s on :%d; wrk %s; haproxy %s" % (
            backend_bin, backend.port, wrk, haproxy or "not installed"))
        print("  %d CPUs, load average %s at start%s" % (
            os.cpu_count(), " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "; proxies pinned to CPU 0, wrk and backend to CPU 1" if args.pin else ""))
        sys.stdout.flush()

        if args.warmup > 0:
            warm = argparse.Namespace(**vars(args))
            warm.duration = args.warmup
            for key, _ in configs:
                for size in sizes:
                    run_wrk(wrk, "%s/bytes/%d" % (targets[key], size), warm,
                            load_cpu)

        samples = {(k, size): [] for k, _ in configs for size in sizes}
        for rnd in range(args.rounds):
            order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
            for size in sizes:
                for key, _ in order:
                    url = "%s/bytes/%d" % (targets[key], size)
                    proc = direct_proc if key == "direct" else servers[key]
                    cpu0, bcpu0, t0 = proc.cpu_seconds(), backend.cpu_seconds(), time.monotonic()
                    r = run_wrk(wrk, url, args, load_cpu)
                    wall = time.monotonic() - t0
                    r["cpu"] = (proc.cpu_seconds() - cpu0) / wall
                    r["backend_cpu"] = (backend.cpu_seconds() - bcpu0) / wall
                    r["eff"] = r["requests"] / (r["cpu"] * wall) if r["cpu"] else 0.0
                    r["round"] = rnd
                    samples[(key, size)].append(r)
                    print("  round %d  %-7s %-17s %9.0f req/s  cpu %3.0f%%%s"
                          % (rnd + 1, size_name(size), dict(configs)[key], r["rps"],
                             100 * r["cpu"],
                             "" if not (r["socket_errors"] or r["non2xx"] or r["wrk_exit"])
                             else "  !! %s non-2xx %d exit %d" % (
                                 r.get("socket_detail", ""), r["non2xx"], r["wrk_exit"])))
                    sys.stdout.flush()
                    for k, s in list(servers.items()) + [("direct", backend)]:
                        if not s.alive():
                            raise RuntimeError(died(s))

        summaries = {}
        for size in sizes:
            summary = {k: summarize(samples[(k, size)]) for k, _ in configs}
            summaries[size] = summary
            print_table(size, summary, configs, args)

        print()
        print("  load average %s at the end" % " ".join(f"{x:.2f}" for x in os.getloadavg()))
        labels = dict(configs)
        for key, s in servers.items():
            if s.alive():
                rss, hwm = memory_kib(s.proc.pid)
                print("  %-17s memory after the runs: RSS %.1f MiB, peak %.1f MiB"
                      % (labels.get(key, key), rss / 1024, hwm / 1024))
        stop_all([servers[k] for k in sp_configs])
        for key in sp_configs:
            s = servers[key]
            code = s.returncode
            tail = s.stderr().strip().splitlines()
            if s.killed:
                print("  %-17s !! still running %d s after SIGTERM: killed"
                      % (labels[key], STOP_WAIT))
            else:
                lost = next((ln for ln in reversed(tail) if "records lost" in ln), None)
                print("  %-17s exit %s %.1f s after SIGTERM%s"
                      % (labels[key], code if code >= 0 else signal.Signals(-code).name,
                         s.stop_seconds, "; " + lost.split("  ", 1)[-1] if lost else ""))
            problems = [ln for ln in tail if " warn " in ln or " error " in ln]
            for ln in problems[:5]:
                print("    " + ln)
            if len(problems) > 5:
                print("    ... %d more warnings/errors in %s" % (len(problems) - 5, s.err_path))
        for key in sp_configs:
            if sp_configs[key][1] != "all":
                continue
            counts = db_counts(os.path.join(tmp, "bench-%s.db" % key))
            wrk_total = sum(r["requests"] for (k, _), v in samples.items() if k == key for r in v)
            if isinstance(counts, tuple):
                print("  %s recorded %d raw rows, %d counted, %d dropped "
                      "(wrk completed %d measured requests, plus warm-up)"
                      % ((labels[key],) + counts + (wrk_total,)))
            else:
                print("  %s database: %s" % (labels[key], counts))

        if args.json:
            with open(args.json, "w") as f:
                json.dump({
                    "args": vars(args),
                    "samples": [dict(config=k, size=size, **{x: y for x, y in r.items()
                                                             if x != "wrk_output"})
                                for (k, size), v in samples.items() for r in v],
                    "medians": {str(size): s for size, s in summaries.items()},
                }, f, indent=1)
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        for s in servers.values():
            s.stop()
        backend.stop()
        if args.keep:
            print("  kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
