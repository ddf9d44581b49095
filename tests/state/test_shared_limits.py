"""Rate limits and the DPoP replay cache shared by the fleet on a real Redis, with real `pep serve`
processes (issue 15, parts 2 to 4): a burst across three replicas is admitted `burst` times in
all; a proof replayed to another replica is refused; Redis stopped mid-load in `local` mode lets
decisions go on, in `deny` mode refuses what needs the shared bucket, and both recover once it
returns. Deadlines are generous (PEP_TEST_FLEET_SECONDS).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.replica import AUDIENCE, ISSUER, Replica
from tests.harness.waits import wait_for

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))
URI = "https://pep.test/pep.v1.Authorizer/Authorize"
BURST = 5
# worker: a burst and no refill; orchestrator: room for the outage test's load.
LIMITS = {"agents": {"worker": {"rate": 0, "burst": BURST}, "orchestrator": {"rate": 1000, "burst": 1000}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[list[Replica]]:
    """Three replicas in `local` mode and one in `deny` mode, on one Redis and one key prefix."""
    root = tmp_path_factory.mktemp("shared")
    write_estate(root / "policies")
    (root / "policies" / "limits.yaml").write_text(json.dumps(LIMITS))
    keys = devtoken.ensure_dev_keys(str(root / "keys"))
    state = {"redis_url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:8]}:", "timeout_ms": 200}
    replicas = [Replica(root, f"replica{i}", keys, state) for i in (1, 2, 3)]
    replicas.append(Replica(root, "deny", keys, {**state, "on_unavailable": "deny"}))
    try:
        for r in replicas:
            r.spawn()
        for r in replicas:
            r.ready()
        yield replicas
    finally:
        for r in replicas:
            r.stop()


def test_a_burst_across_three_replicas_is_admitted_burst_times_in_all(fleet: list[Replica]) -> None:
    replicas = fleet[:3]
    reasons = [replicas[i % 3].decide("worker") for i in range(6 * BURST)]
    assert reasons.count("allowed") == BURST, reasons
    assert set(reasons) == {"allowed", "rate_limited"}
    assert all(r.metric("pep_state_up") == 1.0 for r in replicas)


def test_a_dpop_proof_replayed_to_another_replica_is_refused(fleet: list[Replica]) -> None:
    one, two = fleet[0], fleet[1]
    key, jwk = devtoken.new_dpop_key()
    token = devtoken.mint_token(
        one.key,
        issuer=ISSUER,
        audience=AUDIENCE,
        sub="alice",
        act_chain=["orchestrator"],
        dpop_jkt=devtoken.jwk_thumbprint(jwk),
    )
    proof = devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=URI, access_token=token)
    fields = {"token": "DPoP " + token, "dpop_proof": proof, "http_method": "POST", "http_uri": URI}
    assert one.call("orchestrator", **fields).reason == "allowed"
    assert two.call("orchestrator", **fields).reason == "dpop_replay"
    assert fleet[2].call("orchestrator", **fields).reason == "dpop_replay"


def test_redis_stopped_and_restarted_local_goes_on_deny_refuses_both_recover(
    fleet: list[Replica], redis_server: RedisServer
) -> None:
    local, deny = fleet[0], fleet[3]
    assert local.decide("orchestrator") == deny.decide("orchestrator") == "allowed"
    redis_server.stop()
    try:
        local_reasons = [local.decide("orchestrator") for _ in range(20)]
        denied = [deny.call("orchestrator") for _ in range(20)]
        assert local_reasons == ["allowed"] * 20  # per-process buckets stand in
        assert {r.reason for r in denied} == {"internal_error"}, [r.reason for r in denied]
        assert all("shared state unavailable" in " ".join(r.errors) for r in denied)
        assert deny.decide("orchestrator2") == "allowed"  # no bucket applies: Redis is not needed
        for r in (local, deny):
            assert r.metric('pep_state_errors_total{op="ratelimit"}') >= 20
            assert r.metric("pep_state_up") == 0.0
        assert local.alive() and deny.alive()
    finally:
        redis_server.start()
    # Back without a restart of pep: the next call finds Redis.
    assert wait_for(lambda: deny.decide("orchestrator") == "allowed", timeout=FLEET_SECONDS)
    assert wait_for(lambda: local.decide("orchestrator") == "allowed" and local.metric("pep_state_up") == 1.0)
    assert deny.metric("pep_state_up") == 1.0
