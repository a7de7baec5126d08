"""``policy test`` / ``eval`` / ``check``: exit codes, formats, coverage thresholds."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from hardened_launcher.cli import main
from hardened_launcher.policy.testing import parse_threshold, run_tests

LIBRARY = Path(__file__).resolve().parents[2] / "policies"

POLICY = """package spacelift
import rego.v1
deny contains "not main" if {
	input.branch != "main"
}
deny contains "frozen" if {
	input.frozen
}
deny contains "never tested" if {
	input.other
}
"""
TESTS = """package spacelift_test
import rego.v1
import data.spacelift
test_main_allowed if { count(spacelift.deny) == 0 with input as {"branch": "main"} }
test_dev_denied if { "not main" in spacelift.deny with input as {"branch": "dev"} }
test_frozen if { "frozen" in spacelift.deny with input as {"branch": "main", "frozen": true} }
todo_test_later if { false }
"""


def project(tmp_path: Path, tests: str = TESTS) -> Path:
    (tmp_path / "policy.rego").write_text(POLICY)
    (tmp_path / "policy_test.rego").write_text(tests)
    return tmp_path


def test_library_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(LIBRARY), "--coverage", "--threshold", "100"]) == 0
    assert "PASS: " in capsys.readouterr().out


def test_library_policies_compile_as_launcher_policy() -> None:
    assert main(["policy", "check", str(LIBRARY)]) == 0


def test_all_pass_exit_0_and_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(project(tmp_path)), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {t["name"]: t for t in doc["tests"]}
    assert by_name["todo_test_later"]["skip"] is True
    main_allowed = by_name["test_main_allowed"]
    assert main_allowed["package"] == "data.spacelift_test"
    assert main_allowed["location"]["file"] == "policy_test.rego"
    assert main_allowed["location"]["row"] == 4
    assert "fail" not in main_allowed
    assert isinstance(main_allowed["duration"], int)


def test_failure_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = TESTS + 'test_wrong if { "nope" in spacelift.deny with input as {"branch": "main"} }\n'
    assert main(["policy", "test", str(project(tmp_path, tests))]) == 2
    assert "test_wrong: FAIL" in capsys.readouterr().out


def test_erroring_test_fails_with_error(tmp_path: Path) -> None:
    tests = TESTS + "test_boom if { 1 / 0 == 1 }\n"
    report = run_tests([project(tmp_path, tests)])
    (boom,) = [r for r in report.results if r.name == "test_boom"]
    assert not boom.passed
    assert boom.error is not None
    assert "policy_test.rego:8:" in boom.error


def test_run_filter_matches_full_path(tmp_path: Path) -> None:
    report = run_tests([project(tmp_path)], run=r"spacelift_test\.test_dev")
    assert [r.name for r in report.results] == ["test_dev_denied"]


def test_compile_error_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.rego").write_text("package spacelift\ndeny contains if {\n")
    assert main(["policy", "test", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad.rego:")
    assert "backtrace" not in err.lower()


def test_coverage_threshold_compared_without_rounding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_tests([project(tmp_path)], coverage=True)
    assert report.coverage is not None
    percent = report.coverage.percent
    assert report.coverage.uncovered_lines == {"policy.rego": (9,)}
    assert percent.denominator != 1  # a repeating decimal, e.g. 7/9 of 100
    shown = f"{float(percent):.2f}"
    rounded_up = str((Fraction(shown) * 100 + (1 if Fraction(shown) <= percent else 0)) / 100)
    threshold_up = f"{float(Fraction(rounded_up)):.2f}"
    assert Fraction(threshold_up) > percent
    # The threshold prints the same as the coverage, but is above it: fail (2), list lines.
    assert main(["policy", "test", str(tmp_path), "--coverage", "--threshold", threshold_up]) == 2
    out = capsys.readouterr()
    assert "not covered: policy.rego: 9" in out.out
    assert "below the threshold" in out.err
    threshold_down = str(Fraction(int(percent * 100), 100).__float__())
    assert Fraction(threshold_down) <= percent
    assert main(["policy", "test", str(tmp_path), "--coverage", "--threshold", threshold_down]) == 0


def test_parse_threshold_is_exact() -> None:
    assert parse_threshold("80.1") == Fraction(801, 10)
    assert parse_threshold("100") == 100


def test_threshold_needs_coverage(tmp_path: Path) -> None:
    assert main(["policy", "test", str(project(tmp_path)), "--threshold", "50"]) == 1


def test_eval_allow_deny_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text(POLICY)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"branch": "main"}')
    bad.write_text('{"branch": "dev", "frozen": true}')
    assert main(["policy", "eval", "--policy", str(policy), "--input", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "allow"
    assert main(["policy", "eval", "--policy", str(policy), "--input", str(bad)]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["deny"] == ["frozen", "not main"]
    assert len(out["policy_sha256"]) == 64
    (tmp_path / "notjson.json").write_text("{")
    assert (
        main(["policy", "eval", "--policy", str(policy), "--input", str(tmp_path / "notjson.json")])
        == 1
    )


def test_check_ok_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.rego").write_text('package spacelift\ndeny["x"] { input.a }\n')
    assert main(["policy", "check", str(tmp_path / "p.rego")]) == 0
    assert "p.rego (v0)" in capsys.readouterr().out
    (tmp_path / "p.rego").write_text('package spacelift\ndeny["x"] { input.a \n')
    assert main(["policy", "check", str(tmp_path / "p.rego")]) == 1
    assert capsys.readouterr().err.startswith("error: p.rego:")


def test_junit_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - only this test parses XML

    tests = TESTS + (
        'test_broken if { "frozen" in spacelift.deny with input as {"branch": "dev"} }\n'
        "test_raises if { 1 / 0 == 1 }\n"
        'test_message_with_markup if { concat("", ["<", "&", "]]>"]) == "x" }\n'
    )
    assert main(["policy", "test", str(project(tmp_path, tests)), "--format", "junit"]) == 2
    root = ET.fromstring(capsys.readouterr().out)  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    assert root.get("tests") == "7"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "data.spacelift_test"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["test_main_allowed"].find("failure") is None
    assert cases["test_main_allowed"].get("file") == "policy_test.rego"
    assert cases["test_broken"].find("failure") is not None
    assert cases["test_raises"].find("error") is not None
    assert cases["todo_test_later"].find("skipped") is not None
    assert suite.get("failures") == "2"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "1"


@pytest.mark.parametrize(
    "extra",
    [
        ["--run", "no_such_test"],
        ["--run", "test_main_allowedX"],
        ["--run", "^data\\.other\\."],
        ["--run", "no_such_test", "--format", "json"],
        ["--run", "no_such_test", "--format", "junit"],
    ],
)
def test_run_matching_nothing_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    assert main(["policy", "test", str(project(tmp_path)), *extra]) == 4
    assert "error: no test matches --run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "files",
    [
        {"policy.rego": POLICY},
        {"policy.rego": POLICY, "other_test.rego": "package t\nimport rego.v1\nhelper := 1\n"},
        {"data.yaml": "x: 1\n", "policy.rego": POLICY},
    ],
)
def test_no_tests_found_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["policy", "test", str(tmp_path)]) == 4
    assert "error: no test_* rules found" in capsys.readouterr().err


def test_only_skipped_tests_still_pass(tmp_path: Path) -> None:
    tests = "package spacelift_test\nimport rego.v1\ntodo_test_later if { false }\n"
    assert main(["policy", "test", str(project(tmp_path, tests))]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "policy", "test", "{path}"],
        ["policy", "test", "-v", "{path}"],
        ["policy", "test", "{path}", "-v"],
        ["--verbose", "policy", "test", "{path}"],
    ],
)
def test_verbose_works_before_and_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = str(project(tmp_path))
    assert main([a.replace("{path}", path) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "test_main_allowed: PASS" in out  # passing tests are listed only with -v


def test_without_verbose_passing_tests_are_not_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test", str(project(tmp_path))]) == 0
    assert "test_main_allowed: PASS" not in capsys.readouterr().out


@pytest.mark.parametrize("position", ["before", "after"])
def test_verbose_detail_on_check_either_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], position: str
) -> None:
    (tmp_path / "policy.rego").write_text(
        "package spacelift\nimport rego.v1\ndeny contains 1 if {\n"
    )
    argv = ["policy", "check", str(tmp_path)]
    argv = ["-v", *argv] if position == "before" else [*argv, "-v"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: policy.rego:4:1:")
    assert "detail: as v0:" in err
