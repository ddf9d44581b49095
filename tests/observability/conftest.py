"""Fixtures for the observability tests: peps with the full production metrics, and a real
Prometheus (see tests/harness/prometheus.py for when it is skipped)."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.prometheus import DEPLOY, Prometheus, need_prometheus, prometheus_config
from tests.harness.server import Harness, start_pep, stop_pep
from tests.harness.waits import free_port, wait_for


@pytest.fixture
def obs(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """`obs(**config_overrides)`: a started pep; every one is stopped after the test."""
    made: list[Harness] = []

    def make(policies: Path | None = None, **overrides: Any) -> Harness:
        root = tmp_path / f"pep{len(made)}"
        root.mkdir()
        h = start_pep(root, policies, **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        stop_pep(h)


@pytest.fixture(scope="module")
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Prometheus]]:
    """`start(target)`: a Prometheus on a free loopback port scraping `target` each second."""
    prometheus, _ = need_prometheus()
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        root = tmp_path_factory.mktemp("prometheus")
        config = root / "prometheus.yaml"
        config.write_text(yaml.safe_dump(prometheus_config(target, DEPLOY / "prometheus" / "alerts.yaml")))
        port = free_port()
        log_path = root / "prometheus.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
        started.append(prom)

        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited: {log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        assert wait_for(ready, timeout=30, step=0.1), f"prometheus not ready: {log_path.read_text()}"
        return prom

    try:
        yield start
    finally:
        for prom in started:
            prom.process.terminate()
            try:
                prom.process.wait(10)
            except subprocess.TimeoutExpired:
                prom.process.kill()
                prom.process.wait(5)
