"""Fixtures every folder may use: a real pep server and a gRPC client to it.

The helpers behind them are plain modules in tests/harness/ (import those, never a conftest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.server import Harness, open_harness


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """`make(policies=None, **config_overrides)`: a started pep over the fixed estate (or
    `policies`); all share the test's keys and decision log, and stop after the test."""
    made: list[Harness] = []

    def make(policies: Path | None = None, **overrides: Any) -> Harness:
        h = open_harness(tmp_path, policies, **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def pep(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
