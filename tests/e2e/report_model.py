"""What `statusproxy report` must answer (DESIGN §6), computed independently
from a list of exchanges, for the report tests to compare against.

Each exchange is a dict with host, upstream, final, rule (None when absent)
and minute ("YYYY-MM-DDTHH:MM:00Z")."""

from collections import Counter
from datetime import datetime, timezone

VIEWS = ["code", "class", "host", "rule", "rewrite", "minute"]
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


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
        return sorted(rows, key=lambda r: (-r["count"], nulls_last(r["code"])))
    if view == "class":
        c = Counter(klass(r["final"]) for r in recs)
        rows = [{"class": k, "count": n, "share": n / total} for k, n in c.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["class"] is None, r["class"] or ""))
    if view in ("host", "minute"):
        rows = {}
        for r in recs:
            k = r[view]
            row = rows.setdefault(k, {view: k, "count": 0, "1xx": 0, "2xx": 0, "3xx": 0,
                                      "4xx": 0, "5xx": 0})
            row["count"] += 1
            if klass(r["final"]) in CLASSES:
                row[klass(r["final"])] += 1
        if view == "host":
            return sorted(rows.values(), key=lambda r: (-r["count"], r["host"]))
        return sorted(rows.values(), key=lambda r: r["minute"])
    if view == "rule":
        c = Counter(r["rule"] for r in recs if r["rule"])
        return sorted(({"rule": k, "count": n} for k, n in c.items()),
                      key=lambda r: (-r["count"], r["rule"]))
    if view == "rewrite":
        c = Counter((r["upstream"], r["final"], r["rule"]) for r in recs
                    if r["upstream"] is None or r["upstream"] != r["final"] or r["rule"])
        rows = [{"upstream_code": u, "code": f, "rule": ru, "count": n}
                for (u, f, ru), n in c.items()]
        return sorted(rows, key=lambda r: (-r["count"], nulls_last(r["upstream_code"]),
                                           nulls_last(r["code"]), r["rule"] is None,
                                           r["rule"] or ""))
    raise ValueError(view)
