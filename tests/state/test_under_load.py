"""The fleet under load (issue 15): three `pep serve` replicas (and one in `deny` mode) on one real
Redis, each called continuously by its own client thread, while a kill flip goes through replica
1's admin API, Redis is stopped, and Redis comes back empty. Times and counts are printed as a
transcript (`pytest -s`); deadlines are generous (PEP_TEST_FLEET_SECONDS), never the 1 s target.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.replica import AUDIENCE, ISSUER, Replica
from tests.harness.waits import wait_for

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))
AGENT = "orchestrator"  # the load's agent: it has a bucket, so every call needs the shared state
LIMITS = {"agents": {AGENT: {"rate": 100000, "burst": 100000}}}


def say(text: str) -> None:
    print(f"[under load] {text}", flush=True)


class Load(threading.Thread):
    """Calls one replica back to back; keeps (start, end, outcome) of every call: a reason or `grpc:CODE`."""

    def __init__(self, replica: Replica, token: str) -> None:
        super().__init__(daemon=True)
        self.replica, self.stopping = replica, threading.Event()
        self.calls: list[tuple[float, float, str]] = []
        self.channel = grpc.insecure_channel(replica.listen)
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.req = pb.AuthorizeRequest(token=token, action="read", resource=pb.Resource(type="Doc", id="plan"))

    def run(self) -> None:
        stub = pb_grpc.AuthorizerStub(self.channel)
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                outcome = str(stub.Authorize(self.req, timeout=10).reason)
            except grpc.RpcError as e:
                outcome = f"grpc:{e.code().name}"
            self.calls.append((start, time.monotonic(), outcome))
            time.sleep(0.003)  # continuous, but leaves the shared cores to the servers

    def since(self, t: float) -> list[str]:
        return [o for s, _, o in list(self.calls) if s >= t]

    def first(self, outcome: str, t: float) -> float | None:
        return next((e - t for s, e, o in list(self.calls) if s >= t and o == outcome), None)

    def last(self) -> str:
        return self.calls[-1][2] if self.calls else ""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[list[Load]]:
    """Loads on replica1..3 (`local`) and on one `deny` replica, all on one Redis and key prefix."""
    root = tmp_path_factory.mktemp("under-load")
    write_estate(root / "policies")
    (root / "policies" / "limits.yaml").write_text(json.dumps(LIMITS))
    key, jwks = devtoken.ensure_dev_keys(str(root / "keys"))
    state = {"redis_url": redis_server.url, "key_prefix": f"l{uuid.uuid4().hex[:8]}:", "timeout_ms": 200}
    keys = (key, jwks)
    replicas = [Replica(root, f"replica{i}", keys, state).spawn() for i in (1, 2, 3)]
    replicas.append(Replica(root, "deny", keys, {**state, "on_unavailable": "deny"}).spawn())
    token = devtoken.mint_token(key, issuer=ISSUER, audience=AUDIENCE, sub="alice", act_chain=[AGENT], ttl_seconds=600)
    loads: list[Load] = []
    try:
        loads = [Load(r, token) for r in replicas]
        for load in loads:
            load.start()
        assert wait_for(lambda: all(load.last() == "allowed" for load in loads), timeout=30)
        yield loads
    finally:
        for load in loads:
            load.stopping.set()
            load.join(20)
            load.channel.close()
        for r in replicas:
            r.stop()
        if redis_server.proc is None:
            redis_server.start()


def flip(loads: list[Load], disable: bool) -> dict[str, float]:
    """Disable (or enable) AGENT through replica 1's admin API; seconds until each load saw it."""
    admin = loads[0].replica.admin()
    t0 = time.monotonic()
    if disable:
        admin.Disable(
            admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id=AGENT, reason="contain", actor="sre"),
            timeout=10,
        )
    else:
        admin.Enable(admin_pb2.EnableRequest(kind=admin_pb2.KILL_KIND_AGENT, id=AGENT, actor="sre"), timeout=10)
    want = "agent_disabled" if disable else "allowed"
    assert wait_for(lambda: all(load.first(want, t0) is not None for load in loads), timeout=FLEET_SECONDS), {
        load.replica.name: Counter(load.since(t0)) for load in loads
    }
    return {load.replica.name: round(load.first(want, t0) or 0.0, 3) for load in loads}


def test_the_fleet_under_load_kill_outage_and_recovery(fleet: list[Load], redis_server: RedisServer) -> None:
    loads, local, deny = fleet, fleet[:3], fleet[3]
    t_start = time.monotonic()

    # 1. A kill flip on replica 1 reaches the others while every replica is busy.
    seen = flip(loads, disable=True)
    say(f"flip on replica1 under load: agent_disabled seen after (s) {seen}")
    seen = flip(loads, disable=False)
    say(f"enable on replica1: allowed again after (s) {seen}")

    # 2. Redis stopped under load.
    errors_before = {load.replica.name: load.replica.metric('pep_state_errors_total{op="ratelimit"}') for load in loads}
    redis_server.stop()
    t_down = time.monotonic()
    time.sleep(2.5)
    down = {load.replica.name: Counter(load.since(t_down)) for load in loads}
    say(f"redis stopped for 2.5 s: outcomes per replica {dict((k, dict(v)) for k, v in down.items())}")
    for load in local:
        outcomes = down[load.replica.name]
        assert set(outcomes) == {"allowed"}, outcomes  # local: per-process buckets stand in, no error status
        assert load.replica.alive()
    assert set(down["deny"]) == {"internal_error"}, down["deny"]  # deny: refused, never allowed
    assert deny.replica.alive()
    for load in loads:
        errors = load.replica.metric('pep_state_errors_total{op="ratelimit"}') - errors_before[load.replica.name]
        assert errors > 0 and load.replica.metric("pep_state_up") == 0.0
    say(
        "pep_state_errors_total{op=ratelimit} now "
        + str({load.replica.name: load.replica.metric('pep_state_errors_total{op="ratelimit"}') for load in loads})
    )

    # 3. Redis back, empty: every replica recovers without a restart, and a new flip reaches all.
    redis_server.start()
    t_up = time.monotonic()
    assert wait_for(
        lambda: deny.last() == "allowed" and all(load.replica.metric("pep_state_up") == 1.0 for load in loads),
        timeout=FLEET_SECONDS,
    )
    say(f"redis restarted empty: deny replica allowed again after {deny.first('allowed', t_up):.3f} s")
    seen = flip(loads, disable=True)
    say(f"flip on replica1 after the restart: agent_disabled seen after (s) {seen}")
    seen = flip(loads, disable=False)
    never = [o for load in local for _, _, o in list(load.calls) if o.startswith("grpc:")]
    assert not never, Counter(never)
    assert all(load.replica.alive() for load in loads)
    totals = {load.replica.name: len(load.calls) for load in loads}
    say(f"calls per replica: {totals}; no gRPC error on replica1..3; {time.monotonic() - t_start:.1f} s in all")
