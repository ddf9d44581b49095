"""The AuthZEN working group's Todo interop cases, replayed over real HTTP against pep.

The data (40 evaluations, 3 batches) lives in ../shared/conformance/authzen/; the Todo
scenario's schema, policies and entities in tests/authzen/todo/. Each request is sent as
the interop harness sends it, byte for byte, to a trust_subject listener.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.authzen import INTEROP, Pep


def _cases(kind: str) -> list[Any]:
    if not INTEROP.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"interop data not found at {INTEROP}"))]
    cases = json.loads(INTEROP.read_text())[kind]
    return [pytest.param(case, id=f"{kind}-{i}") for i, case in enumerate(cases)]


def test_the_data_is_the_expected_size() -> None:
    if not INTEROP.exists():
        pytest.skip(f"interop data not found at {INTEROP}")
    data = json.loads(INTEROP.read_text())
    assert (len(data["evaluation"]), len(data["evaluations"])) == (40, 3)


@pytest.mark.parametrize("case", _cases("evaluation"))
def test_evaluation(todo: Pep, case: dict[str, Any]) -> None:
    r = todo.client.evaluation(case["request"])
    assert r.status == 200, r.body
    assert r.body["decision"] is case["expected"], (case["request"], r.body)


@pytest.mark.parametrize("case", _cases("evaluations"))
def test_evaluations(todo: Pep, case: dict[str, Any]) -> None:
    r = todo.client.evaluations(case["request"])
    assert r.status == 200, r.body
    got = [{"decision": e["decision"]} for e in r.body["evaluations"]]
    assert got == case["expected"], (case["request"], r.body)
