"""Fixtures for the AuthZEN tests: the Todo scenario's pep, and peps of one's own."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.authzen import TODO, Pep, start_authzen


@pytest.fixture(scope="module")
def todo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pep]:
    """pep serving the Todo scenario on a trust_subject listener, shared by a module's tests."""
    pep = start_authzen(tmp_path_factory.mktemp("todo"), TODO, max_body_bytes=16 * 1024, max_evaluations=50)
    yield pep
    pep.server.stop(0)


@pytest.fixture
def pep_factory(tmp_path: Path) -> Iterator[Callable[..., Pep]]:
    """Start a pep of one's own (a copy of the Todo estate, changed by `edit`); stopped after the test."""
    made: list[Pep] = []
    tries = iter(range(1_000))  # a pep that fails to start leaves its folders behind

    def make(edit: Callable[[Path], None] | None = None, **authzen: Any) -> Pep:
        n = next(tries)
        policies = tmp_path / f"policies{n}"
        shutil.copytree(TODO, policies)
        if edit is not None:
            edit(policies)
        pep = start_authzen(tmp_path / f"run{n}", policies, **authzen)
        made.append(pep)
        return pep

    yield make
    for pep in made:
        pep.server.stop(0)
