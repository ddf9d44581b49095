"""pep scraped by a real Prometheus: every dashboard query and alert works on pep's metrics.

One pep and one Prometheus (scraping each second, with deploy/prometheus/alerts.yaml
loaded) serve the whole module. Traffic covers allow, policy denies, bad tokens, the kill
switch, a suspended agent, a rate limit, a shadow divergence and an unknown action.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep._proto.pep.v1 import authorizer_pb2 as pb
from tests.harness.estate import write_estate
from tests.harness.prometheus import DEPLOY, Prometheus, need_prometheus
from tests.harness.redis import RedisServer
from tests.harness.server import Harness, start_pep, stop_pep
from tests.harness.waits import metrics_text, wait_for

DASHBOARD = DEPLOY / "grafana" / "pep-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
# A comparison with a number literal: the threshold taken out to get an alert's signal.
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])")
# Alerts that must stay quiet on this healthy pep (deny spike and latency depend on the traffic).
QUIET = {
    "PepDown",
    "PepNotReady",
    "PepPolicyReloadFailing",
    "PepPolicyStale",
    "PepDecisionLogDropping",
    "PepDecisionLogQueueFilling",
    "PepJWKSRefreshFailing",
    "PepStateDown",
    "PepStateErrors",
    "PepAgentSuspended",
    "PepAnomalyAlert",
}
# Anomaly rules this traffic never fires: their series are there, at 0, from the start.
ANOMALY = {
    "rules": [
        {
            "name": "deny-spike",
            "kind": "deny_ratio",
            "threshold": 0.9,
            "min_decisions": 1000,
            "window_seconds": 60,
            "action": "suspend",
        },
        {"name": "runaway", "kind": "rate", "threshold": 1000, "window_seconds": 10, "action": "alert"},
    ]
}


@dataclass
class Scraped:
    pep: Harness
    prom: Prometheus
    target: str
    reasons: Counter[str]


def estate(root: Path) -> Path:
    """The gRPC tests' estate, plus a kill switch, a rate limit and a diverging shadow set."""
    policies = write_estate(root)
    (policies / "killswitch.yaml").write_text("disabled:\n  agents: [orchestrator3]\n")
    (policies / "limits.yaml").write_text("agents:\n  orchestrator2: {rate: 0.001, burst: 1}\n")
    (policies / "shadow").mkdir()
    (policies / "shadow" / "docs.cedar").write_text(
        (policies / "docs.cedar").read_text()
        + '\n@id("no-orchestrator4")\nforbid(principal == Agent::"orchestrator4", action, resource);\n'
    )
    (policies / "shadow" / "delegation.cedar").write_text((policies / "delegation.cedar").read_text())
    return policies


def drive(h: Harness) -> Counter[str]:
    """One round of mixed traffic; the reasons pep answered, counted."""
    worker = h.token()
    trace = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
    calls: list[tuple[str, dict[str, Any]]] = [
        *[(worker, {})] * 6,
        *[(worker, {"resource": ("Doc", "keys")})] * 2,
        *[(worker, {"action": "write"})] * 2,
        (worker, {"action": "launch"}),  # not in the schema: labelled `other`
        *[("garbage", {})] * 2,
        (h.token(ttl_seconds=-600), {}),
        *[(h.token(act_chain=("orchestrator3",)), {})] * 2,  # killed
        (h.token(act_chain=("sleepy",)), {}),  # suspended
        *[(h.token(act_chain=("orchestrator2",)), {})] * 3,  # burst 1
        *[(h.token(act_chain=("orchestrator4",)), {})] * 2,  # shadow diverges
    ]
    reasons: Counter[str] = Counter()
    for token, kw in calls:
        r = h.stub.Authorize(_request(token, **kw), metadata=trace, timeout=10)
        reasons[r.reason] += 1
    return reasons


def _request(token: str, action: str = "read", resource: tuple[str, str] = ("Doc", "plan")) -> pb.AuthorizeRequest:
    req = pb.AuthorizeRequest(token=token, action=action)
    req.resource.type, req.resource.id = resource
    return req


@pytest.fixture(scope="module")
def scraped(
    prometheus_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scraped]:
    root = tmp_path_factory.mktemp("pep")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    redis_server = RedisServer(binary, root / "redis")
    (root / "redis").mkdir()
    redis_server.start()  # shared state, so the state alerts and panels have data too
    h = start_pep(root, estate(root / "policies"), state={"redis_url": redis_server.url}, anomaly=ANOMALY)
    try:
        target = h.server.metrics_address
        prom = prometheus_factory(target)
        assert wait_for(lambda: prom.query('up{job="pep"} == 1') != [], timeout=20, step=0.2), "never scraped"
        reasons: Counter[str] = Counter()
        # Two rounds with a scrape between: every counter has two samples, so rate() has data.
        for _ in range(2):
            reasons += drive(h)
            total = sum(reasons.values())
            assert wait_for(
                lambda total=total: prom.query(f"sum(pep_decisions_total) == {total}") != [], timeout=20, step=0.2
            ), "Prometheus never saw the decisions"
        # Every rule evaluated at least once after the traffic.
        assert wait_for(lambda: _rules_evaluated(prom), timeout=20, step=0.2)
        yield Scraped(h, prom, target, reasons)
    finally:
        stop_pep(h)
        redis_server.stop()


def _rules(prom: Prometheus) -> list[dict[str, Any]]:
    body = prom.api("rules")
    return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def _rules_evaluated(prom: Prometheus) -> bool:
    rules = _rules(prom)
    return bool(rules) and all(not r["lastEvaluation"].startswith("0001") for r in rules)


def panel_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def grafana(expr: str, target: str) -> str:
    """The query Grafana would send, with the dashboard's variables filled in."""
    out = expr.replace("$__rate_interval", "1m").replace("$job", "pep").replace("$instance", target)
    assert "$" not in out, f"a variable the test does not know: {expr}"
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


# --- the tests ---------------------------------------------------------------------------


def test_prometheus_counts_what_pep_answered(scraped: Scraped) -> None:
    seen = {
        r["metric"]["reason"]: int(float(r["value"][1]))
        for r in scraped.prom.query("sum by (reason) (pep_decisions_total)")
    }
    print("sum by (reason) (pep_decisions_total):", dict(sorted(seen.items())))
    assert seen == dict(scraped.reasons)
    assert {"allowed", "policy_forbid", "token_malformed", "agent_disabled", "rate_limited"} <= set(seen)


def test_every_dashboard_panel_query_returns_data(scraped: Scraped) -> None:
    targets = panel_targets()
    assert len(targets) >= 20
    empty = []
    for title, expr in targets:
        result = scraped.prom.query(grafana(expr, scraped.target))
        if not result:
            empty.append(f"{title}: {expr}")
        print(f"{title:48} {_show(result)}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_dashboard_variables_find_the_target(scraped: Scraped) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
        assert m, var["definition"]
        result = scraped.prom.query(grafana(m.group(1), scraped.target))
        assert {r["metric"].get(m.group(2)) for r in result} == {{"job": "pep", "instance": scraped.target}[m.group(2)]}


def test_every_alert_parses_and_its_signal_has_data(scraped: Scraped) -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= QUIET | {"PepDenySpike", "PepLatencySLOBurnFast"}
    for rule in rules:
        expr = rule["expr"]
        firing = scraped.prom.query(expr)  # parses, evaluates
        signal = THRESHOLD.sub("", expr)
        assert signal != expr, f"{rule['alert']}: no threshold against a number (see alerts.yaml header)"
        result = scraped.prom.query(signal)
        assert result, f"{rule['alert']}: the signal has no data: {signal}"
        print(f"{rule['alert']:28} signal {_show(result)}")
        if rule["alert"] in QUIET:
            assert firing == [], f"{rule['alert']} fires on a healthy pep: {firing}"


def test_prometheus_loads_and_evaluates_every_rule(scraped: Scraped) -> None:
    rules = _rules(scraped.prom)
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad


def test_promtool_accepts_pep_metrics(scraped: Scraped) -> None:
    _, promtool = need_prometheus()
    text = metrics_text(scraped.pep)
    assert "process_cpu_seconds_total" in text and "pep_build_info{" in text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_promtool_checks_rules_config_and_rule_unit_tests() -> None:
    _, promtool = need_prometheus()
    for args in (
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yaml")],
        ["test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yaml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_readiness_endpoints(scraped: Scraped) -> None:
    base = f"http://{scraped.target}"
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            assert resp.status == 200
    assert scraped.prom.value(f'pep_ready{{instance="{scraped.target}"}}') == 1


def _show(result: list[Any]) -> str:
    parts = []
    for r in result[:6]:
        if isinstance(r, dict):
            labels = ",".join(f"{k}={v}" for k, v in r["metric"].items() if k not in ("job", "instance", "__name__"))
            parts.append(f"{labels or '-'}={float(r['value'][1]):.4g}")
        else:
            parts.append(f"{float(r[1]):.4g}")
    return "; ".join(parts) + (f" (+{len(result) - 6})" if len(result) > 6 else "")
