"""A real pep (the gRPC tests' harness, with process metrics on) and a real Prometheus.

Prometheus runs from the Debian `prometheus` package (`.ci/run` installs it); tests that
need it skip with a clear message only when the binaries are missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.config import parse_config
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.server import build_server
from tests.grpc.conftest import AUDIENCE, ISSUER, Harness
from tests.grpc.estate import write_estate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def start_pep(root: Path, policies: Path | None = None, **overrides: Any) -> Harness:
    """The gRPC tests' server set-up, with the full `Metrics()` pep serves in production."""
    key_path, jwks_path = devtoken.ensure_dev_keys(str(root / "keys"))
    log_path = root / "decisions.log"
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "policies": str(policies or write_estate(root / "policies")),
        "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks_path, "algorithms": ["ES256"]}],
        "decision_log": {"sink": str(log_path)},
        "shutdown_grace_seconds": 0.5,
        "reload": {"settle_seconds": 0.05, "poll_seconds": 30},
    }
    raw.update(overrides)
    server = build_server(parse_config(raw), metrics=Metrics(), max_workers=8)
    channel = grpc.insecure_channel(server.addresses[0])
    sink = raw["decision_log"].get("sink", "stdout")
    return Harness(
        server, channel, pb_grpc.AuthorizerStub(channel), key_path, jwks_path, Path(sink), Path(raw["policies"])
    )


def stop_pep(h: Harness) -> None:
    h.channel.close()
    h.server.stop(0)


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


def metrics_text(h: Harness) -> str:
    with urllib.request.urlopen(f"http://{h.server.metrics_address}/metrics", timeout=5) as resp:
        return resp.read().decode()


# --- Prometheus -------------------------------------------------------------------------


def need_prometheus() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip("prometheus/promtool not installed (apt-get install prometheus; .ci/run installs it)")
    return prometheus, promtool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
