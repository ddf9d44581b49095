"""`pep test --coverage`, `--min-coverage` and `--junit` on a small estate: the counts per policy and
template (through its links), the uncovered policies, the percentage and its exit codes, and a JUnit
file that parses back with its failing case recorded."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pep.cli import main

Capture = pytest.CaptureFixture[str]

POLICIES = """\
@id("read.any")
permit (principal, action == Action::"read", resource);

@id("write.own")
permit (principal == User::"alice", action == Action::"write", resource == Doc::"plan");

@id("forbid.secret")
forbid (principal, action, resource == Doc::"secret");

@id("grant")
permit (principal == ?principal, action == Action::"delete", resource);
"""
LINKS = """\
links:
  - {template: grant, id: grant.bob, values: {"?principal": 'User::"bob"'}}
  - {template: grant, id: grant.carol, values: {"?principal": 'User::"carol"'}}
"""


def _case(name: str, who: str, action: str, expect: str, resource: str = "plan") -> str:
    return (
        f"  - {{name: {name}, principal: 'User::\"{who}\"', action: {action}, "
        f"resource: 'Doc::\"{resource}\"', expect: {expect}}}\n"
    )


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    d = tmp_path / "estate"
    (d / "tests").mkdir(parents=True)
    (d / "p.cedar").write_text(POLICIES)
    (d / "links.yaml").write_text(LINKS)
    (d / "tests" / "a.yaml").write_text(
        "cases:\n"
        + _case("reads", "bob", "read", "allow")
        + _case("reads again", "carol", "read", "allow")
        + _case("alice writes", "alice", "write", "allow")
    )
    (d / "tests" / "b.yaml").write_text(
        "cases:\n" + _case("bob deletes", "bob", "delete", "allow") + _case("dave deletes", "dave", "delete", "deny")
    )
    return d


def test_coverage_counts_each_policy_and_template_and_lists_the_uncovered(estate: Path, capsys: Capture) -> None:
    assert main(["test", str(estate), "--coverage"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0].isdigit()}
    assert rows["read.any"].split()[0] == "2"
    assert rows["write.own"].split()[0] == "1"
    assert rows["forbid.secret"].split()[0] == "0"
    assert rows["grant"].split()[0] == "1"  # through its link grant.bob
    assert "links: grant.bob 1, grant.carol 0" in rows["grant"]
    assert "grant.bob" not in rows  # links count for their template, not as rows of their own
    uncovered = out.split("not determined by any case (1):\n", 1)[1]
    assert uncovered.splitlines()[0] == "  forbid.secret (p.cedar:7)"
    assert "coverage: 3 of 4 policies and templates determined by some case (75%)" in out


def test_min_coverage_exit_codes(estate: Path, capsys: Capture) -> None:
    assert main(["test", str(estate), "--min-coverage", "75"]) == 0
    assert "coverage: 3 of 4" in capsys.readouterr().out  # --min-coverage implies --coverage
    assert main(["test", str(estate), "--min-coverage", "76"]) == 1
    assert "coverage 75% is below --min-coverage 76%" in capsys.readouterr().err
    assert main(["test", str(estate), "--min-coverage", "0"]) == 0
    capsys.readouterr()
    (estate / "tests" / "c.yaml").write_text("cases:\n" + _case("secret", "bob", "read", "deny", "secret"))
    assert main(["test", str(estate), "--min-coverage", "100"]) == 0
    assert "(100%)" in capsys.readouterr().out


def test_a_failing_suite_still_fails_with_full_coverage(estate: Path, capsys: Capture) -> None:
    (estate / "tests" / "c.yaml").write_text("cases:\n" + _case("wrong", "bob", "read", "allow", "secret"))
    assert main(["test", str(estate), "--min-coverage", "0"]) == 1
    assert "1 failed" in capsys.readouterr().out


def test_junit_parses_back_with_the_failing_case(estate: Path, tmp_path: Path, capsys: Capture) -> None:
    (estate / "tests" / "b.yaml").write_text(
        "cases:\n"
        + _case("bob deletes", "bob", "delete", "allow")
        + _case('"dave <deletes> & \\x01"', "dave", "delete", "allow")  # YAML's escape: a control character
    )
    report = tmp_path / "junit.xml"
    assert main(["test", str(estate), "--junit", str(report)]) == 1
    capsys.readouterr()
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"tests/a.yaml", "tests/b.yaml"}
    assert suites["tests/a.yaml"].get("tests") == "3"
    assert suites["tests/b.yaml"].get("failures") == "1"
    cases = list(suites["tests/b.yaml"].iter("testcase"))
    assert [c.get("classname") for c in cases] == ["tests/b.yaml", "tests/b.yaml"]
    assert cases[0].get("name") == "bob deletes" and cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert cases[1].get("name") == "dave <deletes> & \ufffd"  # a control character XML cannot carry
    assert failure.get("message") == "decision: expected allow, got deny"
    assert "expected allow, decided deny" in (failure.text or "")
    assert all(float(c.get("time") or "x") >= 0 for c in root.iter("testcase"))


def test_junit_records_an_invalid_case_and_a_suite_that_does_not_load(
    estate: Path, tmp_path: Path, capsys: Capture
) -> None:
    (estate / "tests" / "b.yaml").write_text(
        "cases:\n  - {name: odd, principal: nobody, action: read, expect: allow}\n"
    )
    report = tmp_path / "junit.xml"
    assert main(["test", str(estate), "--junit", str(report)]) == 1
    root = ET.parse(report).getroot()
    error = next(c for c in root.iter("testcase") if c.get("name") == "odd").find("error")
    assert error is not None and "invalid case" in (error.get("message") or "")
    (estate / "tests" / "z.yaml").write_text("cases: [unclosed\n")
    assert main(["test", str(estate), "--junit", str(report)]) == 1
    capsys.readouterr()
    root = ET.parse(report).getroot()
    broken = next(s for s in root.iter("testsuite") if s.get("name") == "tests/z.yaml")
    assert broken.get("errors") == "1" and broken.find("testcase/error") is not None


def test_junit_to_a_missing_folder_is_a_usage_error(estate: Path, tmp_path: Path, capsys: Capture) -> None:
    assert main(["test", str(estate), "--junit", str(tmp_path / "no" / "junit.xml")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["test", str(estate), "--junit", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_example_estate_is_fully_covered(capsys: Capture) -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    assert main(["test", str(root), "--min-coverage", "100"]) == 0
    assert "(100%)" in capsys.readouterr().out
