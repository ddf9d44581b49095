"""Scope minimization on a real server: the scopes policies see are the token's intersected with the
current actor's registry `scopes`; what was dropped is logged in `scopes_dropped`.

Three agents: `limited` lists `scopes: [docs:read]`, `open` lists none (it keeps the token's, or
gets none with `identity.require_registry_scopes: true`), `nothing` lists `scopes: []`. The
policies read `context.token.scopes`, so each drop shows as a decision. The same paths are taken
over AuthZEN (a bearer token), by `pep replay` (which re-intersects with the directory's registry)
and across a reload (the decision memo is per snapshot).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.pipeline.replay import replay
from pep.policy.loader import load_snapshot
from tests.harness.authzen import Client
from tests.harness.decision_log import read_entries as log_lines
from tests.harness.estate import write_estate
from tests.harness.server import Harness, open_harness

AGENTS = """
agents:
  - {id: limited, owner: team@example.com, groups: [workers], scopes: [docs:read]}
  - {id: open, owner: team@example.com, groups: [workers]}
  - {id: nothing, owner: team@example.com, groups: [workers], scopes: []}
  - {id: orchestrator, owner: team@example.com, groups: [orchestrators, workers], scopes: [docs:write]}
"""

POLICIES = {
    "docs.cedar": """
        @id("read-with-scope")
        permit(principal in AgentGroup::"workers", action == Action::"read", resource)
        when { context.token.scopes.contains("docs:read") };

        @id("write-with-scope")
        permit(principal in AgentGroup::"workers", action == Action::"write", resource)
        when { context.token.scopes.contains("docs:write") };
    """,
    "delegation.cedar": """
        @id("users-delegate-to-workers")
        permit(principal is User, action == Action::"delegate", resource in AgentGroup::"workers");

        @id("orchestrators-delegate")
        permit(principal in AgentGroup::"orchestrators", action == Action::"delegate",
               resource in AgentGroup::"workers");
    """,
}

BOTH = ("docs:read", "docs:write")


def estate(root: Path) -> Path:
    return write_estate(root, agents=AGENTS, policies=POLICIES)


def _pep(tmp: Path, **overrides: Any) -> Harness:
    config: dict[str, Any] = {
        "decision_log": {"sink": str(tmp / "decisions.log")},
        "authzen": {"listen": "127.0.0.1:0"},
    }
    return open_harness(tmp, estate(tmp / "policies"), **{**config, **overrides})


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = _pep(tmp_path_factory.mktemp("lenient"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = _pep(tmp_path_factory.mktemp("strict"), identity={"require_registry_scopes": True})
    yield h
    h.close()


def ask(h: Harness, agent: str, scopes: tuple[str, ...], action: str, *, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """One Authorize call; its decision-log entry."""
    token = h.token("alice", (agent, *chain), scopes=scopes)
    reply = h.authorize(token, action)
    return entry_of(h, reply.decision_id)


def entry_of(h: Harness, decision_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        for e in log_lines(h.log_path):
            if e.get("decision_id") == decision_id:
                return e
        assert time.monotonic() < deadline, f"no log entry {decision_id}"
        time.sleep(0.02)


def test_registry_scopes_cut_the_tokens(lenient: Harness) -> None:
    e = ask(lenient, "limited", BOTH, "read")
    assert (e["decision"], e["policies"]) == ("allow", ["read-with-scope"])
    # The token's scopes are logged as the token carried them; what policies did not see, beside them.
    assert e["token"]["scopes"] == ["docs:read", "docs:write"] and e["scopes_dropped"] == ["docs:write"]
    e = ask(lenient, "limited", BOTH, "write")
    assert (e["decision"], e["reason"], e["scopes_dropped"]) == ("deny", "policy_no_permit", ["docs:write"])
    e = ask(lenient, "nothing", BOTH, "read")  # `scopes: []`: it may use none
    assert (e["decision"], e["scopes_dropped"]) == ("deny", ["docs:read", "docs:write"])


def test_without_registry_scopes_the_token_decides(lenient: Harness) -> None:
    e = ask(lenient, "open", BOTH, "write")
    assert (e["decision"], e["scopes_dropped"]) == ("allow", [])
    e = ask(lenient, "limited", ("docs:read",), "read")  # nothing to drop
    assert (e["decision"], e["scopes_dropped"]) == ("allow", [])
    e = ask(lenient, "open", (), "read")
    assert (e["decision"], e["scopes_dropped"], e["token"]["scopes"]) == ("deny", [], [])


def test_the_current_actor_s_entry_decides_not_the_chain_s(lenient: Harness) -> None:
    # limited acts, the orchestrator (scopes: [docs:write]) delegated: limited's entry applies.
    e = ask(lenient, "limited", BOTH, "write", chain=("orchestrator",))
    assert e["delegation_chain"] == ["limited", "orchestrator"]
    assert (e["decision"], e["scopes_dropped"]) == ("deny", ["docs:write"])
    e = ask(lenient, "orchestrator", BOTH, "write")
    assert (e["decision"], e["scopes_dropped"]) == ("allow", ["docs:read"])


def test_require_registry_scopes_gives_an_unlisted_agent_none(strict: Harness) -> None:
    e = ask(strict, "open", BOTH, "read")
    assert (e["decision"], e["reason"], e["scopes_dropped"]) == ("deny", "policy_no_permit", list(BOTH))
    assert e["inputs"]["require_registry_scopes"] is True
    e = ask(strict, "limited", BOTH, "read")  # a listed agent: as without the setting
    assert (e["decision"], e["scopes_dropped"]) == ("allow", ["docs:write"])


def test_authzen_with_a_token_minimizes_the_same_way(lenient: Harness, strict: Harness) -> None:
    for h, agent, expected in ((lenient, "limited", False), (lenient, "open", True), (strict, "open", False)):
        token = h.token("alice", (agent,), scopes=BOTH)
        body = {
            "subject": {"type": "Agent", "id": agent},
            "action": {"name": "write"},
            "resource": {"type": "Doc", "id": "plan"},
        }
        reply = Client(h.server.authzen_address).evaluation(body, Authorization=f"Bearer {token}")
        assert reply.status == 200 and reply.body["decision"] is expected, (agent, reply.body)
        e = entry_of(h, reply.body["context"]["decision_id"])
        assert e["scopes_dropped"] == ([] if expected else ["docs:write"] if agent == "limited" else list(BOTH))


def test_replay_intersects_again_with_the_directory_s_registry(
    lenient: Harness, strict: Harness, tmp_path: Path
) -> None:
    for h in (lenient, strict):
        ask(h, "limited", BOTH, "write")
        ask(h, "open", BOTH, "write")
        entries = [e for e in log_lines(h.log_path) if "event" not in e]
        assert replay(load_snapshot(str(h.policies)), entries).changes == []
        # A registry that lets `limited` write: its logged writes flip; with the strict setting
        # (recorded in each entry) `open` still gets nothing.
        edited = tmp_path / h.log_path.parent.name
        shutil.copytree(h.policies, edited)
        agents = (
            (edited / "agents.yaml").read_text().replace("scopes: [docs:read]}", "scopes: [docs:read, docs:write]}")
        )
        (edited / "agents.yaml").write_text(agents)
        report = replay(load_snapshot(str(edited)), entries)
        flipped = {(c.agent, c.action, c.after.decision) for c in report.changes}
        assert flipped == {("limited", "write", "allow")}, report.changes


def test_a_reload_that_changes_registry_scopes_changes_the_answer(tmp_path: Path) -> None:
    h = _pep(tmp_path, decision_memo_size=1000)
    try:
        token = h.token("alice", ("limited",), scopes=BOTH)
        for _ in range(3):  # the memo answers the repeats: still the registry's scopes
            assert h.authorize(token, "write").decision == pb.DECISION_DENY
        version = h.authorize(token, "write").policy_version
        agents = (h.policies / "agents.yaml").read_text()
        (h.policies / "agents.yaml").write_text(agents.replace("scopes: [docs:read]}", "scopes: [docs:write]}"))
        deadline = time.monotonic() + 10
        while (reply := h.authorize(token, "write")).policy_version == version:
            assert time.monotonic() < deadline, "the registry change was never loaded"
            time.sleep(0.05)
        assert reply.decision == pb.DECISION_ALLOW
        assert entry_of(h, reply.decision_id)["scopes_dropped"] == ["docs:read"]
    finally:
        h.close()


def test_redacted_scopes_are_redacted_where_they_were_dropped_too(tmp_path: Path) -> None:
    h = _pep(tmp_path, decision_log={"sink": str(tmp_path / "decisions.log"), "redact_claims": ["scope"]})
    try:
        e = ask(h, "limited", BOTH, "read")
        assert e["token"]["scopes"] == ["[redacted]"] and e["scopes_dropped"] == ["[redacted]"]
        assert json.dumps(e).count("docs:") == 0
    finally:
        h.close()
