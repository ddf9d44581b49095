"""The fleet-wide kill switch on a real Redis with real `pep serve` processes (issue 15, part 1).

Three replicas share one Redis: a flip through one replica's admin API, or through `pep admin
--state` with no pep at all, denies on every replica; a replica started after the flip denies
from its first decision; a Redis restarted empty gets the flip written back. Without Redis,
`state.file` keeps flips across a restart. Deadlines are generous (PEP_TEST_FLEET_SECONDS);
the measured times are printed (`pytest -s`), never asserted against the 1 s target.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pep._proto.pep.v1 import admin_pb2
from pep.cli import main
from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.replica import Replica
from tests.harness.waits import free_port, wait_for

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))


def start(*replicas: Replica) -> None:
    for r in replicas:  # spawned together: their start-ups overlap
        r.spawn()
    for r in replicas:
        r.ready()


def time_until_denied(replica: Replica, agent: str, since: float) -> float:
    assert wait_for(lambda: replica.decide(agent) == "agent_disabled", timeout=FLEET_SECONDS, step=0.01), (
        f"{replica.dir.name} still admits {agent} {FLEET_SECONDS:g}s after the flip"
    )
    return time.monotonic() - since


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str]]:
    root = tmp_path_factory.mktemp("fleet")
    write_estate(root / "policies")
    return root, devtoken.ensure_dev_keys(str(root / "keys"))


@pytest.fixture(scope="module")
def fleet(estate: tuple[Path, tuple[str, str]], redis_server: RedisServer) -> Iterator[tuple[list[Replica], dict]]:
    root, keys = estate
    state = {"redis_url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:8]}:"}
    replicas = [Replica(root, f"replica{i}", keys, state) for i in (1, 2, 3)]
    try:
        start(*replicas)
        yield replicas, state
    finally:
        for r in replicas:
            r.stop()


def test_a_flip_on_one_replica_denies_on_the_others(fleet: tuple[list[Replica], dict]) -> None:
    (one, two, three), _ = fleet
    assert [r.decide("worker") for r in (one, two, three)] == ["allowed"] * 3
    t0 = time.monotonic()
    req = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="worker", reason="compromised", actor="sre")
    assert one.admin().Disable(req, timeout=10).changed
    times = {r.dir.name: time_until_denied(r, "worker", t0) for r in (one, two, three)}
    print(f"\nflip through replica1's admin API -> agent_disabled: {times}")
    assert two.decide("orchestrator") == "allowed"  # only the flipped agent
    # Every replica that applied the flip logged it; replica 1 counts it as a fleet entry.
    assert wait_for(lambda: any(e.get("applied") == "fleet" and e["id"] == "worker" for e in two.events()))
    assert 'pep_killswitch_entries{kind="agent",scope="fleet",source="admin"} 1.0' in one.metrics()
    assert "pep_state_up 1.0" in one.metrics()
    status = three.admin().Status(admin_pb2.StatusRequest(), timeout=10)
    assert [(e.id, e.source, e.actor, e.reason) for e in status.entries] == [("worker", "admin", "sre", "compromised")]


def test_a_replica_started_after_the_flip_denies_from_its_first_decision(
    estate: tuple[Path, tuple[str, str]], fleet: tuple[list[Replica], dict]
) -> None:
    (one, _, _), state = fleet
    req = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="orchestrator4", reason="gone", actor="sre")
    one.admin().Disable(req, timeout=10)
    late = Replica(estate[0], f"late{uuid.uuid4().hex[:6]}", estate[1], state)
    try:
        start(late)
        assert late.decide("orchestrator4") == "agent_disabled"
        assert late.decide("orchestrator") == "allowed"
    finally:
        late.stop()


def test_pep_admin_state_flips_the_fleet_with_no_pep(
    fleet: tuple[list[Replica], dict], redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    replicas, state = fleet
    cli = ["admin", "--state", redis_server.url, "--key-prefix", state["key_prefix"]]
    t0 = time.monotonic()
    assert main([*cli, "disable", "agent", "orchestrator2", "--reason", "leaked key", "--actor", "oncall"]) == 0
    times = {r.dir.name: time_until_denied(r, "orchestrator2", t0) for r in replicas}
    assert "disabled agent orchestrator2 fleet-wide" in capsys.readouterr().out
    with capsys.disabled():
        print(f"\npep admin --state disable -> agent_disabled: {times}")
    assert main([*cli, "enable", "agent", "orchestrator2"]) == 0
    for r in replicas:
        assert wait_for(lambda r=r: r.decide("orchestrator2") == "allowed", timeout=FLEET_SECONDS)
    # A bad URL and an unreachable Redis: one line, exit 2.
    assert main(["admin", "--state", "http://127.0.0.1:1", "status"]) == 2
    assert main(["admin", "--state", f"redis://:hunter2@127.0.0.1:{free_port()}/0", "status"]) == 2
    err = capsys.readouterr().err
    assert "redis://, rediss://" in err and "hunter2" not in err and len(err.strip().splitlines()) == 2


def test_redis_restarted_empty_gets_the_flip_back(fleet: tuple[list[Replica], dict], redis_server: RedisServer) -> None:
    replicas, state = fleet
    req = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="orchestrator3", reason="contain", actor="sre")
    replicas[1].admin().Disable(req, timeout=10)
    for r in replicas:
        time_until_denied(r, "orchestrator3", time.monotonic())
    redis_server.restart()  # no persistence: it comes back empty
    t0 = time.monotonic()
    client = redis_server.client()
    field = "agent:orchestrator3"
    assert wait_for(lambda: client.hget(f"{state['key_prefix']}kills", field) is not None, timeout=FLEET_SECONDS + 10)
    print(f"\nRedis restarted empty -> flip written back after {time.monotonic() - t0:.2f}s")
    assert [r.decide("orchestrator3") for r in replicas] == ["agent_disabled"] * 3
    assert wait_for(lambda: "pep_state_up 1.0" in replicas[0].metrics())


def test_a_flip_made_while_redis_is_down_holds_at_once_and_reaches_the_fleet_when_it_returns(
    fleet: tuple[list[Replica], dict], redis_server: RedisServer
) -> None:
    (one, two, three), _ = fleet
    before = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="orchestrator2", reason="b", actor="sre")
    one.admin().Disable(before, timeout=10)
    time_until_denied(three, "orchestrator2", time.monotonic())
    redis_server.stop()
    try:
        assert wait_for(lambda: "pep_state_up 0.0" in one.metrics(), timeout=FLEET_SECONDS)
        req = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_USER, id="alice", reason="outage", actor="sre")
        assert two.admin().Disable(req, timeout=10).changed
        assert two.decide("orchestrator") == "agent_disabled"  # on the replica that took it: at once
        assert three.decide("orchestrator2") == "agent_disabled"  # the last known fleet list still holds
    finally:
        redis_server.start()
    t0 = time.monotonic()
    times = {r.dir.name: time_until_denied(r, "orchestrator", t0) for r in (one, three)}
    print(f"\nflip made during the outage -> agent_disabled after Redis returned: {times}")
    text = one.metrics()
    assert "pep_state_up 1.0" in text or wait_for(lambda: "pep_state_up 1.0" in one.metrics())
    errors = [line for line in text.splitlines() if line.startswith("pep_state_errors_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in errors) > 0


def test_state_file_keeps_flips_across_a_restart(estate: tuple[Path, tuple[str, str]], tmp_path: Path) -> None:
    root, keys = estate
    state_file = tmp_path / "state" / "kills.json"
    solo = Replica(root, f"solo{uuid.uuid4().hex[:6]}", keys, {"file": str(state_file)})
    try:
        start(solo)
        req = admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="orchestrator4", reason="x", actor="sre")
        assert solo.admin().Disable(req, timeout=10).changed
        assert solo.decide("orchestrator4") == "agent_disabled"
        solo.stop()
        assert json.loads(state_file.read_text())["entries"][0]["id"] == "orchestrator4"
        start(solo)
        assert solo.decide("orchestrator4") == "agent_disabled"
        assert solo.decide("orchestrator") == "allowed"
    finally:
        solo.stop()
