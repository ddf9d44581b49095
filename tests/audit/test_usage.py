"""`pep agents --usage` and `pep suggest` over a real server's decision log, on the example estate.

One pep serves a copy of ./policies; a fixed workload (allows, denies, a batch, a scope the
registry drops) is sent over gRPC and its log read back. The usage report is checked against what
the workload did; the suggestion for an agent is written into a copy of the directory where it
replaces the agent's grants, validated, and the log replayed against it: none of the agent's
allowed decisions changes.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.cli import main
from pep.pipeline.replay import replay
from pep.pipeline.usage import usage
from pep.policy.loader import load_snapshot
from pep.policy.reach import grants_of, schema_facts
from tests.harness.decision_log import read_entries as log_lines
from tests.harness.server import Harness, open_harness, struct

EXAMPLE = Path(__file__).resolve().parents[2] / "policies"
Q3 = ("File", "finance/reports/q3-forecast.xlsx")
HANDBOOK = ("File", "company/handbook.pdf")
SALARIES = ("File", "hr/salaries-2026.csv")
DESIGN = ("File", "engineering/design-doc.md")
SEND = {"channel": "email", "purpose": "transactional"}


@dataclass(frozen=True)
class Ask:
    sub: str
    agent: str
    scopes: tuple[str, ...]
    checks: tuple[tuple[str, tuple[str, str], dict[str, Any] | None], ...]
    expect: tuple[str, ...]  # the logged reasons


WORKLOAD = [
    Ask("alice", "assistant", ("files:read", "files:write", "tools:write"), (("read_file", Q3, None),), ("allowed",)),
    Ask(
        "alice",
        "assistant",
        ("files:read", "files:write", "tools:write"),
        (("read_file", HANDBOOK, None),),
        ("allowed",),
    ),
    Ask("alice", "assistant", ("files:read", "files:write", "tools:write"), (("write_file", Q3, None),), ("allowed",)),
    Ask(
        "alice",
        "assistant",
        ("files:read", "files:write", "tools:write"),
        (("read_file", SALARIES, None),),
        ("allowed",),
    ),
    Ask("alice", "assistant", ("files:read",), (("read_file", DESIGN, None),), ("policy_no_permit",)),
    Ask("bob", "assistant", ("files:read",), (("read_file", DESIGN, None),), ("allowed",)),
    Ask("alice", "assistant", (), (("read_file", Q3, None),), ("policy_no_permit",)),  # no scope: denied
    Ask(
        "alice",
        "assistant",
        ("files:read",),
        (("read_file", Q3, None), ("read_file", HANDBOOK, None)),
        ("allowed", "allowed"),
    ),
    Ask(
        "alice",
        "billing-bot",
        ("files:read", "payments:read"),
        (("read_account", ("Account", "ops-usd"), None),),
        ("allowed",),
    ),
    Ask("alice", "billing-bot", ("files:read", "payments:read"), (("read_file", Q3, None),), ("policy_no_permit",)),
    Ask(
        "carol",
        "support-bot",
        ("customers:read", "files:read", "messages:send"),
        (("send_message", ("Customer", "cust-1001"), SEND),),
        ("allowed",),
    ),
    Ask(
        "carol",
        "support-bot",
        ("customers:read", "files:read", "messages:send"),
        (("read_customer", ("Customer", "cust-1001"), None),),
        ("allowed",),
    ),
    Ask(
        "dana",
        "data-janitor",
        ("data:delete",),
        (("delete_data", ("Dataset", "scratch/tmp-exports"), None),),
        ("allowed",),
    ),
]


@dataclass
class Recorded:
    h: Harness
    log: Path
    entries: list[dict[str, Any]]


def _check(action: str, resource: tuple[str, str], context: dict[str, Any] | None) -> pb.Check:
    check = pb.Check(action=action, resource=pb.Resource(type=resource[0], id=resource[1]))
    if context is not None:
        check.context.CopyFrom(struct(context))
    return check


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    root = tmp_path_factory.mktemp("usage")
    policies = root / "policies"
    shutil.copytree(EXAMPLE, policies)
    h = open_harness(root, policies, decision_log={"sink": str(root / "decisions.log")})
    try:
        expected = 0
        for ask in WORKLOAD:
            token = h.token(ask.sub, (ask.agent,), scopes=ask.scopes)
            checks = [_check(*c) for c in ask.checks]
            if len(checks) == 1:
                h.stub.Authorize(pb.AuthorizeRequest(token=token, **_fields(checks[0])), timeout=10)
            else:
                h.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token=token, checks=checks), timeout=10)
            expected += len(checks)
        deadline = time.monotonic() + 10
        while len(lines := log_lines(h.log_path)) < expected:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [e["reason"] for e in lines] == [r for ask in WORKLOAD for r in ask.expect]
        yield Recorded(h, h.log_path, lines)
    finally:
        h.close()


def _fields(check: pb.Check) -> dict[str, Any]:
    fields: dict[str, Any] = {"action": check.action, "resource": check.resource}
    if check.HasField("context"):
        fields["context"] = check.context
    return fields


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def usage_json(capsys: pytest.CaptureFixture[str], recorded: Recorded, *extra: str) -> dict[str, Any]:
    code, out, err = cli(
        capsys, "agents", str(recorded.h.policies), "--usage", "--log", str(recorded.log), "--format", "json", *extra
    )
    assert code == 0, err
    return {a["agent"]: a for a in json.loads(out)["agents"]}


def pairs(*items: tuple[str, str]) -> list[dict[str, str]]:
    return [{"action": a, "resource_type": t} for a, t in items]


def test_the_usage_report_says_what_each_agent_was_allowed_used_and_needed(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = usage_json(capsys, recorded)
    assert set(agents) == set(load_snapshot(str(recorded.h.policies)).registry.agents)
    a = agents["assistant"]
    assert a["used"] == [
        {"action": "read_file", "resource_type": "File", "decisions": 6},  # the batch's two included
        {"action": "write_file", "resource_type": "File", "decisions": 1},
    ]
    assert a["decisions"] == 9 and a["judged"] == 7 and a["unreplayable"] == 0 and a["changed"] == 0
    assert a["scopes_held"] == ["files:read", "files:write", "tools:write"]
    assert a["scopes_needed"] == ["files:read", "files:write"] and a["scopes_not_needed"] == ["tools:write"]
    for pair in pairs(("read_file", "File"), ("write_file", "File"), ("call_tool", "Tool")):
        assert pair in a["allowed"]
    assert {"action": "call_tool", "resource_type": "Tool"} in a["never_used"] and a["used_not_allowed"] == []
    # billing-bot's files:read never reached the policies (its registry scopes omit it): not held.
    b = agents["billing-bot"]
    assert (
        b["scopes_held"] == ["payments:read"]
        and b["scopes_needed"] == []
        and b["used"] == [{"action": "read_account", "resource_type": "Account", "decisions": 1}]
    )
    s = agents["support-bot"]
    assert s["scopes_needed"] == ["messages:send"] and s["scopes_not_needed"] == ["customers:read", "files:read"]
    assert agents["data-janitor"]["scopes_not_needed"] == ["data:delete"]
    # Allowed by policy is what some permit could still grant: dev-coder never executes code (a forbid
    # on unsandboxed agents holds whatever the request), code-runner may.
    assert {"action": "execute_code", "resource_type": "Runtime"} not in agents["dev-coder"]["allowed"]
    assert {"action": "execute_code", "resource_type": "Runtime"} in agents["code-runner"]["allowed"]
    assert {"action": "pay", "resource_type": "Account"} not in agents["assistant"]["allowed"]
    # An agent the registry holds as suspended, decommissioned or expired is allowed nothing.
    t = agents["trading-bot"]
    assert (t["status"], t["allowed"], t["used"], t["decisions"]) == ("suspended", [], [], 0)
    assert agents["summarizer"]["status"] == "expired" and agents["summarizer"]["allowed"] == []


def _flips(snapshot: Any, mine: list[dict[str, Any]], keep: Any) -> set[str]:
    """The allowed decisions among `mine` that replay denies with only the token scopes `keep` lets through."""
    allowed = {e["decision_id"] for e in mine if e["decision"] == "allow"}
    changed = [{**e, "token": {**e["token"], "scopes": [x for x in e["token"]["scopes"] if keep(x)]}} for e in mine]
    report = replay(snapshot, changed)
    return {c.decision_id for c in report.changes if c.decision_id in allowed and c.after.decision == "deny"}


def test_the_needed_scopes_are_enough_and_each_of_them_is_needed(recorded: Recorded) -> None:
    snapshot = load_snapshot(str(recorded.h.policies))
    judged = 0
    for u in usage(snapshot, recorded.entries):
        mine = [e for e in recorded.entries if e["agent"] == u.agent]
        needed, held = set(u.needed), set(u.held)
        assert _flips(snapshot, mine, lambda x, n=needed, h=held: x in n or x not in h) == set(), u.agent
        for scope in needed & held:
            assert _flips(snapshot, mine, lambda x, s=scope: x != s), (u.agent, scope)
            judged += 1
    assert judged == 3  # assistant's files:read and files:write, support-bot's messages:send


def test_the_table_lists_every_grant_and_scope(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "agents", str(recorded.h.policies), "--usage", "--log", str(recorded.log))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["AGENT", "STATUS", "ACTION", "RESOURCE", "ALLOWED", "USED"]
    assert ["assistant", "active", "read_file", "File", "yes", "6"] in [line.split() for line in lines]
    assert ["trading-bot", "suspended", "-", "-", "-", "0"] in [line.split() for line in lines]
    scopes = lines[lines.index("") + 1 :]
    assert scopes[0].split() == ["AGENT", "SCOPE", "HELD", "NEEDED"]
    assert ["assistant", "tools:write", "4", "no"] in [line.split() for line in scopes]
    assert ["support-bot", "messages:send", "2", "yes"] in [line.split() for line in scopes]
    assert re.fullmatch(
        r"10 agents: \d+ allowed action and resource type pairs never used, 5 scopes held but never needed", lines[-1]
    )


def test_since_leaves_earlier_entries_out(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    last = recorded.entries[-1]["ts"]
    agents = usage_json(capsys, recorded, "--since", last)
    assert agents["assistant"]["used"] == [] and agents["data-janitor"]["decisions"] == 1
    assert agents["data-janitor"]["used"] == [{"action": "delete_data", "resource_type": "Dataset", "decisions": 1}]


# --- pep suggest ---------------------------------------------------------------------------


def suggest(capsys: pytest.CaptureFixture[str], recorded: Recorded, agent: str, *extra: str) -> str:
    code, out, err = cli(capsys, "suggest", "--log", str(recorded.log), "--agent", agent, *extra)
    assert code == 0, err
    return out


def replaced(src: Path, dst: Path, agent: str, suggestion: str) -> tuple[list[str], list[str]]:
    """A copy of `src` where the suggestion is the agent's only grant, as docs/audit.md says to do it:
    the permits naming the agent alone deleted, `unless { principal == Agent::"<agent>" }` added to
    those it shares. The two lists."""
    shutil.copytree(src, dst)
    snapshot = load_snapshot(str(src))
    actions = sorted(set(schema_facts(snapshot.schema).applies) - {"delegate"})
    own, shared = grants_of(snapshot, agent, actions)
    links = yaml.safe_load((dst / "links.yaml").read_text())
    for pid in own + shared:
        info = snapshot.policies[pid]
        if info.path == "links.yaml":
            assert pid in own  # the example links each name one agent
            links["links"] = [link for link in links["links"] if link["id"] != pid]
            continue
        path = dst / info.path
        text = path.read_text()
        assert text.count(info.text) == 1 and info.text.endswith(";")
        new = "" if pid in own else info.text[:-1] + f'\nunless {{ principal == Agent::"{agent}" }};'
        path.write_text(text.replace(info.text, new))
    (dst / "links.yaml").write_text(yaml.safe_dump(links))
    (dst / "suggested.cedar").write_text(suggestion)
    return own, shared


@pytest.mark.parametrize("agent", ["assistant", "data-janitor", "support-bot", "billing-bot"])
def test_a_suggestion_that_replaces_the_agent_s_grants_keeps_every_allowed_decision(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path, agent: str
) -> None:
    text = suggest(capsys, recorded, agent, "--policies", str(recorded.h.policies))
    dst = tmp_path / "replaced"
    own, shared = replaced(recorded.h.policies, dst, agent, text)
    assert shared and (agent != "data-janitor" or own == ["code.execute.janitor-batch", "data.delete.janitor-scratch"])
    code, _, err = cli(capsys, "validate", str(dst))
    assert code == 0, err
    (fmt := tmp_path / "fmt").mkdir()
    (fmt / "suggested.cedar").write_text(text)
    assert cli(capsys, "fmt", "--check", str(fmt))[0] == 0
    snapshot = load_snapshot(str(dst))
    report = replay(snapshot, recorded.entries)
    mine = {e["decision_id"]: e for e in recorded.entries if e["agent"] == agent}
    for change in report.changes:
        # Only the agent's decisions move, and only to other determining policies: its suggested ones.
        assert change.decision_id in mine and not change.decided, change
        assert all(p.startswith(f"suggested.{agent}.") for p in change.after.policies), change
    allowed = [d for d, e in mine.items() if e["decision"] == "allow"]
    assert {c.decision_id for c in report.changes} == set(allowed)
    # What the agent may do now is what it used (its denies stay denies, above).
    usage_now = usage(snapshot, recorded.entries, only=agent)[0]
    assert sorted(usage_now.allowed or ()) == sorted(usage_now.used)


def test_the_suggestion_for_the_assistant(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    text = suggest(capsys, recorded, "assistant", "--policies", str(recorded.h.policies))
    body = text[text.index('@id("suggested.assistant.read_file.File")') :]
    assert body == SUGGESTED_ASSISTANT
    assert '//   add `unless { principal == Agent::"assistant" }` to these' in text
    assert "//     files.read.as-user (files.cedar:6)" in text
    # Without a policy directory: every scope the decisions all held, and no word on what it replaces.
    bare = suggest(capsys, recorded, "assistant")
    assert "To make them" not in bare
    assert 'context.token.scopes.containsAll(["files:read", "files:write", "tools:write"])' in bare


def test_suggest_with_nothing_to_suggest_exits_1(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "suggest", "--log", str(recorded.log), "--agent", "planner")
    assert (code, out) == (1, "") and err.strip() == "pep suggest: no allowed decision of agent 'planner' in the log"


SUGGESTED_ASSISTANT = """@id("suggested.assistant.read_file.File")
permit (
  principal == Agent::"assistant",
  action == Action::"read_file",
  resource is File
)
when
{
  (([File::"company/handbook.pdf",
     File::"finance/reports/q3-forecast.xlsx",
     File::"hr/salaries-2026.csv"].contains
      (
        resource
      ) &&
    context has on_behalf_of &&
    context.on_behalf_of == User::"alice") ||
   (resource == File::"engineering/design-doc.md" &&
    context has on_behalf_of &&
    context.on_behalf_of == User::"bob")) &&
  context has token &&
  context.token.scopes.contains("files:read")
};

@id("suggested.assistant.write_file.File")
permit (
  principal == Agent::"assistant",
  action == Action::"write_file",
  resource == File::"finance/reports/q3-forecast.xlsx"
)
when
{
  context has on_behalf_of &&
  context.on_behalf_of == User::"alice" &&
  context has token &&
  context.token.scopes.contains("files:write")
};
"""
