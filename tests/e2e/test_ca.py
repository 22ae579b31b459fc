"""The local CA (DESIGN §9): `statusproxy ca init [--dir DIR]` through the
real binary — the files it writes, checked with the openssl CLI; refusing to
overwrite; bad flags; the trust instructions; the $HOME default — and leaf
certificates minted from that CA (by the test tool build/tests/mint_leaf,
which uses the proxy's own tls_ca module) accepted by real TLS clients:
curl and Python's ssl against `openssl s_server`, for a DNS name, an IPv4
and an IPv6 literal, and refused without the CA."""

import os
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import SANITIZER_MARKS, SServer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATUSPROXY_BIN", REPO / "build" / "statusproxy")).resolve()
MINT = BIN.parent / "tests" / "mint_leaf"

CLIENT_HINTS = [
    "--cacert", "SSL_CERT_FILE=", "REQUESTS_CA_BUNDLE=", "NODE_EXTRA_CA_CERTS=",
    "certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n statusproxy -i",
    "/usr/local/share/ca-certificates/statusproxy.crt && update-ca-certificates",
]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                                "ssl_cert_file", "ssl_cert_dir", "curl_ca_bundle")}
    env.update(extra)
    return env


def ca_init(*args, env=None):
    out = subprocess.run([str(BIN), "ca", "init", *args], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL, env=env or clean_env())
    assert not [m for m in SANITIZER_MARKS if m in out.stderr], out.stderr
    return out


def openssl(*args):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def ca_dir(tmp_path):
    d = tmp_path / "ca"
    out = ca_init("--dir", str(d))
    assert out.returncode == 0, out.stderr
    return d


def test_ca_init_writes_a_ca(ca_dir):
    cert, key = ca_dir / "ca.pem", ca_dir / "ca-key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    text = openssl("x509", "-in", str(cert), "-noout", "-text").stdout
    assert "CA:TRUE" in text
    assert "X509v3 Basic Constraints: critical" in text
    assert "X509v3 Key Usage: critical" in text and "Certificate Sign, CRL Sign" in text
    assert "X509v3 Subject Key Identifier" in text
    assert "ecdsa-with-SHA256" in text and "prime256v1" in text
    assert "CN = statusproxy local CA (" in text
    v = openssl("verify", "-CAfile", str(cert), str(cert))
    assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    # the key file is an unencrypted private key that belongs to the certificate
    pub_from_key = openssl("pkey", "-in", str(key), "-pubout").stdout
    pub_from_cert = openssl("x509", "-in", str(cert), "-noout", "-pubkey").stdout
    assert pub_from_key and pub_from_key == pub_from_cert
    # about ten years
    end = openssl("x509", "-in", str(cert), "-noout", "-checkend", str(9 * 365 * 86400))
    assert end.returncode == 0, end.stdout


def test_ca_init_twice_refuses_and_keeps_files(ca_dir):
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    out = ca_init("--dir", str(ca_dir))
    assert out.returncode == 1
    assert "already exists" in out.stderr and str(ca_dir) in out.stderr
    assert out.stdout == ""
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before


def test_ca_init_refuses_when_only_the_certificate_exists(tmp_path):
    d = tmp_path / "half"
    d.mkdir()
    (d / "ca.pem").write_text("not mine\n")
    out = ca_init("--dir=%s" % d)
    assert out.returncode == 1, out.stderr
    assert "ca.pem already exists" in out.stderr
    assert sorted(p.name for p in d.iterdir()) == ["ca.pem"]
    assert (d / "ca.pem").read_text() == "not mine\n"


def test_ca_init_missing_parent_is_an_error(tmp_path):
    d = tmp_path / "no" / "such" / "dir"
    out = ca_init("--dir", str(d))
    assert out.returncode == 1
    assert str(d) in out.stderr and "cannot create the directory" in out.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("args,flag", [
    (["--bogus"], "--bogus"),
    (["--dir"], "--dir"),
    (["--dir", ""], "--dir"),
    (["-x"], "-x"),
])
def test_ca_init_bad_flags_exit_2(tmp_path, args, flag):
    out = ca_init(*args, env=clean_env(HOME=str(tmp_path)))
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], out.stderr
    assert not (tmp_path / ".statusproxy").exists()


@pytest.mark.parametrize("args", [[], ["frobnicate"]])
def test_ca_bad_subcommand_exits_2(args):
    out = subprocess.run([str(BIN), "ca", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "subcommand" in out.stderr and "ca init" in out.stderr


def test_ca_init_prints_trust_instructions(tmp_path):
    d = tmp_path / "trust"
    out = ca_init("--dir", str(d))
    assert out.returncode == 0, out.stderr
    cert = str(d / "ca.pem")
    for hint in CLIENT_HINTS:
        assert hint in out.stdout, hint
    assert "curl --cacert %s" % cert in out.stdout
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert "export %s=%s" % (var, cert) in out.stdout
    assert "-i %s" % cert in out.stdout
    assert "cp %s /usr/local" % cert in out.stdout


def test_ca_init_relative_dir_prints_absolute_paths(tmp_path):
    out = subprocess.run([str(BIN), "ca", "init", "--dir", "rel"], capture_output=True,
                         text=True, timeout=30, cwd=str(tmp_path), env=clean_env())
    assert out.returncode == 0, out.stderr
    assert "--cacert %s" % (tmp_path / "rel" / "ca.pem") in out.stdout


def test_ca_init_defaults_to_home(tmp_path):
    out = ca_init(env=clean_env(HOME=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    d = tmp_path / ".statusproxy"
    assert (d / "ca.pem").is_file() and (d / "ca-key.pem").is_file()
    assert stat.S_IMODE(os.stat(d / "ca-key.pem").st_mode) == 0o600
    assert str(d / "ca.pem") in out.stdout
    again = ca_init(env=clean_env(HOME=str(tmp_path)))
    assert again.returncode == 1


# -- minted leaves in real TLS handshakes ------------------------------------------


def mint(ca_dir, out_dir, *names):
    cert, key = out_dir / "leaf.pem", out_dir / "leaf-key.pem"
    r = subprocess.run([str(MINT), "--dir", str(ca_dir), "--cert", str(cert), "--key", str(key),
                        *names], capture_output=True, text=True, timeout=30)
    assert not [m for m in SANITIZER_MARKS if m in r.stderr], r.stderr
    return r, cert, key


@pytest.fixture
def servers(tmp_path):
    started = []

    def start(cert, key, host="127.0.0.1"):
        s = SServer(cert, key, str(tmp_path), host=host)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def curl(url, *args):
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null",
                           "-w", "%{http_code}", "--max-time", "20", *args, url],
                          capture_output=True, text=True, timeout=30, env=clean_env())


def python_get(host, port, server_hostname, cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def test_minted_leaf_for_a_name_accepted_by_curl_and_python(ca_dir, tmp_path, servers):
    r, cert, key = mint(ca_dir, tmp_path, "api.intercepted.test")
    assert r.returncode == 0, r.stderr
    s = servers(cert, key)
    url = "https://api.intercepted.test:%d/" % s.port
    resolve = "api.intercepted.test:%d:127.0.0.1" % s.port
    ok = curl(url, "--cacert", str(ca_dir / "ca.pem"), "--resolve", resolve)
    assert ok.returncode == 0 and ok.stdout == "200", ok.stderr
    # without the CA: the system store does not know it
    bad = curl(url, "--resolve", resolve)
    assert bad.returncode == 60, (bad.returncode, bad.stderr)
    # the CA, but a name the certificate is not for
    other = curl("https://other.test:%d/" % s.port, "--cacert", str(ca_dir / "ca.pem"),
                 "--resolve", "other.test:%d:127.0.0.1" % s.port)
    assert other.returncode == 60, (other.returncode, other.stderr)
    body = python_get("127.0.0.1", s.port, "api.intercepted.test", ca_dir / "ca.pem")
    assert body.startswith(b"HTTP/1.0 200") and b"s_server" in body
    with pytest.raises(ssl.SSLCertVerificationError):
        python_get("127.0.0.1", s.port, "api.intercepted.test", _other_ca(tmp_path))


def _other_ca(tmp_path):
    d = tmp_path / "other-ca"
    assert ca_init("--dir", str(d)).returncode == 0
    return d / "ca.pem"


def test_minted_leaf_for_ipv4_literal(ca_dir, tmp_path, servers):
    r, cert, key = mint(ca_dir, tmp_path, "127.0.0.1")
    assert r.returncode == 0, r.stderr
    s = servers(cert, key)
    ok = curl("https://127.0.0.1:%d/" % s.port, "--cacert", str(ca_dir / "ca.pem"))
    assert ok.returncode == 0 and ok.stdout == "200", ok.stderr
    assert curl("https://127.0.0.1:%d/" % s.port).returncode == 60
    assert "IP Address:127.0.0.1" in openssl("x509", "-in", str(cert), "-noout", "-text").stdout


def _has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_minted_leaf_for_ipv6_literal(ca_dir, tmp_path, servers):
    r, cert, key = mint(ca_dir, tmp_path, "[::1]")
    assert r.returncode == 0, r.stderr
    s = servers(cert, key, host="::1")
    ok = curl("https://[::1]:%d/" % s.port, "--cacert", str(ca_dir / "ca.pem"))
    assert ok.returncode == 0 and ok.stdout == "200", ok.stderr
    assert curl("https://[::1]:%d/" % s.port).returncode == 60
    body = python_get("::1", s.port, "::1", ca_dir / "ca.pem")
    assert b"s_server" in body


def test_loading_refuses_a_readable_key(ca_dir, tmp_path):
    key = ca_dir / "ca-key.pem"
    os.chmod(key, 0o644)
    r, cert, _ = mint(ca_dir, tmp_path, "x.test")
    assert r.returncode == 1
    assert str(key) in r.stderr and "chmod 600 %s" % key in r.stderr
    os.chmod(key, 0o600)
    r, cert, _ = mint(ca_dir, tmp_path, "x.test")
    assert r.returncode == 0, r.stderr
    v = openssl("verify", "-CAfile", str(ca_dir / "ca.pem"), str(cert))
    assert v.returncode == 0, v.stdout + v.stderr
