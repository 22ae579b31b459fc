"""Fixtures for statusproxy's end-to-end tests.

  statusproxy_bin  path of the binary: $STATUSPROXY_BIN, else <repo>/build/statusproxy
  backend          a started backend.Backend (per test); .url, .port, counters, .log
  refused_port     a 127.0.0.1 port with nothing listening
  proxy_factory    proxy_factory(upstream=None, args=(), env=None) -> helpers.Proxy,
                   started on free --listen/--admin ports with --db in tmp_path
  proxy            proxy_factory(upstream=backend.url)

Every proxy a test starts is stopped with SIGTERM right after the test body
(within 10 s); the test FAILS if the exit status is not 0 or its stderr
holds a sanitizer report.
"""

import os

import pytest

from backend import Backend, refused_port as _refused_port
from helpers import Proxy

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def statusproxy_bin():
    path = os.environ.get("STATUSPROXY_BIN") or os.path.join(REPO, "build", "statusproxy")
    if not os.access(path, os.X_OK):
        pytest.fail("statusproxy binary not found at %s (run make, or set STATUSPROXY_BIN)"
                    % path)
    return path


@pytest.fixture
def backend():
    b = Backend().start()
    yield b
    b.stop()


@pytest.fixture
def refused_port():
    return _refused_port()


@pytest.fixture
def proxy_factory(request, statusproxy_bin, tmp_path):
    started = []
    request.node._statusproxy_procs = started

    def start(upstream=None, args=(), env=None, wait=10.0):
        p = Proxy(statusproxy_bin, str(tmp_path), upstream=upstream, args=args, env=env,
                  name="proxy%d" % len(started))
        started.append(p)
        p.start(wait=wait)
        return p

    yield start
    # Normally stopped already by pytest_runtest_call below; this catches a
    # proxy left running when the test never reached its body.
    problems = []
    for p in started:
        for prob in p.stop():
            problems.append("statusproxy %s: %s" % (p.argv, prob))
    if problems:
        pytest.fail("\n".join(problems) + "\n" + "\n".join(_stderr_tail(p) for p in started))


@pytest.fixture
def proxy(proxy_factory, backend):
    return proxy_factory(upstream=backend.url)


def _stderr_tail(p, n=60):
    lines = p.stderr().splitlines()
    return "--- stderr of %s (last %d lines) ---\n%s" % (p.argv[0], n, "\n".join(lines[-n:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Stop the test's proxies as part of the test itself, so that an unclean
    exit (status != 0, sanitizer report) fails the test, not only its
    teardown."""
    outcome = yield
    procs = getattr(item, "_statusproxy_procs", [])
    problems = []
    for p in procs:
        for prob in p.stop():
            problems.append("statusproxy %s: %s" % (" ".join(p.argv[1:]), prob))
    for p in procs:
        err = p.stderr()
        if err:
            item.add_report_section("call", "statusproxy stderr (%d)" % p.port, err[-20000:])
    if problems and outcome.excinfo is None:
        raise AssertionError("statusproxy did not exit cleanly:\n" + "\n".join(problems)
                             + "\n" + "\n".join(_stderr_tail(p) for p in procs))
