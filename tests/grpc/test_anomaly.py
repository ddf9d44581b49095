"""Anomaly containment on a running server: a deny spike suspends the agent through the kill
switch until `pep admin enable`; alert-only rules count and log but never suspend; the rate
and new-action rules; the admin status, events and metrics each firing leaves.

The kill switch is flipped off the request path, so a test waits for `agent_disabled`
(PEP_TEST_ANOMALY_SECONDS, 10 s by default) instead of expecting it on the very next call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2, admin_pb2_grpc
from pep.cli import main
from tests.harness.server import Harness
from tests.harness.waits import metrics_text, wait_for

SECONDS = float(os.environ.get("PEP_TEST_ANOMALY_SECONDS", "10"))
SECRET = ("Doc", "keys")  # `no-secrets` forbids it to everyone: a policy deny
SPIKE = {"name": "deny-spike", "kind": "deny_ratio", "threshold": 0.5, "min_decisions": 10, "window_seconds": 60}


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(items)}


def events(h: Harness, kind: str, wait: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + SECONDS
    while True:
        found = [e for e in h.log_lines() if e.get("event") == kind]
        if len(found) >= wait or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def admin(h: Harness) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(grpc.insecure_channel(h.server.admin_address))


def test_a_deny_spike_suspends_the_agent_until_pep_admin_enable(
    harness_factory: Callable[..., Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness_factory(anomaly=rules({**SPIKE, "action": "suspend"}))
    token = h.token()
    assert h.authorize(token).reason == "allowed"
    # One allow, then denies: the ratio reaches 0.5 at once, the count at the 10th decision.
    answers = [h.authorize(token, resource=SECRET) for _ in range(9)]
    assert {r.reason for r in answers} == {"policy_forbid"}
    assert wait_for(lambda: h.authorize(token).reason == "agent_disabled", timeout=SECONDS)
    assert h.authorize(token).reason == "agent_disabled"  # allowed reads too, until released
    assert h.authorize(h.token(act_chain=("orchestrator",))).reason == "allowed"  # only that agent

    reason = "anomaly deny-spike: 9 of 10 decisions denied in 60s (0.90 >= 0.5)"
    (fired,) = events(h, "anomaly")
    assert fired["agent"] == "worker" and fired["rule"] == "deny-spike" and fired["action"] == "suspend"
    assert fired["decision_id"] == answers[-1].decision_id  # the 10th decision made it fire
    (disable,) = events(h, "admin")
    assert {k: disable[k] for k in ("action", "kind", "id", "reason", "actor", "source", "rule", "changed")} == {
        "action": "disable",
        "kind": "agent",
        "id": "worker",
        "reason": reason,
        "actor": "anomaly",
        "source": "anomaly",
        "rule": "deny-spike",
        "changed": True,
    }
    assert disable["scope"] == "local"
    text = metrics_text(h)
    assert 'pep_anomaly_events_total{action="suspend",rule="deny-spike"} 1.0' in text
    assert 'pep_killswitch_entries{kind="agent",scope="local",source="anomaly"} 1.0' in text

    address = h.server.admin_address
    assert main(["admin", "--address", address, "status"]) == 0
    out = capsys.readouterr().out
    assert "disabled agent worker (anomaly since" in out and f"by anomaly): {reason} [local]" in out
    assert main(["admin", "--address", address, "enable", "agent", "worker", "--actor", "oncall"]) == 0
    assert h.authorize(token).reason == "allowed"
    # The window started afresh: the old denies do not suspend it again at the next one.
    assert h.authorize(token, resource=SECRET).reason == "policy_forbid"
    assert h.authorize(token).reason == "allowed"
    assert 'pep_killswitch_entries{kind="agent",scope="local",source="anomaly"} 0.0' in metrics_text(h)
    assert [e["action"] for e in events(h, "admin", wait=2)] == ["disable", "enable"]


def test_released_through_the_admin_api_it_is_judged_on_new_decisions_only(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(anomaly=rules({**SPIKE, "action": "suspend"}))
    token = h.token()
    for _ in range(10):
        h.authorize(token, resource=SECRET)
    assert wait_for(lambda: h.authorize(token).reason == "agent_disabled", timeout=SECONDS)
    for _ in range(30):  # a suspended agent's own denies count for nothing
        assert h.authorize(token, resource=SECRET).reason == "agent_disabled"
    status = admin(h).Status(admin_pb2.StatusRequest(), timeout=10)
    assert [(e.id, e.source, e.actor, e.scope) for e in status.entries] == [("worker", "anomaly", "anomaly", "local")]
    resp = admin(h).Enable(admin_pb2.EnableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="worker"), timeout=10)
    assert resp.changed and not resp.status.entries
    for _ in range(9):
        assert h.authorize(token, resource=SECRET).reason == "policy_forbid"
    assert h.authorize(token, resource=SECRET).reason == "policy_forbid"  # the 10th after release fires again
    assert wait_for(lambda: h.authorize(token).reason == "agent_disabled", timeout=SECONDS)
    assert 'pep_anomaly_events_total{action="suspend",rule="deny-spike"} 2.0' in metrics_text(h)


def test_alert_only_rules_count_and_log_but_never_suspend(harness_factory: Callable[..., Harness]) -> None:
    runaway = {"name": "runaway", "kind": "rate", "threshold": 2, "window_seconds": 10}
    h = harness_factory(anomaly=rules({**SPIKE, "action": "alert"}, runaway))
    token = h.token()
    reasons = [h.authorize(token, resource=SECRET).reason for _ in range(25)]
    assert set(reasons) == {"policy_forbid"}  # never agent_disabled
    assert h.authorize(token).reason == "allowed"
    fired = events(h, "anomaly", wait=2)
    assert sorted((e["rule"], e["action"], e["detail"]) for e in fired) == [
        ("deny-spike", "alert", "10 of 10 decisions denied in 60s (1.00 >= 0.5)"),
        ("runaway", "alert", "21 decisions in 10s (2.1/s > 2/s)"),
    ]
    assert events(h, "admin", wait=0) == []
    assert not admin(h).Status(admin_pb2.StatusRequest(), timeout=10).entries
    text = metrics_text(h)
    # Each fired once: quiet for a window after firing.
    assert 'pep_anomaly_events_total{action="alert",rule="deny-spike"} 1.0' in text
    assert 'pep_anomaly_events_total{action="alert",rule="runaway"} 1.0' in text


def test_a_runaway_agent_is_suspended_by_a_rate_rule(harness_factory: Callable[..., Harness]) -> None:
    runaway = {"name": "runaway", "kind": "rate", "threshold": 1, "window_seconds": 5, "action": "suspend"}
    h = harness_factory(anomaly=rules(runaway))
    token = h.token()
    assert {h.authorize(token).reason for _ in range(5)} == {"allowed"}  # 5 in 5 s: at the rate, not over
    assert wait_for(lambda: h.authorize(token).reason == "agent_disabled", timeout=SECONDS)
    (disable,) = events(h, "admin")
    assert disable["reason"].startswith("anomaly runaway: 6 decisions in 5s (1.2/s > 1/s)")


def test_new_action_fires_for_an_action_first_allowed_after_learning(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(anomaly=rules({"name": "new-action", "kind": "new_action", "learning_seconds": 1}))
    token = h.token()
    assert h.authorize(token).reason == "allowed"  # learned: read
    assert h.authorize(token, action="write", context={"amount": 0}).reason == "policy_no_permit"
    time.sleep(1.2)
    assert h.authorize(token).reason == "allowed"  # known
    assert h.authorize(token, action="write", context={"amount": 1}).reason == "allowed"  # new
    assert h.authorize(token, action="write", context={"amount": 1}).reason == "allowed"  # known now
    (fired,) = events(h, "anomaly")
    assert (fired["rule"], fired["kind"], fired["action"], fired["agent"]) == (
        "new-action",
        "new_action",
        "alert",
        "worker",
    )
    assert fired["detail"].startswith("'write' allowed for the first time")
    time.sleep(0.2)
    assert len(events(h, "anomaly")) == 1
    assert 'pep_anomaly_events_total{action="alert",rule="new-action"} 1.0' in metrics_text(h)
