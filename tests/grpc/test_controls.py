"""Risk controls against a running server: kill switch (file and admin API), rate limits,
dry-run and shadow policies. Each asserts the reason code, and the log or metric it leaves."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2, admin_pb2_grpc
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.cli import main
from pep.config import parse_config
from pep.errors import ConfigError
from tests.harness.estate import write_estate
from tests.harness.server import Harness

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def metrics_text(h: Harness) -> str:
    with urllib.request.urlopen(f"http://{h.server.metrics_address}/metrics") as resp:
        return resp.read().decode()


@pytest.fixture
def fast(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory(reload={"settle_seconds": 0.05, "poll_seconds": 30})


# --- kill switch: file -----------------------------------------------------------------


def test_killswitch_file_disables_and_lifts(fast: Harness) -> None:
    deep = fast.token(act_chain=("worker", "orchestrator"))
    assert fast.authorize(deep).reason == "allowed"
    version = fast.server.store.current().version
    (fast.policies / "killswitch.yaml").write_text("disabled:\n  agents: [orchestrator]\n")
    assert wait_for(lambda: fast.server.store.current().version != version)
    r = fast.authorize(deep)  # the killed agent is deep inside the chain
    assert (r.decision, r.reason) == (DENY, "agent_disabled")
    assert "orchestrator" in r.errors[0]
    assert fast.authorize(fast.token()).reason == "allowed"  # others unaffected
    (fast.policies / "killswitch.yaml").unlink()
    assert wait_for(lambda: fast.authorize(deep).reason == "allowed")


@pytest.mark.parametrize(
    ("yaml_text", "token_kwargs", "reason"),
    [
        ("disabled:\n  all: true\n", {}, "agent_disabled"),
        ("disabled:\n  agent_groups: [workers]\n", {}, "agent_disabled"),
        ("disabled:\n  users: [alice]\n", {}, "agent_disabled"),
        ("disabled:\n  users: [alice]\n", {"sub": "bob"}, "allowed"),
        ("disabled:\n  issuers: ['https://idp.test']\n", {}, "agent_disabled"),
    ],
)
def test_killswitch_file_kinds(
    harness_factory: Callable[..., Harness], tmp_path: Path, yaml_text: str, token_kwargs: dict, reason: str
) -> None:
    policies = write_estate(tmp_path / "estate")
    (policies / "killswitch.yaml").write_text(yaml_text)
    h = harness_factory(policies)
    assert h.authorize(h.token(**token_kwargs)).reason == reason


def test_all_disabled_denies_even_a_bad_token(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    policies = write_estate(tmp_path / "estate")
    (policies / "killswitch.yaml").write_text("disabled:\n  all: true\n")
    h = harness_factory(policies)
    assert h.authorize("garbage").reason == "agent_disabled"


def test_invalid_killswitch_file_is_rejected_whole(fast: Harness) -> None:
    version = fast.server.store.current().version
    (fast.policies / "killswitch.yaml").write_text("disabled:\n  agents: worker\n")
    assert wait_for(lambda: fast.server.store.last_error is not None)
    assert "killswitch.yaml" in str(fast.server.store.last_error)
    assert fast.server.store.current().version == version


# --- kill switch: admin API and CLI ----------------------------------------------------


def test_admin_cli_disables_immediately_and_survives_reload(fast: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    admin = fast.server.admin_address
    deep = fast.token(act_chain=("worker", "orchestrator"))
    assert fast.authorize(deep).reason == "allowed"
    code = main(
        ["admin", "--address", admin, "disable", "agent", "orchestrator", "--reason", "incident 42", "--actor", "sre"]
    )
    assert code == 0
    assert "disabled agent orchestrator" in capsys.readouterr().out
    r = fast.authorize(deep)  # the very next call
    assert (r.decision, r.reason) == (DENY, "agent_disabled")
    # A reload does not lift it.
    version = fast.server.store.current().version
    (fast.policies / "note.cedar").write_text("// a change\n")
    assert wait_for(lambda: fast.server.store.current().version != version)
    assert fast.authorize(deep).reason == "agent_disabled"
    assert main(["admin", "--address", admin, "status"]) == 0
    out = capsys.readouterr().out
    assert "disabled agent orchestrator (admin since" in out and "by sre): incident 42" in out
    assert 'pep_killswitch_entries{kind="agent",scope="local",source="admin"} 1.0' in metrics_text(fast)
    assert main(["admin", "--address", admin, "enable", "agent", "orchestrator"]) == 0
    assert fast.authorize(deep).reason == "allowed"
    events = [line for line in fast.log_lines(5) if line.get("event") == "admin"]
    assert [(e["action"], e["kind"], e["id"]) for e in events] == [
        ("disable", "agent", "orchestrator"),
        ("enable", "agent", "orchestrator"),
    ]
    assert events[0]["reason"] == "incident 42" and events[0]["actor"] == "sre"


def test_admin_disable_everything_and_groups(fast: Harness) -> None:
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(fast.server.admin_address))
    stub.Disable(admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT_GROUP, id="workers", reason="r"))
    assert fast.authorize(fast.token()).reason == "agent_disabled"
    stub.Enable(admin_pb2.EnableRequest(kind=admin_pb2.KILL_KIND_AGENT_GROUP, id="workers"))
    stub.Disable(admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_ALL, reason="stop"))
    assert fast.authorize(fast.token()).reason == "agent_disabled"
    resp = stub.Enable(admin_pb2.EnableRequest(kind=admin_pb2.KILL_KIND_ALL))
    assert resp.changed and not resp.status.entries
    assert fast.authorize(fast.token()).reason == "allowed"


@pytest.mark.parametrize(
    "request_",
    [
        admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="worker"),  # no reason
        admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, reason="r"),  # no id
        admin_pb2.DisableRequest(id="worker", reason="r"),  # no kind
    ],
)
def test_admin_rejects_incomplete_requests(fast: Harness, request_: admin_pb2.DisableRequest) -> None:
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(fast.server.admin_address))
    with pytest.raises(grpc.RpcError) as info:
        stub.Disable(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_admin_is_not_on_the_public_port(fast: Harness) -> None:
    stub = admin_pb2_grpc.AdminStub(fast.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Status(admin_pb2.StatusRequest())
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("address", ["0.0.0.0:50052", "10.1.2.3:50052", "[::]:50052"])
def test_admin_refuses_non_local_addresses(address: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"admin_listen": address})
    assert info.value.key == "admin_listen"
    assert parse_config({"admin_listen": address, "admin_allow_remote": True}).admin_listen == address


def test_admin_over_a_unix_socket(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    h = harness_factory(admin_listen=f"unix://{sock}")
    assert main(["admin", "--address", f"unix://{sock}", "disable", "user", "alice", "--reason", "left"]) == 0
    assert h.authorize(h.token()).reason == "agent_disabled"


# --- rate limits, dry-run, shadow ------------------------------------------------------


def test_rate_limit_burst_is_exact(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    policies = write_estate(tmp_path / "estate")
    # A refill of one token per 1,000 seconds: nothing refills during the test.
    (policies / "limits.yaml").write_text(
        "default: {rate: 100, burst: 100}\nagents:\n  worker: {rate: 0.001, burst: 3}\n"
    )
    h = harness_factory(policies)
    token = h.token()
    reasons = [h.authorize(token).reason for _ in range(7)]
    assert reasons == ["allowed"] * 3 + ["rate_limited"] * 4
    other = h.token(act_chain=("orchestrator",))
    assert h.authorize(other).reason == "allowed"  # buckets are per agent
    assert 'reason="rate_limited"' in metrics_text(h)


def test_dry_run_answers_allow_and_logs_the_real_decision(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(mode="dry_run")
    r = h.authorize(h.token(), resource=("Doc", "keys"))
    assert (r.decision, r.reason) == (ALLOW, "policy_forbid")
    bad = h.authorize("garbage")
    assert (bad.decision, bad.reason) == (ALLOW, "token_malformed")
    lines = h.log_lines(2)
    assert (lines[0]["decision"], lines[0]["mode"], lines[0]["answered"]) == ("deny", "dry_run", "allow")
    text = metrics_text(h)
    assert 'pep_decisions_total{action="read",decision="deny",reason="policy_forbid"} 1.0' in text
    with pytest.raises(grpc.RpcError) as info:  # malformed requests are still errors
        h.authorize(h.token(), action="")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_shadow_policies_are_counted_and_logged_but_never_enforced(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    policies = write_estate(tmp_path / "estate")
    (policies / "shadow").mkdir()
    # The candidate change: orchestrators may no longer read.
    (policies / "shadow" / "docs.cedar").write_text(
        (policies / "docs.cedar").read_text()
        + '\n@id("no-orchestrator-reads")\nforbid(principal in AgentGroup::"orchestrators", action, resource);\n'
    )
    (policies / "shadow" / "delegation.cedar").write_text((policies / "delegation.cedar").read_text())
    h = harness_factory(policies)
    same = h.authorize(h.token())
    diverging = h.authorize(h.token(act_chain=("orchestrator",)))
    assert (same.decision, diverging.decision, diverging.reason) == (ALLOW, ALLOW, "allowed")
    lines = h.log_lines(2)
    assert "shadow" not in lines[0]
    assert lines[1]["shadow"] == {
        "decision": "deny",
        "reason": "policy_forbid",
        "policies": ["no-orchestrator-reads"],
        "errors": [],
    }
    assert 'pep_shadow_divergences_total{action="read"} 1.0' in metrics_text(h)
