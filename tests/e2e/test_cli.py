"""The command line contract (DESIGN §1): bad flags exit 2 with one stderr
line naming the flag, a port in use exits 1, and `codes` prints the
catalogue."""

import json
import re
import socket
import subprocess

import pytest

from helpers import SANITIZER_MARKS, free_port

# The reference list (shared/seed/http-status-codes.txt), embedded so the
# tests do not depend on shared/ at run time: code -> name without marks.
SEED = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 306: None, 307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # 306 is listed as "unused": its name is not checked


def run(binary, args, timeout=10):
    try:
        return subprocess.run([binary] + args, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail("statusproxy %s still running after %ds (it should have exited); "
                    "stderr: %r" % (" ".join(args), timeout, e.stderr))


def no_sanitizer_report(stderr):
    return [m for m in SANITIZER_MARKS if m in stderr] == []


BAD = [
    (["--listen", "nonsense"], "--listen"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--listen", "127.0.0.1"], "--listen"),
    (["--listen"], "--listen"),
    (["--bogus-flag"], "--bogus-flag"),
    (["--workers", "0"], "--workers"),
    (["--workers", "two"], "--workers"),
    (["--header-timeout", "5x"], "--header-timeout"),
    (["--response-timeout", "-1s"], "--response-timeout"),
    (["--log-exchanges", "maybe"], "--log-exchanges"),
    (["--upstream", "ftp://127.0.0.1:21"], "--upstream"),
    (["--max-connections", "-5"], "--max-connections"),
    (["--retain", "forever"], "--retain"),
]


@pytest.mark.parametrize("args,flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flag_exits_2_with_one_line_naming_it(statusproxy_bin, tmp_path, args, flag):
    base = ["run", "--admin", "127.0.0.1:%d" % free_port(), "--db", str(tmp_path / "sp.db")]
    if flag != "--listen":
        base += ["--listen", "127.0.0.1:%d" % free_port()]
    # The bad flag last, so a missing value is really missing.
    p = run(statusproxy_bin, base + args)
    assert p.returncode == 2, "exit %s, stderr %r" % (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, "stderr should be one line: %r" % p.stderr
    assert flag in lines[0]


def _held_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


@pytest.mark.parametrize("which", ["--listen", "--admin"])
def test_port_in_use_exits_1_with_a_clear_message(statusproxy_bin, tmp_path, which):
    s, port = _held_port()
    try:
        ports = {"--listen": free_port(), "--admin": free_port()}
        ports[which] = port
        p = run(statusproxy_bin, ["run", "--listen", "127.0.0.1:%d" % ports["--listen"],
                                  "--admin", "127.0.0.1:%d" % ports["--admin"],
                                  "--db", str(tmp_path / "sp.db")])
    finally:
        s.close()
    assert p.returncode == 1, "exit %s, stderr %r" % (p.returncode, p.stderr)
    err = p.stderr.lower()
    assert str(port) in err and "in use" in err, p.stderr
    assert no_sanitizer_report(p.stderr), p.stderr


def test_codes_prints_the_catalogue(statusproxy_bin):
    p = run(statusproxy_bin, ["codes"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(re.match(r"^418\s+I'm a teapot(\s|$)", l) for l in lines), p.stdout
    for code, name in SEED.items():
        assert any(re.match(r"^%d\s" % code, l) for l in lines), "%d missing" % code
        if name:
            assert any(re.match(r"^%d\s+%s(\s|$)" % (code, re.escape(name)), l)
                       for l in lines), "%d %s missing" % (code, name)


def test_codes_json_has_every_listed_code(statusproxy_bin):
    p = run(statusproxy_bin, ["codes", "--format", "json"])
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert isinstance(data, list)
    by_code = {e["code"]: e for e in data}
    assert all(isinstance(e["code"], int) for e in data)
    assert sorted(set(SEED) - set(by_code)) == []
    for code, name in SEED.items():
        if name:
            assert by_code[code]["name"] == name
        assert by_code[code]["class"] == "%dxx" % (code // 100)
