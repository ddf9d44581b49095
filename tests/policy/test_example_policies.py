"""The example estate that `make run` serves: it validates, and its suites pass through the pipeline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pep.cli import main
from pep.dev.suite import CaseResult, SuiteRunner

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, CaseResult]]:
    runner = SuiteRunner(str(POLICIES))
    try:
        yield {f"{r.suite}::{r.name}": r for r in runner.run()}
    finally:
        runner.close()


def _case_ids() -> list[str]:
    runner = SuiteRunner(str(POLICIES))
    try:
        return [f"{r.suite}::{r.name}" for r in runner.run()]
    finally:
        runner.close()


@pytest.mark.parametrize("case", _case_ids())
def test_example_suite_case(results: dict[str, CaseResult], case: str) -> None:
    result = results[case]
    assert result.passed, result.describe()


def test_suites_cover_both_styles_and_outcomes(results: dict[str, CaseResult]) -> None:
    assert len(results) >= 40
    decided = {r.decided for r in results.values()}
    assert decided == {"allow", "deny"}
    reasons = {r.reason for r in results.values()}
    assert {"allowed", "policy_forbid", "policy_no_permit", "chain_delegation_forbidden"} <= reasons


def test_validate_and_test_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(POLICIES)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["test", str(POLICIES), "--filter", "billing-bot pays"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 failed")


def test_a_wrong_expectation_fails_with_an_explanation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    suite = copy / "tests" / "payments.yaml"
    text = suite.read_text().replace("expect_reason: policy_forbid   #", "expect_reason: policy_no_permit   #", 1)
    assert text != suite.read_text()
    suite.write_text(text)
    assert main(["test", str(copy), "--filter", "plain bearer"]) == 1
    out = capsys.readouterr().out
    assert "FAIL tests/payments.yaml:" in out
    assert "reason: expected policy_no_permit, got policy_forbid" in out
    assert "payments.forbid.without-dpop" in out
    assert out.strip().endswith("0 passed, 1 failed")
