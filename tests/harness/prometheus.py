"""A real Prometheus for pep's dashboards and alerts: finding the binaries, its config, its API.

Prometheus runs from the Debian `prometheus` package (`.ci/run` installs it); tests that
need it skip with a clear message only when the binaries are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def need_prometheus() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip("prometheus/promtool not installed (apt-get install prometheus; .ci/run installs it)")
    return prometheus, promtool


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the decoded body, error responses (HTTP 400/422) included."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def query(self, expr: str) -> list[Any]:
        """An instant query's result; fails the test when Prometheus rejects the expression."""
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
        result = body["data"]["result"]
        return result if body["data"]["resultType"] in ("vector", "matrix") else [result]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


def prometheus_config(target: str, rules: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yaml, pointed at `target`, scraping every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"})
    config["rule_files"] = [str(rules)]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "pep"]
    assert len(jobs) == 1, "the example scrape config has one job named pep"
    jobs[0].update({"scrape_interval": "1s", "scrape_timeout": "1s", "static_configs": [{"targets": [target]}]})
    config["scrape_configs"] = jobs
    return config
