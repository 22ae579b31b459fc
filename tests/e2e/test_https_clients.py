"""Real HTTPS clients against statusproxy's TLS listener (DESIGN §9,
issue 10's client matrix), each trusting the test CA the way the README
says: curl --cacert, Python urllib with SSL_CERT_FILE and requests with
REQUESTS_CA_BUNDLE, Node.js with NODE_EXTRA_CA_CERTS (https.get and fetch),
and headless Chromium with --ignore-certificate-errors-spki-list (a page
whose script does a fetch()). The records must show every exchange with
scheme https, and a client that does not trust the CA as tls_client.

The same clients through interception (--intercept: Node with a raw
CONNECT then tls.connect, Chromium with --proxy-server) see the proxy's
minted certificates, trusted through the statusproxy CA."""

import base64
import hashlib
import shutil
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import wait_exchanges
from tls_listen_support import BIN, clean_env, make_pki, openssl, start_tls_listener

NODE = shutil.which("node") or shutil.which("nodejs")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = b"""<!doctype html><html><body><div id="out">pending</div><script>
fetch('/api.json').then(function (r) { return r.text().then(function (t) {
  document.getElementById('out').textContent = 'fetched ' + r.status + ' ' + t.trim(); }); })
 .catch(function (e) { document.getElementById('out').textContent = 'failed ' + e; });
</script></body></html>
"""


class Site(BaseHTTPRequestHandler):
    """The origin behind the proxy: a page, the JSON its script fetches."""

    def do_GET(self):
        if self.path == "/index.html":
            body, ctype = PAGE, "text/html"
        elif self.path == "/api.json":
            body, ctype = b'{"ok": 1}\n', "application/json"
        else:
            body, ctype = b"not here\n", "text/plain"
        self.send_response(200 if ctype != "text/plain" else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def site():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    p = make_pki(d)
    # The leaf followed by the CA: a chain Chromium can match the CA's SPKI in.
    p["chain"] = d / "chain.pem"
    p["chain"].write_text(p["cert"].read_text() + p["ca"].read_text())
    return p


def spki_sha256(cert, cwd):
    pub = openssl("x509", "-in", str(cert), "-pubkey", "-noout", cwd=cwd).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.encode(),
                         capture_output=True, check=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def https_rows(db, n):
    rows = wait_exchanges(db, lambda rs: len(rs) >= n, timeout=10)
    return [(r["scheme"], r["path"] or None, r["final_code"], r["error"]) for r in rows]


# -- Python and curl -----------------------------------------------------------------


def test_python_urllib_requests_and_curl(proxy_factory, site, pki, tmp_path):
    p = start_tls_listener(proxy_factory, site, pki)
    url = "https://localhost:%d/api.json" % p.tls_port
    script = ("import sys, urllib.request, requests\n"
              "print(urllib.request.urlopen(sys.argv[1]).read().decode().strip())\n"
              "print(requests.get(sys.argv[1]).text.strip())\n")
    env = clean_env()
    env.update(SSL_CERT_FILE=str(pki["ca"]), REQUESTS_CA_BUNDLE=str(pki["ca"]))
    r = subprocess.run(["/usr/bin/python3", "-c", script, url], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['{"ok": 1}', '{"ok": 1}'], r.stdout
    c = subprocess.run(["curl", "-sS", "--cacert", str(pki["ca"]), url], capture_output=True,
                       text=True, env=clean_env(), timeout=60)
    assert c.returncode == 0 and c.stdout.strip() == '{"ok": 1}', c.stderr
    assert https_rows(p.db, 3) == [("https", "/api.json", 200, None)] * 3


# -- Node.js --------------------------------------------------------------------------

NODE_SCRIPT = r"""
const https = require('https');
const port = +process.argv[2];
https.get({host: 'localhost', port, path: '/api.json', ALPNProtocols: ['h2', 'http/1.1']}, res => {
  const alpn = res.socket.alpnProtocol;
  let b = '';
  res.on('data', d => b += d);
  res.on('end', async () => {
    console.log('get', res.statusCode, alpn, b.trim());
    try {
      const r = await fetch(`https://localhost:${port}/index.html`);
      const t = await r.text();
      console.log('fetch', r.status, t.includes('id="out"'));
    } catch (e) {
      console.log('fetch-error', e.cause ? e.cause.code : e.message);
    }
  });
}).on('error', e => console.log('get-error', e.code));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install -y nodejs)")
def test_node_https_get_and_fetch(proxy_factory, site, pki, tmp_path):
    p = start_tls_listener(proxy_factory, site, pki)
    js = tmp_path / "client.js"
    js.write_text(NODE_SCRIPT)
    env = clean_env()
    env["NODE_EXTRA_CA_CERTS"] = str(pki["ca"])
    r = subprocess.run([NODE, str(js), str(p.tls_port)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.stdout.splitlines() == ['get 200 http/1.1 {"ok": 1}', "fetch 200 true"], \
        (r.stdout, r.stderr)
    assert https_rows(p.db, 2) == [("https", "/api.json", 200, None),
                                   ("https", "/index.html", 200, None)]


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install -y nodejs)")
def test_node_without_the_ca_is_tls_client(proxy_factory, site, pki, tmp_path):
    """Node checks the certificate after the handshake and hangs up without
    an alert: recorded as tls_client all the same."""
    p = start_tls_listener(proxy_factory, site, pki)
    js = tmp_path / "client.js"
    js.write_text(NODE_SCRIPT)
    r = subprocess.run([NODE, str(js), str(p.tls_port)], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert r.stdout.splitlines() == ["get-error UNABLE_TO_VERIFY_LEAF_SIGNATURE"], \
        (r.stdout, r.stderr)
    assert https_rows(p.db, 1) == [("https", None, None, "tls_client")]


# -- Chromium -------------------------------------------------------------------------


def chromium_dom(url, spki, budget_ms=5000, extra=()):
    profile = tempfile.mkdtemp(prefix="sp-chromium-")
    try:
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile,
             "--ignore-certificate-errors-spki-list=" + spki,
             "--virtual-time-budget=%d" % budget_ms, *extra, "--dump-dom", url],
            capture_output=True, text=True, timeout=120, env=clean_env())
        return r.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_page_and_fetch_trusting_the_ca_spki(proxy_factory, site, pki, tmp_path):
    """With the chain (leaf + CA) served, the CA's SPKI hash is enough: the
    same flag then trusts every certificate that CA signs."""
    chain = dict(pki, cert=pki["chain"])
    p = start_tls_listener(proxy_factory, site, chain)
    dom = chromium_dom("https://localhost:%d/index.html" % p.tls_port,
                       spki_sha256(pki["ca"], tmp_path))
    assert '<div id="out">fetched 200 {"ok": 1}</div>' in dom, dom[:2000]
    rows = https_rows(p.db, 2)
    assert ("https", "/index.html", 200, None) in rows and \
        ("https", "/api.json", 200, None) in rows, rows
    assert not [r for r in rows if r[3]], rows


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_rejects_leaf_only_chain_with_ca_spki(proxy_factory, site, pki, tmp_path):
    """The CA's SPKI does not help when only the leaf is served (Chromium
    cannot see the CA): the page fails and the proxy records tls_client.
    The leaf's own SPKI then works."""
    p = start_tls_listener(proxy_factory, site, pki)
    url = "https://localhost:%d/index.html" % p.tls_port
    dom = chromium_dom(url, spki_sha256(pki["ca"], tmp_path), budget_ms=2000)
    assert "fetched" not in dom
    wait_exchanges(p.db, lambda rs: any(r["error"] == "tls_client" for r in rs), timeout=10)
    dom = chromium_dom(url, spki_sha256(pki["cert"], tmp_path))
    assert '<div id="out">fetched 200 {"ok": 1}</div>' in dom, dom[:2000]


# -- through interception (--intercept, the client uses the proxy) --------------------


@pytest.fixture
def tls_site(pki):
    """The same site over TLS (the leaf for localhost from the test PKI)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def intercepting(proxy_factory, pki, tls_site, tmp_path):
    """A forward proxy intercepting every CONNECT with its own CA (`ca init`),
    verifying the origin against the test PKI's CA."""
    ca = tmp_path / "spca"
    r = subprocess.run([str(BIN), "ca", "init", "--dir", str(ca)], capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert r.returncode == 0, r.stderr
    p = proxy_factory(args=["--intercept", "--ca-dir", str(ca), "--upstream-ca", str(pki["ca"]),
                            "--connect-ports", str(tls_site)])
    p.ca = ca
    p.origin_port = tls_site
    return p


NODE_CONNECT = r"""
const http = require('http');
const tls = require('tls');
const [proxyPort, originPort] = process.argv.slice(2).map(Number);
const req = http.request({host: '127.0.0.1', port: proxyPort, method: 'CONNECT',
                          path: `localhost:${originPort}`});
req.on('connect', (res, socket) => {
  const t = tls.connect({socket, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1']}, () => {
    t.write(`GET /api.json HTTP/1.1\r\nHost: localhost:${originPort}\r\nConnection: close\r\n\r\n`);
  });
  let data = '';
  t.on('data', d => data += d);
  t.on('end', () => console.log('connect', res.statusCode, t.alpnProtocol, data.split('\r\n')[0],
                                data.split('\r\n\r\n')[1].trim()));
  t.on('error', e => console.log('tls-error', e.code));
});
req.on('error', e => console.log('proxy-error', e.code));
req.end();
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install -y nodejs)")
def test_node_through_interception(intercepting, tmp_path):
    p = intercepting
    js = tmp_path / "connect.js"
    js.write_text(NODE_CONNECT)
    env = clean_env()
    env["NODE_EXTRA_CA_CERTS"] = str(p.ca / "ca.pem")
    r = subprocess.run([NODE, str(js), str(p.port), str(p.origin_port)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.stdout.splitlines() == ['connect 200 http/1.1 HTTP/1.1 200 OK {"ok": 1}'], \
        (r.stdout, r.stderr)
    rows = wait_exchanges(p.db, lambda rs: any(x["path"] == "/api.json" for x in rs), timeout=10)
    row = [x for x in rows if x["path"] == "/api.json"][0]
    assert (row["scheme"], row["upstream_code"], row["final_code"], row["host"]) == \
        ("https", 200, 200, "localhost"), row
    # Without the CA Node refuses the minted certificate (the CA certificate
    # travels after the leaf, so Node sees an untrusted self-signed root in
    # the chain): tls_client.
    r = subprocess.run([NODE, str(js), str(p.port), str(p.origin_port)], capture_output=True,
                       text=True, env=clean_env(), timeout=60)
    assert r.stdout.splitlines() == ["tls-error SELF_SIGNED_CERT_IN_CHAIN"], \
        (r.stdout, r.stderr)
    wait_exchanges(p.db, lambda rs: any(x["error"] == "tls_client" for x in rs), timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_through_interception(intercepting, tmp_path):
    p = intercepting
    dom = chromium_dom("https://localhost:%d/index.html" % p.origin_port,
                       spki_sha256(p.ca / "ca.pem", tmp_path),
                       extra=["--proxy-server=http://127.0.0.1:%d" % p.port,
                              "--proxy-bypass-list=<-loopback>"])
    assert '<div id="out">fetched 200 {"ok": 1}</div>' in dom, dom[:2000]
    rows = wait_exchanges(p.db, lambda rs: len([x for x in rs if x["scheme"] == "https"]) >= 2,
                          timeout=10)
    got = {(x["path"], x["final_code"]) for x in rows if x["scheme"] == "https"}
    assert {("/index.html", 200), ("/api.json", 200)} <= got, rows
