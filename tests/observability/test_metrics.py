"""What pep exports on its metrics endpoint: the names in docs/observability.md, bounded labels, sub-millisecond
buckets, process and build info, readiness, JWKS refreshes and policy staleness."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pep
from pep.metrics import DURATION_BUCKETS, Metrics
from pep.reasons import ALL_REASONS
from tests.harness.server import AUDIENCE, ISSUER, Harness
from tests.harness.waits import free_port, metrics_text, wait_for

Factory = Callable[..., Harness]
METRIC_NAMES = {
    "pep_decisions_total",
    "pep_decision_duration_seconds",
    "pep_policy_reloads_total",
    "pep_policy_last_reload_success_timestamp_seconds",
    "pep_policy_info",
    "pep_policies_loaded",
    "pep_agents_registered",
    "pep_decision_log_dropped_total",
    "pep_jwks_refreshes_total",
}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    for n, ls, v in samples(text):
        if n == name and ls == labels:
            return v
    return None


def test_documented_metrics_are_exported_with_bounded_labels(obs: Factory) -> None:
    h = obs()
    for chain in (("worker",), ("orchestrator",), ("sleepy",), ("worker", "orchestrator")):
        h.authorize(h.token(sub="alice-7d2", act_chain=chain))
    h.authorize(h.token(), action="x" * 40)
    h.authorize("garbage")
    text = metrics_text(h)
    names = {n for n, _, _ in samples(text)}
    for name in METRIC_NAMES:
        assert any(n == name or n.startswith(name + "_") or n == name + "_total" for n in names), name
    actions = h.server.store.current().actions | {"other"}
    allowed = {"decision": {"allow", "deny"}, "reason": set(ALL_REASONS), "action": actions}
    ids = {"worker", "orchestrator", "sleepy", "alice-7d2"}
    for name, labels, _ in samples(text):
        for key, val in labels.items():
            assert val not in ids, f"{name}{labels}: an id as a label value"
            if name.startswith("pep_decisions") and key in allowed:
                assert val in allowed[key], f"{name}{labels}"
    assert value(text, "pep_decisions_total", action="other", decision="deny", reason="invalid_request") == 1
    assert value(text, "pep_decisions_total", action="read", decision="deny", reason="agent_disabled") == 1


def test_duration_buckets_resolve_sub_millisecond_decisions(obs: Factory) -> None:
    h = obs()
    token = h.token()
    for _ in range(5):
        h.authorize(token)
    text = metrics_text(h)
    les = [ls["le"] for n, ls, _ in samples(text) if n == "pep_decision_duration_seconds_bucket"]
    assert [float(x) for x in les] == [*DURATION_BUCKETS, float("inf")]
    assert DURATION_BUCKETS[0] == 0.00005 and DURATION_BUCKETS[-1] == 1.0
    assert sum(1 for b in DURATION_BUCKETS if b < 0.001) >= 4
    assert value(text, "pep_decision_duration_seconds_count") == 5


def test_process_build_readiness_and_log_queue_metrics(obs: Factory) -> None:
    h = obs(decision_log={"sink": "stdout", "queue_size": 123})
    text = metrics_text(h)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert value(text, name) is not None, name
    assert value(text, "pep_build_info", version=pep.__version__) == 1
    assert value(text, "pep_ready") == 1
    assert value(text, "pep_decision_log_queue_capacity") == 123
    assert value(text, "pep_decision_log_queue_length") == 0
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://{h.server.metrics_address}{path}", timeout=5) as resp:
            assert resp.status == 200


def test_not_ready_without_a_valid_policy_set(obs: Factory, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "p.cedar").write_text("permit(principal, action, resource) when {")
    h = obs(broken)
    text = metrics_text(h)
    assert value(text, "pep_ready") == 0
    assert value(text, "pep_policy_reloads_total", result="failure") == 1
    assert value(text, "pep_policy_last_reload_failure_timestamp_seconds") > 0  # type: ignore[operator]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{h.server.metrics_address}/readyz", timeout=5)
    assert info.value.code == 503


def test_not_ready_while_draining(obs: Factory) -> None:
    h = obs()
    assert value(metrics_text(h), "pep_ready") == 1
    h.server.draining.set()  # what stop() does first, before the gRPC drain
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{h.server.metrics_address}/readyz", timeout=5)
    assert info.value.code == 503 and b"shutting down" in info.value.read()
    h.server.stop(0)
    assert h.server.metrics.ready._value.get() == 0


def test_a_rejected_change_shows_as_stale_until_fixed(obs: Factory) -> None:
    # Only the explicit loads below: a watcher or poll reload of the same edit would count twice.
    h = obs(reload={"watch": False, "poll_seconds": 3600})
    store = h.server.store
    before = store.current().version
    good = (h.policies / "docs.cedar").read_text()
    (h.policies / "docs.cedar").write_text(good + "\npermit(principal, action, resource) when { nope };\n")
    assert store.load() is False
    text = metrics_text(h)
    assert value(text, "pep_policy_reloads_total", result="failure") == 1
    failed = value(text, "pep_policy_last_reload_failure_timestamp_seconds")
    succeeded = value(text, "pep_policy_last_reload_success_timestamp_seconds")
    assert failed is not None and succeeded is not None and failed > succeeded  # PepPolicyStale's signal
    assert value(text, "pep_policy_info", version=before) == 1  # the last good set still serves
    (h.policies / "docs.cedar").write_text(good + "\n// fixed\n")
    assert store.load() is True
    text = metrics_text(h)
    assert value(text, "pep_policy_last_reload_success_timestamp_seconds") > failed  # type: ignore[operator]
    versions = [ls["version"] for n, ls, _ in samples(text) if n == "pep_policy_info"]
    assert versions == [store.current().version] != [before]  # exactly one version, the new one


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server for one JWKS document; its URL."""
    from pep.dev import tokens as devtoken

    _, jwks_path = devtoken.ensure_dev_keys(str(tmp_path / "jwks-keys"))
    body = Path(jwks_path).read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_jwks_refreshes_are_counted_by_result(obs: Factory, jwks_server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    h = obs(
        issuers=[
            {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_uri": jwks_server, "algorithms": ["ES256"]},
            {"issuer": "https://down.test", "audiences": [AUDIENCE], "jwks_uri": dead, "algorithms": ["ES256"]},
        ]
    )
    assert wait_for(lambda: (value(metrics_text(h), "pep_jwks_refreshes_total", result="success") or 0) >= 1)
    assert (value(metrics_text(h), "pep_jwks_refreshes_total", result="failure") or 0) >= 1


def test_count_decision_reuses_children_and_bounds_actions() -> None:
    m = Metrics(process=False)
    m.set_actions(frozenset({"read"}))
    for action in ("read", "read", "rm -rf", "x" * 1000):
        m.count_decision("deny", "policy_forbid", action, 0.0002)
    get = m.registry.get_sample_value
    assert get("pep_decisions_total", {"decision": "deny", "reason": "policy_forbid", "action": "read"}) == 2
    assert get("pep_decisions_total", {"decision": "deny", "reason": "policy_forbid", "action": "other"}) == 2
    assert get("pep_decision_duration_seconds_bucket", {"le": "0.00025"}) == 4
    assert get("pep_decision_duration_seconds_bucket", {"le": "0.0001"}) == 0
