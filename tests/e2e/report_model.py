"""What `statusproxy report` must answer (DESIGN §6), computed independently
from a list of exchanges, for the report tests to compare against.

Each exchange is a dict with host, upstream, final, rule (None when absent)
and minute ("YYYY-MM-DDTHH:MM:00Z"), and for percentiles (DESIGN §11)
duration_us and route; scheme ("http" when absent, DESIGN §9) keys the host
view together with the host."""

import math
from collections import Counter
from datetime import datetime, timezone

VIEWS = ["code", "class", "host", "rule", "rewrite", "minute", "route"]
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PCT_VIEWS = ("code", "host", "rule", "route")


def bucket_value(us):
    """The value the report's histogram keeps for US: exact below 16 µs, else
    the midpoint of its bucket (16 per power of two), as histogram.c does."""
    if us < 16:
        return us
    e = us.bit_length() - 1
    width = 1 << (e - 4)
    sub = (us >> (e - 4)) & 15
    return (16 + sub) * width + width // 2


def route_of(path):
    """DESIGN §11's route of PATH (no user patterns), written apart from the C."""
    import re
    def seg(x):
        if x.isdigit():
            return "{n}"
        if re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}", x):
            return "{uuid}"
        if len(x) >= 8 and re.fullmatch(r"[0-9a-fA-F]+", x) and re.search(r"\d", x):
            return "{hex}"
        if len(x) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", x) and re.search(r"\d", x) \
                and re.search(r"[A-Za-z]", x):
            return "{token}"
        return x
    return "/".join(seg(x) for x in path.split("/")) if path else "/"


class AnyMs:
    """Stands for a percentile the model cannot know (durations of real
    traffic that left no raw row): equal to any number of milliseconds."""

    def __eq__(self, other):
        return isinstance(other, float)

    def __repr__(self):
        return "<any ms>"


ANY_MS = AnyMs()


def percentile_ms(durations, q):
    """Nearest-rank quantile Q of DURATIONS (µs) as the report gives it, in ms;
    ANY_MS when a duration is unknown (None)."""
    if not durations:
        return None
    if any(d is None for d in durations):
        return ANY_MS
    kept = sorted(bucket_value(d) for d in durations)
    rank = max(1, min(len(kept), math.ceil(q * len(kept))))
    return kept[rank - 1] / 1000.0


def add_percentiles(row, durations):
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        row[name] = percentile_ms(durations, q)
    return row


def with_pcts(rows, key, recs, keyof):
    """Add p50/p95/p99 to ROWS (their key field(s) KEY) from RECS grouped by KEYOF."""
    groups = {}
    for r in recs:
        groups.setdefault(keyof(r), []).append(r.get("duration_us"))
    for row in rows:
        add_percentiles(row, groups.get(tuple(row[k] for k in key), []))
    return rows


def klass(code):
    if code is None:
        return None
    return "%dxx" % (code // 100) if 100 <= code <= 599 else "invalid"


def nulls_last(v):
    return (v is None, v if v is not None else 0)


def minute_of_ms(ms):
    return datetime.fromtimestamp(ms // 60000 * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")


def expected_rows(view, recs, names=None):
    """The rows of --by VIEW for RECS, in the report's order. NAMES maps codes
    to catalogue names (for the code view)."""
    total = len(recs)
    if view == "code":
        c = Counter(r["final"] for r in recs)
        rows = [{"code": k, "name": names.get(k) if k is not None else None,
                 "class": klass(k), "count": n, "share": n / total} for k, n in c.items()]
        rows = with_pcts(rows, ("code",), recs, lambda r: (r["final"],))
        return sorted(rows, key=lambda r: (-r["count"], nulls_last(r["code"])))
    if view == "class":
        c = Counter(klass(r["final"]) for r in recs)
        rows = [{"class": k, "count": n, "share": n / total} for k, n in c.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["class"] is None, r["class"] or ""))
    if view in ("host", "minute"):
        rows = {}
        for r in recs:
            if view == "host":
                k = (r["host"], r.get("scheme", "http"))
                first = {"host": k[0], "scheme": k[1]}
            else:
                k = r[view]
                first = {view: k}
            row = rows.setdefault(k, dict(first, **{"count": 0, "1xx": 0, "2xx": 0, "3xx": 0,
                                                    "4xx": 0, "5xx": 0}))
            row["count"] += 1
            if klass(r["final"]) in CLASSES:
                row[klass(r["final"])] += 1
        if view == "host":
            rows = with_pcts(list(rows.values()), ("host", "scheme"), recs,
                             lambda r: (r["host"], r.get("scheme", "http")))
            return sorted(rows, key=lambda r: (-r["count"], r["host"], r["scheme"]))
        return sorted(rows.values(), key=lambda r: r["minute"])
    if view == "rule":
        c = Counter(r["rule"] for r in recs if r["rule"])
        rows = with_pcts([{"rule": k, "count": n} for k, n in c.items()], ("rule",), recs,
                         lambda r: (r["rule"],))
        return sorted(rows, key=lambda r: (-r["count"], r["rule"]))
    if view == "route":
        rows = {}
        for r in recs:
            k = (r["host"], r.get("route"))
            row = rows.setdefault(k, {"host": k[0], "route": k[1], "count": 0, "1xx": 0,
                                      "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0})
            row["count"] += 1
            if klass(r["final"]) in CLASSES:
                row[klass(r["final"])] += 1
        rows = with_pcts(list(rows.values()), ("host", "route"), recs,
                         lambda r: (r["host"], r.get("route")))
        return sorted(rows, key=lambda r: (-r["count"], r["host"], r["route"] is None,
                                           r["route"] or ""))
    if view == "rewrite":
        c = Counter((r["upstream"], r["final"], r["rule"]) for r in recs
                    if r["upstream"] is None or r["upstream"] != r["final"] or r["rule"])
        rows = [{"upstream_code": u, "code": f, "rule": ru, "count": n}
                for (u, f, ru), n in c.items()]
        return sorted(rows, key=lambda r: (-r["count"], nulls_last(r["upstream_code"]),
                                           nulls_last(r["code"]), r["rule"] is None,
                                           r["rule"] or ""))
    raise ValueError(view)
