"""Revocation fleet-wide: two `pep serve` processes on one real redis-server. `pep admin revoke`
against one replica's admin API, or `pep admin --state` straight to Redis, and the other replica
denies the same (already verified and cached) token with token_revoked within a generous deadline
(PEP_TEST_FLEET_SECONDS); unrevoke lifts it on both."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pep.cli import main
from pep.dev import tokens as devtoken
from tests.harness.estate import write_estate
from tests.harness.replica import Replica
from tests.harness.waits import wait_for

if TYPE_CHECKING:
    from tests.harness.redis import RedisServer

FLEET_SECONDS = float(os.environ.get("PEP_TEST_FLEET_SECONDS", "10"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[tuple[list[Replica], dict]]:
    root = tmp_path_factory.mktemp("fleet-revoke")
    write_estate(root / "policies")
    keys = devtoken.ensure_dev_keys(str(root / "keys"))
    state = {"redis_url": redis_server.url, "key_prefix": f"r{uuid.uuid4().hex[:8]}:"}
    replicas = [Replica(root, f"replica{i}", keys, state) for i in (1, 2)]
    try:
        for r in replicas:
            r.spawn()
        for r in replicas:
            r.ready()
        yield replicas, state
    finally:
        for r in replicas:
            r.stop()


def reason(replica: Replica, token: str) -> str:
    return str(replica.call("", token=token).reason)


def denied_everywhere(replicas: list[Replica], token: str, want: str = "token_revoked") -> None:
    for r in replicas:
        assert wait_for(lambda r=r: reason(r, token) == want, timeout=FLEET_SECONDS, step=0.02), (
            f"{r.name} still says {reason(r, token)} {FLEET_SECONDS:g}s after the revoke"
        )


def test_revoke_an_agent_through_one_replica_denies_on_both(
    pair: tuple[list[Replica], dict], capsys: pytest.CaptureFixture[str]
) -> None:
    (one, two), _ = pair
    token = one.token("worker", now=time.time() - 60)
    assert [reason(r, token) for r in (one, two)] == ["allowed", "allowed"]  # verified and cached on both
    cli = ["admin", "--address", one.admin_listen]
    assert main([*cli, "revoke", "agent", "worker", "--reason", "key leaked", "--actor", "sre"]) == 0
    assert "revoked agent worker: tokens issued before" in capsys.readouterr().out
    denied_everywhere([one, two], token)
    detail = two.call("", token=token).errors[0]
    assert "when agent 'worker's tokens were revoked" in detail and token not in detail
    assert reason(two, one.token("orchestrator", now=time.time() - 60)) == "allowed"  # only that agent
    assert reason(two, one.token("worker", now=time.time() + 2)) == "allowed"  # issued after the revoke
    # Replica 2 logged the revocation it applied from the fleet.
    assert wait_for(lambda: any(e.get("action") == "revoke" and e.get("applied") == "fleet" for e in two.events()))
    assert main([*cli, "unrevoke", "agent", "worker"]) == 0
    denied_everywhere([one, two], token, want="allowed")


def test_pep_admin_state_revokes_with_no_pep(
    pair: tuple[list[Replica], dict], redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    replicas, state = pair
    token = replicas[0].token("orchestrator2", now=time.time() - 60)
    jti_token = replicas[0].token("orchestrator2", now=time.time() - 60)
    assert [reason(r, token) for r in replicas] == ["allowed", "allowed"]
    cli = ["admin", "--state", redis_server.url, "--key-prefix", state["key_prefix"]]
    assert main([*cli, "revoke", "user", "alice", "--reason", "phished", "--actor", "oncall"]) == 0
    out = capsys.readouterr().out
    assert "revoked user alice: tokens issued before" in out and "fleet-wide" in out
    denied_everywhere(replicas, token)
    assert main([*cli, "status"]) == 0
    assert "revoked user alice: tokens issued before" in capsys.readouterr().out
    assert main([*cli, "unrevoke", "user", "alice"]) == 0
    denied_everywhere(replicas, token, want="allowed")
    # One token by its jti.
    payload = jti_token.split(".")[1]
    jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    assert main([*cli, "revoke", "token", jti, "--reason", "leaked in a log"]) == 0
    denied_everywhere(replicas, jti_token)
    assert [reason(r, token) for r in replicas] == ["allowed", "allowed"]
    assert main([*cli, "unrevoke", "token", jti]) == 0
    capsys.readouterr()


def test_redis_keeps_the_later_time(redis_server: RedisServer) -> None:
    from pep.state import StoredKill
    from pep.state.redis_kills import connect, read_kills, write_kill

    client, prefix = connect(redis_server.url), f"t{uuid.uuid4().hex[:8]}:"
    try:
        at = [StoredKill("revoked_agent", "bot", "r", 1.0, before=b) for b in (100.0, 50.0, 200.0)]
        assert [write_kill(client, prefix, e, replace=True) for e in at] == [True, False, True]
        assert read_kills(client, prefix)[1][("revoked_agent", "bot")].before == 200.0
        jti = StoredKill("revoked_token", "j", "r", 1.0, before=5.0)
        assert write_kill(client, prefix, jti) and not write_kill(client, prefix, jti)
    finally:
        client.close()
