"""Anomaly containment with shared state: a suspension made by one replica's rules holds on
every replica sharing the Redis (scope `fleet`), shows with its source everywhere, and is
lifted fleet-wide by one `pep admin enable`. With `state.file` it survives a restart.
Kill entries written before `source` existed read as the admin API's.

Real `pep serve` processes and a real Redis (tests/harness/redis.py); deadlines from
PEP_TEST_FLEET_SECONDS.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2, admin_pb2_grpc
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.cli import main
from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.replica import Replica
from tests.harness.server import Harness
from tests.harness.waits import wait_for

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))
SPIKE = {
    "name": "deny-spike",
    "kind": "deny_ratio",
    "threshold": 0.5,
    "min_decisions": 10,
    "window_seconds": 60,
    "action": "suspend",
}
REASON = "anomaly deny-spike: 10 of 10 decisions denied in 60s (1.00 >= 0.5)"


def secret(replica: Replica, agent: str) -> str:
    assert replica.channel is not None
    req = pb.AuthorizeRequest(token=replica.token(agent), action="read", resource=pb.Resource(type="Doc", id="keys"))
    return str(pb_grpc.AuthorizerStub(replica.channel).Authorize(req, timeout=10).reason)


def test_a_suspension_holds_on_every_replica_until_one_enable(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_estate(tmp_path / "policies")
    keys = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    prefix = f"a{uuid.uuid4().hex[:8]}:"
    state = {"redis_url": redis_server.url, "key_prefix": prefix}
    one, two = (Replica(tmp_path, f"replica{i}", keys, state, anomaly={"rules": [SPIKE]}) for i in (1, 2))
    try:
        for r in (one, two):
            r.spawn()
        for r in (one, two):
            r.ready()
        # Five denies on replica 2 (not enough there), then ten on replica 1: its rule fires.
        assert [secret(two, "worker") for _ in range(5)] == ["policy_forbid"] * 5
        assert [secret(one, "worker") for _ in range(10)] == ["policy_forbid"] * 10
        for r in (one, two):
            assert wait_for(lambda r=r: r.decide("worker") == "agent_disabled", timeout=FLEET_SECONDS), r.name
        assert two.decide("orchestrator") == "allowed"
        status = two.admin().Status(admin_pb2.StatusRequest(), timeout=10)
        assert [(e.id, e.source, e.actor, e.scope, e.reason) for e in status.entries] == [
            ("worker", "anomaly", "anomaly", "fleet", REASON)
        ]
        # The replica whose rule fired logged the flip as its own; the other as applied from the fleet.
        mine = [e for e in one.events() if e["action"] == "disable"]
        assert [(e["source"], e["actor"], e["rule"], e["scope"], e["changed"]) for e in mine] == [
            ("anomaly", "anomaly", "deny-spike", "fleet", True)
        ]
        assert wait_for(lambda: any(e.get("applied") == "fleet" and e["source"] == "anomaly" for e in two.events()))
        assert 'pep_killswitch_entries{kind="agent",scope="fleet",source="anomaly"} 1.0' in two.metrics()
        assert 'pep_anomaly_events_total{action="suspend",rule="deny-spike"} 1.0' in one.metrics()
        assert 'pep_anomaly_events_total{action="suspend",rule="deny-spike"} 0.0' in two.metrics()

        cli = ["admin", "--state", redis_server.url, "--key-prefix", prefix]
        assert main([*cli, "status"]) == 0
        assert "disabled agent worker (anomaly, fleet, since" in capsys.readouterr().out
        assert main([*cli, "enable", "agent", "worker"]) == 0
        for r in (one, two):
            assert wait_for(lambda r=r: r.decide("worker") == "allowed", timeout=FLEET_SECONDS), r.name
        # Both replicas judge the agent afresh: on replica 2 its five old denies are forgotten too
        # (with them, four more would reach ten decisions, most of them denied).
        for r in (one, two):
            assert [secret(r, "worker") for _ in range(4)] == ["policy_forbid"] * 4
        time.sleep(0.3)
        assert [r.decide("worker") for r in (one, two)] == ["allowed", "allowed"]
        assert 'pep_anomaly_events_total{action="suspend",rule="deny-spike"} 0.0' in two.metrics()
    finally:
        for r in (one, two):
            r.stop()


def test_entries_written_before_sources_existed_read_as_admin(
    tmp_path: Path, redis_server: RedisServer, harness_factory: Callable[..., Harness]
) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    old = json.dumps({"reason": "incident 7", "since": 1700000000.0, "actor": "sre"})
    redis_server.client().hset(f"{prefix}kills", "agent:loner", old)
    h = harness_factory(state={"redis_url": redis_server.url, "key_prefix": prefix})
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(h.server.admin_address))
    status = stub.Status(admin_pb2.StatusRequest(), timeout=10)
    assert [(e.id, e.source, e.actor, e.scope) for e in status.entries] == [("loner", "admin", "sre", "fleet")]
    # And a state file of the same age.
    path = tmp_path / "kills.json"
    path.write_text(json.dumps({"schema": 1, "entries": [{"kind": "agent", "id": "loner", **json.loads(old)}]}))
    stored = harness_factory(state={"file": str(path)})
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(stored.server.admin_address))
    status = stub.Status(admin_pb2.StatusRequest(), timeout=10)
    assert [(e.id, e.source, e.scope) for e in status.entries] == [("loner", "admin", "local")]


def test_with_a_state_file_a_suspension_survives_a_restart(
    tmp_path: Path, harness_factory: Callable[..., Harness]
) -> None:
    path = tmp_path / "kills.json"
    config = {"state": {"file": str(path)}, "anomaly": {"rules": [SPIKE]}}
    h = harness_factory(**config)
    token = h.token()
    for _ in range(10):
        h.authorize(token, resource=("Doc", "keys"))
    assert wait_for(lambda: h.authorize(token).reason == "agent_disabled", timeout=FLEET_SECONDS)
    h.close()
    assert json.loads(path.read_text())["entries"][0]["source"] == "anomaly"
    again = harness_factory(**config)
    assert again.authorize(again.token()).reason == "agent_disabled"
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(again.server.admin_address))
    status = stub.Status(admin_pb2.StatusRequest(), timeout=10)
    assert [(e.id, e.source, e.actor, e.reason) for e in status.entries] == [("worker", "anomaly", "anomaly", REASON)]
