"""Generate exchange records for audit_feed: N records spread evenly over the
SPAN minutes before END (Unix seconds), with a skewed mix of hosts, statuses,
rewrites by rules, aborts, upstream failures and resets, paths of eight
routes with id-like segments (/users/{n}, /items/{uuid}, ...), log-normal
durations per route, and Retry-After on 429 and some 503. Deterministic.

    python3 tests/tools/gen_records.py 10000000 1440 | build/tests/audit_feed --db big.db
    build/statusproxy report --db big.db --by code
"""
import math
import random
import sys

# (path format, weight, median duration in µs); %(n)d, %(u)s, %(h)s, %(t)s are
# filled per record so that paths vary but routes do not.
ROUTES = [("/users/%(n)d", 30, 8000), ("/users/%(n)d/orders/%(m)d", 15, 20000),
          ("/items/%(u)s", 20, 12000), ("/static/%(h)s", 15, 1500),
          ("/s/%(t)s", 5, 30000), ("/api/v2/search", 8, 90000), ("/health", 5, 300),
          ("/p/%(n)d", 2, 5000)]


def main():
    n = int(sys.argv[1])
    span_min = int(sys.argv[2]) if len(sys.argv) > 2 else 1440
    end_ms = int(sys.argv[3]) * 1000 if len(sys.argv) > 3 else 1795000000000
    rnd = random.Random(7)
    start_ms = end_ms - span_min * 60000
    hosts = ["api%d.example" % i for i in range(20)]
    host_weights = [1.0 / (i + 1) for i in range(20)]
    # (upstream code, final code, rule, weight); None: absent.
    mix = [(200, 200, "", 70), (201, 201, "", 3), (204, 204, "", 2), (304, 304, "", 3),
           (301, 301, "", 1), (404, 404, "", 2), (404, 200, "hide-404", 0.5),
           (400, 400, "", 0.5), (401, 401, "", 0.5), (500, 500, "", 0.5),
           (500, 503, "mask-5xx", 0.3), (None, 502, "", 0.3), (None, 504, "", 0.2),
           (None, 503, "flaky-pay", 0.5), (None, None, "kill", 0.1), (429, 429, "", 0.3)]
    picks = rnd.choices(mix, [m[3] for m in mix], k=n)
    host_picks = rnd.choices(hosts, host_weights, k=n)
    route_picks = rnd.choices(range(len(ROUTES)), [r[1] for r in ROUTES], k=n)
    # Log-normal factors (sigma 0.8), reused cyclically: cheap per record.
    factors = [math.exp(rnd.gauss(0, 0.8)) for _ in range(4099)]
    step = span_min * 60000 / n
    out, buf = sys.stdout, []
    for i in range(n):
        up, fin, rule, _ = picks[i]
        fmt, _, median = ROUTES[route_picks[i]]
        path = fmt % {"n": i % 100000, "m": i % 97, "u": "%08x-0000-4000-8000-%012x" % (i, i),
                      "h": "%010x" % (i * 2654435761 % (1 << 40)), "t": "tk%014dZ" % i}
        retry_after = 2000 if fin == 429 or (fin == 503 and i % 2) else 0
        buf.append("%d\t10.0.0.%d\tGET\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t300\t2000\t%d\n" % (
            start_ms + int(i * step), i % 250, host_picks[i], path,
            "-" if up is None else up, "-" if fin is None else fin, rule or "-",
            "set-status" if rule else "-", "-" if up is not None else "connect_refused",
            int(median * factors[i % 4099]), retry_after))
        if len(buf) >= 100000:
            out.write("".join(buf))
            buf = []
    out.write("".join(buf))


if __name__ == "__main__":
    main()
