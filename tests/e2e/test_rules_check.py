"""End-to-end checks of `statusproxy rules check FILE` through the real binary:
exit status 0/1/2, normalized rules on stdout, FILE:LINE:COL diagnostics on
stderr. Self-contained: the binary comes from $STATUSPROXY_BIN, else
build/statusproxy under the repository root."""

import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STATUSPROXY_BIN", str(REPO / "build" / "statusproxy"))
DIAG = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|warning): (?P<msg>.+)$")


def check(*args):
    return subprocess.run([BIN, "rules", *args], capture_output=True, text=True, timeout=30)


def write(tmp_path, text, name="test.rules"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_good_file_prints_normalized_rules_and_exits_0(tmp_path):
    path = write(
        tmp_path,
        "# comment\n"
        "rule flaky-pay  method POST path /pay/* chance 10%  => abort 503 set-header Retry-After \"5\"\n"
        "rule slow path /search \\\n"
        "          every 3 => delay 100ms..400ms\n",
    )
    r = check("check", path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [
        'rule flaky-pay method POST path /pay/* chance 10% => abort 503 set-header Retry-After "5"',
        "rule slow path /search every 3 => delay 100ms..400ms",
    ]


def test_errors_exit_1_with_every_error_positioned(tmp_path):
    path = write(
        tmp_path,
        "rule a metod GET => abort 503\n"
        "rule ok => delay 1s\n"
        "rule b => abort 101\n"
        "rule a path /x\n",
    )
    r = check("check", path)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines == [
        f"{path}:1:8: error: unknown matcher 'metod' (did you mean 'method'?)",
        f"{path}:3:17: error: 'abort 101': informational statuses (1xx, 101 included) "
        "can never be the target of a rule; expected 200-599",
        f"{path}:4:6: error: duplicate rule name 'a' (first defined at line 1)",
        f"{path}:4:15: error: missing '=>' and actions after the matchers of rule 'a'",
    ]


def test_warnings_go_to_stderr_and_exit_0(tmp_path):
    path = write(tmp_path, "rule moved path /old/* => abort 301\n")
    r = check("check", path)
    assert r.returncode == 0
    assert r.stdout == "rule moved path /old/* => abort 301\n"
    m = DIAG.match(r.stderr.strip())
    assert m, r.stderr
    assert (m["file"], m["line"], m["col"], m["kind"]) == (path, "1", "33", "warning")
    assert "Location" in m["msg"]


def test_errors_and_warnings_together(tmp_path):
    path = write(tmp_path, "rule a => abort 301\nrule b => abrot 503\n")
    r = check("check", path)
    assert r.returncode == 1
    kinds = [DIAG.match(line)["kind"] for line in r.stderr.splitlines()]
    assert kinds == ["warning", "error"]


def test_empty_file_is_good(tmp_path):
    r = check("check", write(tmp_path, ""))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_unreadable_file_exits_1(tmp_path):
    missing = str(tmp_path / "nope.rules")
    r = check("check", missing)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{missing}: error: cannot read")
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [[], ["check"], ["chek", "x.rules"], ["check", "a.rules", "b.rules"]],
    ids=["no-subcommand", "no-file", "unknown-subcommand", "two-files"],
)
def test_bad_usage_exits_2_with_one_line(args):
    r = check(*args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert "statusproxy rules check FILE" in r.stderr


@pytest.mark.parametrize(
    "path", sorted((REPO / "rules").glob("*.rules")), ids=lambda p: p.name
)
def test_shipped_rule_files_are_clean(path):
    r = check("check", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    if path.name == "default.rules":
        assert r.stdout == ""  # documented, but no active rule
    else:
        assert r.stdout.count("\n") >= 3


def test_normalized_output_checks_clean_and_is_stable(tmp_path):
    first = check("check", str(REPO / "rules" / "chaos.rules"))
    assert first.returncode == 0
    again = check("check", write(tmp_path, first.stdout, "normal.rules"))
    assert (again.returncode, again.stderr, again.stdout) == (0, "", first.stdout)
