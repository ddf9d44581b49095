"""`pep replay` over a real server's real decision log.

One pep serves a varied workload over gRPC (allows, forbids, no-permit, evaluation errors, batch
checks, resource attributes and parents, user groups and claims, token times, token failures, a
killed and a suspended agent) and AuthZEN (trusted subjects); its log is then replayed. Against
the same directory nothing may change, for every entry (a property over generated workloads);
against an edited copy exactly the decisions that flip are listed.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pep._proto.pep.v1 import admin_pb2, admin_pb2_grpc
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.cli import main
from pep.pipeline.replay import read_entries, replay, skip_reason
from pep.policy.loader import load_snapshot
from tests.harness.authzen import Client
from tests.harness.decision_log import read_entries as log_lines
from tests.harness.estate import AGENTS, STD_CONTEXT, write_estate
from tests.harness.server import Harness, open_harness, struct

OPTIONAL_STD = STD_CONTEXT.replace("delegation:", "delegation?:").replace("token:", "token?:")
OPTIONAL_STD = OPTIONAL_STD.replace("binding:", "binding?:")

SCHEMA = f"""
entity AgentGroup;
entity Agent in [AgentGroup] {{ sandboxed?: Bool }};
entity Group;
entity User in [Group] {{ dept?: String }};
entity Folder;
entity Doc in [Folder] {{ classification?: String }};
action read, write appliesTo {{
  principal: [Agent, User], resource: [Doc],
  context: {{ {OPTIONAL_STD} amount?: Long, note?: String, card?: {{ number: String }} }}
}};
action delegate appliesTo {{ principal: [User, Agent], resource: [Agent], context: {{ {OPTIONAL_STD} }} }};
"""

DOCS = """
@id("read-docs")
permit(principal in AgentGroup::"workers", action == Action::"read", resource);

@id("no-secrets")
forbid(principal, action, resource)
when { resource has classification && resource.classification == "secret" };

// Errors (Long overflow) for any amount other than 0 or 1: strict mode denies.
@id("write-overflow")
permit(principal in AgentGroup::"workers", action == Action::"write", resource)
when { context has amount && context.amount * 4611686018427387904 > 1 };

@id("shared-folder")
permit(principal in AgentGroup::"workers", action == Action::"write", resource in Folder::"shared");

@id("hr-only")
forbid(principal, action == Action::"read", resource == Doc::"hr")
unless { context has on_behalf_of && context.on_behalf_of in Group::"hr" };

@id("no-contractors")
forbid(principal, action == Action::"write", resource)
when { context has on_behalf_of && context.on_behalf_of has dept && context.on_behalf_of.dept == "contractors" };

@id("short-tokens")
forbid(principal, action == Action::"write", resource)
when { context has token && context.token.expires_at - context.token.issued_at > 3600 };

// A token's docs:admin scope forbids writing; worker's registry entry drops it (scopes below).
@id("no-admin-writes")
forbid(principal, action == Action::"write", resource)
when { context has token && context.token.scopes.contains("docs:admin") };

@id("ops-subjects-read")
permit(principal is User, action == Action::"read", resource) when { principal has dept && principal.dept == "ops" };
"""

DELEGATION = """
@id("users-delegate-to-workers")
permit(principal is User, action == Action::"delegate", resource in AgentGroup::"workers");

@id("orchestrators-delegate")
permit(principal in AgentGroup::"orchestrators", action == Action::"delegate", resource in AgentGroup::"workers");
"""

ENTITIES = json.dumps(
    [
        {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"classification": "internal"}, "parents": []},
        {"uid": {"type": "Doc", "id": "keys"}, "attrs": {"classification": "secret"}, "parents": []},
        {"uid": {"type": "Doc", "id": "hr"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Folder", "id": "shared"}, "attrs": {}, "parents": []},
    ]
)


# worker may use docs:read alone: policies never see a docs:admin its token carries.
WORKER_LINE = "{id: worker, owner: team@example.com, groups: [workers], attributes: {sandboxed: true}}"
assert WORKER_LINE in AGENTS
REPLAY_AGENTS = AGENTS.replace(WORKER_LINE, WORKER_LINE[:-1] + ", scopes: [docs:read]}")


def replay_estate(root: Path) -> Path:
    return write_estate(
        root,
        schema=SCHEMA,
        agents=REPLAY_AGENTS,
        entities=ENTITIES,
        policies={"docs.cedar": DOCS, "delegation.cedar": DELEGATION},
    )


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One check: action, resource (with attributes and parents as sent), context."""

    action: str = "read"
    resource: tuple[str, str] = ("Doc", "plan")
    attributes: dict[str, Any] | None = None
    parents: tuple[tuple[str, str], ...] = ()
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step:
    """One request: `kind` grpc | batch | authzen | expired | garbage | killed."""

    kind: str = "grpc"
    asks: tuple[Ask, ...] = (Ask(),)
    sub: str = "alice"
    chain: tuple[str, ...] = ("worker",)
    groups: tuple[str, ...] = ()
    dept: str | None = None
    ttl: int = 300
    subject: dict[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()


@dataclass
class Served:
    h: Harness
    authzen: Client
    admin: admin_pb2_grpc.AdminStub


def _resource(ask: Ask) -> pb.Resource:
    res = pb.Resource(type=ask.resource[0], id=ask.resource[1])
    if ask.attributes is not None:
        res.attributes.CopyFrom(struct(ask.attributes))
    res.parents.extend(pb.EntityRef(type=t, id=i) for t, i in ask.parents)
    return res


def _check_fields(ask: Ask) -> dict[str, Any]:
    fields: dict[str, Any] = {"action": ask.action, "resource": _resource(ask)}
    if ask.context is not None:
        fields["context"] = struct(ask.context)
    return fields


def _token(s: Served, step: Step) -> str:
    extra: dict[str, Any] = {}
    if step.groups:
        extra["groups"] = list(step.groups)
    if step.dept is not None:
        extra["dept"] = step.dept
    now = time.time() - 1000 if step.kind == "expired" else None
    return s.h.token(step.sub, step.chain, ttl_seconds=step.ttl, extra_claims=extra, now=now, scopes=step.scopes)


def send(s: Served, step: Step) -> int:
    """Send one step; the number of log lines it writes (decisions and admin events)."""
    stub = s.h.stub
    if step.kind == "authzen":
        ask = step.asks[0]
        resource: dict[str, Any] = {"type": ask.resource[0], "id": ask.resource[1]}
        if ask.attributes is not None:
            resource["properties"] = ask.attributes
        body = {"subject": step.subject, "action": {"name": ask.action}, "resource": resource}
        if ask.context is not None:
            body["context"] = ask.context
        assert s.authzen.evaluation(body).status in (200, 400)
        return 1
    token = "garbage" if step.kind == "garbage" else _token(s, step)
    try:
        if step.kind == "batch":
            checks = [pb.Check(**_check_fields(a)) for a in step.asks]
            stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token=token, checks=checks), timeout=10)
            return len(step.asks)
        if step.kind == "killed":  # the kill switch flipped for the current agent, around one request
            kind, agent = admin_pb2.KILL_KIND_AGENT, (step.chain or (step.sub,))[0]
            s.admin.Disable(admin_pb2.DisableRequest(kind=kind, id=agent, reason="incident"), timeout=10)
            try:
                stub.Authorize(pb.AuthorizeRequest(token=token, **_check_fields(step.asks[0])), timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            finally:
                s.admin.Enable(admin_pb2.EnableRequest(kind=kind, id=agent), timeout=10)
            return 3
        stub.Authorize(pb.AuthorizeRequest(token=token, **_check_fields(step.asks[0])), timeout=10)
    except grpc.RpcError as e:  # INVALID_ARGUMENT: still one logged decision per check
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    return len(step.asks)


def run(s: Served, steps: list[Step]) -> list[dict[str, Any]]:
    """Send `steps`; the decision entries they wrote, in order (admin events left out)."""
    before = len(log_lines(s.h.log_path))
    expected = before + sum(send(s, step) for step in steps)
    deadline = time.monotonic() + 10
    while len(lines := log_lines(s.h.log_path)) < expected:
        assert time.monotonic() < deadline, f"{len(lines)} log lines, expected {expected}"
        time.sleep(0.02)
    assert len(lines) == expected
    return [e for e in lines[before:] if "event" not in e]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("replay")
    policies = replay_estate(root / "policies")
    h = open_harness(
        root,
        policies,
        identity={"user_claims": ["dept"]},
        decision_log={"sink": str(root / "decisions.log"), "redact_context": ["card.number"], "max_inputs_bytes": 1024},
        authzen={"listen": "127.0.0.1:0", "trust_subject": True},
    )
    channel = grpc.insecure_channel(h.server.admin_address)
    try:
        yield Served(h, Client(h.server.authzen_address), admin_pb2_grpc.AdminStub(channel))
    finally:
        channel.close()
        h.close()


SHARED = (("Folder", "shared"),)
CARL = {"type": "User", "id": "carl", "properties": {"dept": "ops"}}
WORKER = {"type": "Agent", "id": "worker"}

# (step, expected live reason(s), replayed?) for the fixed workload.
FIXED: list[tuple[Step, tuple[str, ...]]] = [
    (Step(), ("allowed",)),
    (Step(asks=(Ask(resource=("Doc", "keys")),)), ("policy_forbid",)),
    (Step(sub="loner", chain=()), ("policy_no_permit",)),
    (Step(asks=(Ask("write", context={"amount": 2}),)), ("evaluation_error",)),
    (Step(asks=(Ask("write", context={"amount": 1}),)), ("allowed",)),
    (Step(asks=(Ask(resource=("Doc", "draft"), attributes={"classification": "secret"}),)), ("policy_forbid",)),
    (Step(asks=(Ask("write", ("Doc", "new"), parents=SHARED),)), ("allowed",)),
    (Step(asks=(Ask(resource=("Doc", "hr")),), groups=("hr", "eng")), ("allowed",)),
    (Step(asks=(Ask(resource=("Doc", "hr")),)), ("policy_forbid",)),
    (Step(asks=(Ask("write", ("Doc", "new"), parents=SHARED),), dept="contractors"), ("policy_forbid",)),
    (Step(asks=(Ask("write", context={"amount": 1}),), ttl=7200), ("policy_forbid",)),
    (
        Step("batch", (Ask(), Ask(resource=("Doc", "keys")), Ask("write", ("Doc", "new"), parents=SHARED))),
        ("allowed", "policy_forbid", "allowed"),
    ),
    (Step(asks=(Ask(context={"amount": "x"}),)), ("invalid_request",)),  # Cedar: not the schema's type
    (Step(asks=(Ask(attributes={"classification": "x"}),)), ("invalid_request",)),  # INVALID_ARGUMENT
    (Step("expired"), ("token_expired",)),
    (Step("garbage"), ("token_malformed",)),
    (Step("killed"), ("agent_disabled",)),
    (Step(chain=("sleepy",)), ("agent_disabled",)),
    (Step(chain=("loner",)), ("chain_delegation_forbidden",)),
    (Step(asks=(Ask(context={"card": {"number": "4111111111111111"}}),)), ("allowed",)),
    (Step(asks=(Ask(context={"note": "n" * 1500}),)), ("allowed",)),
    (Step("authzen", subject=CARL), ("allowed",)),
    (Step("authzen", (Ask(resource=("Doc", "keys")),), subject=WORKER), ("policy_forbid",)),
    (Step("authzen", subject={"type": "Robot", "id": "r2"}), ("invalid_request",)),
]
SKIPPED = {
    "invalid_request": 1,
    "token_expired": 1,
    "token_malformed": 1,
    "agent_disabled": 2,
    "chain_delegation_forbidden": 1,
    "inputs_redacted": 1,
    "inputs_truncated": 1,
}


@pytest.fixture(scope="module")
def fixed(served: Served, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The fixed workload's entries, and a log file holding just them (plus the admin events)."""
    entries = run(served, [step for step, _ in FIXED])
    assert [e["reason"] for e in entries] == [r for _, reasons in FIXED for r in reasons]
    wanted = {e["decision_id"] for e in entries}
    log = tmp_path_factory.mktemp("fixed") / "decisions.log"
    with log.open("w") as out:
        for line in served.h.log_path.read_text().splitlines(keepends=True):
            entry = json.loads(line)
            if entry.get("decision_id") in wanted or entry.get("event"):
                out.write(line)
    return log, entries


def replay_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    try:
        code = main(["replay", *args])
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_against_the_same_directory_changes_nothing(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    log, entries = fixed
    code, out, err = replay_cli(capsys, str(log), "--policies", str(served.h.policies), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    evaluated = [e for e in entries if e.get("inputs", {}).get("evaluated")]
    assert report == {
        "total": len(entries),
        "replayed": len(evaluated) - 2,  # the redacted and the truncated one
        "skipped": sum(SKIPPED.values()),
        "changed": 0,
        "changes": [],
        "skipped_reasons": SKIPPED,
    }
    assert report["replayed"] == 18
    # What the entries carried, as the live server saw it.
    by_reason = {e["reason"]: e for e in entries}
    assert by_reason["token_expired"]["inputs"]["evaluated"] is False
    hr = next(e for e in entries if e["resource"]["id"] == "hr" and e["decision"] == "allow")
    assert hr["inputs"]["user"] == {"groups": ["hr", "eng"], "attributes": {}}
    new = next(e for e in entries if e["resource"]["id"] == "new")
    assert new["inputs"]["resource"] == {"parents": [{"type": "Folder", "id": "shared"}]}
    times = new["inputs"]["token"]
    assert times["expires_at"] - times["issued_at"] == 300
    carl = next(e for e in entries if e.get("inputs", {}).get("subject", {}).get("id") == "carl")
    assert carl["inputs"]["subject"] == CARL


def test_replay_reads_gzipped_rotated_logs_and_warns_on_lines_that_are_not_json(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = fixed
    lines = log.read_text().splitlines(keepends=True)
    half = len(lines) // 2
    rotated = tmp_path / "decisions.log.1.gz"
    with gzip.open(rotated, "wt") as f:
        f.writelines(lines[:half])
    current = tmp_path / "decisions.log"
    current.write_text("".join(lines[half:]) + "not json\n")
    code, out, err = replay_cli(
        capsys, str(rotated), str(current), "--policies", str(served.h.policies), "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["skipped_reasons"] == SKIPPED
    assert err.strip() == f"pep replay: warning: {current}:{len(lines) - half + 1}: not a JSON entry, skipped"


def test_replay_against_an_edited_directory_lists_what_flips(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, entries = fixed
    edited = tmp_path / "edited"
    shutil.copytree(served.h.policies, edited)
    docs = (edited / "docs.cedar").read_text()
    forbid = (
        "forbid(principal, action, resource)\n"
        'when { resource has classification && resource.classification == "secret" };'
    )
    assert forbid in docs
    docs = docs.replace('@id("no-secrets")\n' + forbid, "")  # the forbid is gone
    docs = docs.replace('@id("read-docs")', '@id("read-docs-v2")')
    (edited / "docs.cedar").write_text(docs)
    code, out, err = replay_cli(capsys, str(log), "--policies", str(edited), "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    changes = {c["decision_id"]: c for c in report["changes"]}
    # Every secret read that no-secrets forbade is now allowed (read-docs-v2 and the former forbid).
    flipped = [e for e in entries if e["policies"] == ["no-secrets"] and skip_reason(e) is None]
    assert len(flipped) == 4  # keys, the secret draft, the batch's keys, the AuthZEN agent's keys
    for e in flipped:
        change = changes.pop(e["decision_id"])
        assert change == {
            "decision_id": e["decision_id"],
            "agent": e["agent"],
            "action": "read",
            "resource": e["resource"],
            "before": {"decision": "deny", "reason": "policy_forbid", "policies": ["no-secrets"]},
            "after": {"decision": "allow", "reason": "allowed", "policies": ["read-docs-v2"]},
        }
    # The allows read-docs decided: the same decision, another determining policy; not counted.
    renamed = [e for e in entries if e["policies"] == ["read-docs"] and skip_reason(e) is None]
    assert len(renamed) == 3
    for e in renamed:
        change = changes.pop(e["decision_id"])
        assert change["before"] == {"decision": "allow", "reason": "allowed", "policies": ["read-docs"]}
        assert change["after"] == {"decision": "allow", "reason": "allowed", "policies": ["read-docs-v2"]}
    assert changes == {}  # nothing else is listed
    assert report["changed"] == 4 and report["replayed"] == 18
    # The text report: a summary, then one line per change.
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(edited))
    assert code == 1
    text = out.splitlines()
    assert text[0].startswith(f"replayed 18 of {len(entries)} decisions against {edited} (policy version ")
    assert text[0].endswith(": 4 changed, 3 with other determining policies only")
    assert text[1].startswith("skipped 8: agent_disabled 2, chain_delegation_forbidden 1,")
    assert sum(line.startswith("changed ") for line in text) == 4
    assert sum(line.startswith("policies ") for line in text) == 3
    assert any('read Doc::"keys": deny (policy_forbid) [no-secrets] -> allow (allowed)' in line for line in text)


def test_a_suspended_agent_flips_every_decision_it_took_part_in(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, entries = fixed
    edited = tmp_path / "edited"
    shutil.copytree(served.h.policies, edited)
    agents = (edited / "agents.yaml").read_text()
    (edited / "agents.yaml").write_text(
        agents.replace("groups: [workers], attributes", "status: suspended, groups: [workers], attributes")
    )
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(edited), "--format", "json")
    report = json.loads(out)
    worker = [e for e in entries if skip_reason(e) is None and "worker" in e["delegation_chain"]]
    assert code == 1 and report["changed"] == len(worker) > 10
    assert {c["after"]["reason"] for c in report["changes"]} == {"agent_disabled"}


def test_usage_errors_exit_2(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = fixed
    policies = str(served.h.policies)
    code, _, err = replay_cli(capsys, str(tmp_path / "missing.log"), "--policies", policies)
    assert code == 2 and err.strip() == f"pep replay: {tmp_path / 'missing.log'}: no such log file"
    code, _, err = replay_cli(capsys, str(log), "--policies", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    shutil.copytree(served.h.policies, broken)
    (broken / "docs.cedar").write_text("permit(principal, action, resource")
    code, _, err = replay_cli(capsys, str(log), "--policies", str(broken))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"pep replay: {broken}: the policy directory does not load: {broken / 'docs.cedar'}:")
    code, _, err = replay_cli(capsys, str(log))
    assert code == 2 and "--policies" in err
    code, _, _ = replay_cli(capsys, str(log), "--policies", policies, "--format", "yaml")
    assert code == 2
    corrupt = tmp_path / "cut.log.gz"
    corrupt.write_bytes(gzip.compress(log.read_bytes())[:40])
    code, _, err = replay_cli(capsys, str(corrupt), "--policies", policies)
    assert code == 2 and "cannot read the log" in err


def test_entries_from_before_inputs_are_skipped_as_no_inputs(
    served: Served, fixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, entries = fixed
    old = tmp_path / "old.log"
    old.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "inputs"}) + "\n" for e in entries))
    code, out, _ = replay_cli(capsys, str(old), "--policies", str(served.h.policies), "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["replayed"] == 0
    # By the logged reason where it never reached the policies, else no_inputs.
    assert report["skipped_reasons"]["token_expired"] == 1
    # The 18, the redacted one and the malformed one (the truncated one kept its flag).
    assert report["skipped_reasons"]["no_inputs"] == 18 + 2


def test_a_batch_is_replayed_as_it_was_asked(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One Cedar request: the draft the first check describes is the draft the second one reads.
    secret = Ask(resource=("Doc", "draft"), attributes={"classification": "secret"})
    entries = run(served, [Step("batch", (secret, Ask(resource=("Doc", "draft")), Ask()))])
    assert [e["reason"] for e in entries] == ["policy_forbid", "policy_forbid", "allowed"]
    batch = entries[0]["inputs"]["batch"]
    assert batch["size"] == 3 and all(e["inputs"]["batch"] == batch for e in entries)
    log = tmp_path / "batch.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(served.h.policies), "--format", "json")
    assert code == 0 and json.loads(out)["replayed"] == 3 and json.loads(out)["changes"] == []
    # Without the rest of its batch, a check is not replayed alone: it would not see what they described.
    log.write_text(json.dumps(entries[1]) + "\n")
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(served.h.policies), "--format", "json")
    assert code == 0 and json.loads(out)["skipped_reasons"] == {"batch_incomplete": 1}
    # A redacted check makes its whole batch unreplayable.
    entries = run(served, [Step("batch", (Ask(context={"card": {"number": "4242"}}), Ask()))])
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(served.h.policies), "--format", "json")
    assert json.loads(out)["skipped_reasons"] == {"inputs_redacted": 1, "batch_incomplete": 1}


# --- the property: replay is the live decision, for every entry --------------------------

CONTEXTS = st.sampled_from([None, {}, {"amount": 0}, {"amount": 1}, {"amount": 2}, {"amount": "x"}, {"note": "hi"}])
ASKS = st.builds(
    Ask,
    action=st.sampled_from(["read", "write"]),
    resource=st.sampled_from([("Doc", "plan"), ("Doc", "keys"), ("Doc", "hr"), ("Doc", "draft"), ("Doc", "new")]),
    attributes=st.sampled_from([None, {"classification": "secret"}, {"classification": "public"}]),
    parents=st.sampled_from([(), SHARED]),
    context=CONTEXTS,
)
TOKEN_STEPS = st.builds(
    Step,
    kind=st.sampled_from(["grpc", "grpc", "grpc", "batch", "expired", "garbage", "killed"]),
    asks=st.lists(ASKS, min_size=1, max_size=3).map(tuple),
    sub=st.sampled_from(["alice", "bob"]),
    chain=st.sampled_from([("worker",), ("worker", "orchestrator"), ("loner",), ("sleepy",), ("old",), ("ghost",)]),
    groups=st.sampled_from([(), ("hr",), ("eng", "hr")]),
    dept=st.sampled_from([None, "eng", "contractors"]),
    ttl=st.sampled_from([300, 7200]),
    scopes=st.sampled_from([(), ("docs:admin",), ("docs:admin", "docs:read")]),
)
# Batches of checks on a few resources, some described and some not: one check sees what another describes.
BATCHES = st.builds(
    Step,
    kind=st.just("batch"),
    asks=st.lists(
        st.builds(
            Ask,
            action=st.sampled_from(["read", "write"]),
            resource=st.sampled_from([("Doc", "draft"), ("Doc", "new")]),
            attributes=st.sampled_from([None, {"classification": "secret"}]),
            parents=st.sampled_from([(), SHARED]),
        ),
        min_size=2,
        max_size=4,
    ).map(tuple),
    chain=st.sampled_from([("worker",), ("worker", "orchestrator")]),
)
AUTONOMOUS = st.builds(
    Step,
    asks=st.tuples(ASKS),
    sub=st.sampled_from(["loner", "worker"]),
    chain=st.just(()),
    scopes=st.sampled_from([(), ("docs:admin",)]),
)
SUBJECTS = st.builds(
    Step,
    kind=st.just("authzen"),
    asks=st.tuples(ASKS),
    subject=st.sampled_from([CARL, WORKER, {"type": "User", "id": "dan"}, {"type": "Agent", "id": "sleepy"}]),
)
STEPS = st.lists(st.one_of(TOKEN_STEPS, BATCHES, AUTONOMOUS, SUBJECTS), min_size=1, max_size=6)


def _single(step: Step) -> Step:
    """A non-batch step sends its first check only."""
    return step if step.kind == "batch" else Step(**{**step.__dict__, "asks": step.asks[:1]})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_replay_is_the_live_decision_for_every_entry(served: Served, steps: list[Step]) -> None:
    entries = run(served, [_single(s) for s in steps])
    snapshot = load_snapshot(str(served.h.policies))
    report = replay(snapshot, entries)
    assert report.changes == []
    evaluated = [e for e in entries if e.get("inputs", {}).get("evaluated")]
    assert report.replayed == len(evaluated)  # nothing here is redacted or truncated
    assert report.total == len(entries) == report.replayed + report.skipped
    for e in entries:  # every decision of the policies says so
        if e["reason"] in ("allowed", "policy_forbid", "policy_no_permit", "evaluation_error"):
            assert e["inputs"]["evaluated"] is True
        if e["agent"] == "worker" and "docs:admin" in e["token"]["scopes"]:
            assert e["scopes_dropped"] == ["docs:admin"]


def test_replay_minimizes_the_scopes_with_the_directory_s_registry(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write = Ask("write", context={"amount": 1})
    entries = run(
        served,
        [
            Step(asks=(write,), scopes=("docs:admin",)),
            Step(asks=(write,), sub="loner", chain=(), scopes=("docs:admin",)),
        ],
    )
    assert [(e["agent"], e["reason"], e["scopes_dropped"]) for e in entries] == [
        ("worker", "allowed", ["docs:admin"]),  # the registry dropped it: the forbid never saw it
        ("loner", "policy_forbid", []),  # loner lists no scopes: its token's stand
    ]
    log = tmp_path / "scopes.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(served.h.policies), "--format", "json")
    assert code == 0 and json.loads(out)["changes"] == []
    # A registry that lets worker hold docs:admin: its write is forbidden now.
    edited = tmp_path / "edited"
    shutil.copytree(served.h.policies, edited)
    agents = (edited / "agents.yaml").read_text()
    (edited / "agents.yaml").write_text(agents.replace("scopes: [docs:read]", "scopes: [docs:read, docs:admin]"))
    code, out, _ = replay_cli(capsys, str(log), "--policies", str(edited), "--format", "json")
    changes = json.loads(out)["changes"]
    assert code == 1 and [(c["agent"], c["after"]["reason"], c["after"]["policies"]) for c in changes] == [
        ("worker", "policy_forbid", ["no-admin-writes"])
    ]


def test_read_entries_skips_admin_events_and_names_odd_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text('{"event": "admin"}\n[1, 2]\n\n{"decision_id": "d", "reason": "allowed"}\n{cut\n')
    warnings: list[str] = []
    assert [e["decision_id"] for e in read_entries([str(log)], warnings.append)] == ["d"]
    assert warnings == [f"{log}:2: not a decision entry, skipped", f"{log}:5: not a JSON entry, skipped"]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"reason": "rate_limited", "inputs": {"evaluated": False}}, "rate_limited"),
        ({"reason": "allowed", "inputs": {"evaluated": False, "listing": True}}, "listing"),
        ({"reason": "allowed", "inputs": {"evaluated": False, "policies": False}}, "no_policy_asked"),
        ({"reason": "invalid_request", "inputs": {"evaluated": False}}, "invalid_request"),
        ({"reason": "allowed"}, "no_inputs"),
        ({"reason": "allowed", "inputs_truncated": True}, "inputs_truncated"),
        ({"reason": "allowed", "inputs": {"evaluated": True}, "inputs_truncated": True}, "inputs_truncated"),
        ({"reason": "allowed", "inputs": {"evaluated": True}, "inputs_redacted": ["card"]}, "inputs_redacted"),
        ({"reason": "allowed", "inputs": {"evaluated": True}, "on_behalf_of": "[redacted]"}, "claims_redacted"),
        ({"reason": "allowed", "inputs": {"evaluated": True}, "token": {"scopes": ["[redacted]"]}}, "claims_redacted"),
        ({"reason": 7}, "unreadable_entry"),
        ({"reason": "allowed", "inputs": []}, "unreadable_entry"),
        ({"reason": "policy_forbid", "inputs": {"evaluated": True}}, None),
    ],
)
def test_why_an_entry_is_skipped(entry: dict[str, Any], why: str | None) -> None:
    assert skip_reason(entry) == why


def test_an_entry_that_cannot_be_rebuilt_is_counted_not_raised(served: Served) -> None:
    entry = {
        "decision_id": "d",
        "ts": "not a time",
        "reason": "allowed",
        "decision": "allow",
        "inputs": {"evaluated": True},
    }
    report = replay(load_snapshot(str(served.h.policies)), [entry])
    assert (report.total, report.replayed, report.skipped_reasons) == (1, 0, {"unreadable_entry": 1})
