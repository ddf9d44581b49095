"""Sliced evaluation (policy and entity slices) decides exactly as Cedar over everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pep.policy.evaluate import Query, evaluate, roots_of
from pep.policy.loader import load_snapshot
from pep.policy.slicing import EntityIndex, entity_refs
from pep.policy.snapshot import Snapshot

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def full_answer(snapshot: Snapshot, everything: cedarpy.Entities, q: Query) -> tuple[str, set[str], set[str]]:
    r = cedarpy.is_authorized(q.request(), snapshot.policy_set, everything, snapshot.schema)
    return r.decision.value, set(r.diagnostics.reasons), set(r.diagnostics.errors)


def sliced_answer(snapshot: Snapshot, q: Query) -> tuple[str, set[str], set[str]]:
    r = evaluate(snapshot, [q], snapshot.entities_for(roots_of([q])))[0]
    return r.decision.value, set(r.diagnostics.reasons), set(r.diagnostics.errors)


@pytest.fixture(scope="module")
def estate() -> tuple[Snapshot, cedarpy.Entities, list[Any]]:
    snapshot = load_snapshot(str(POLICIES))
    index = snapshot.entity_index
    everything = index.handle(index.uids)
    return snapshot, everything, sorted(index.uids)


def _context(draw: st.DrawFn, agents: list[tuple[str, str]], users: list[tuple[str, str]]) -> dict[str, Any]:
    chain = draw(st.lists(st.sampled_from(agents), min_size=1, max_size=3, unique=True))
    ctx: dict[str, Any] = {
        "delegation": {
            "depth": len(chain),
            "actors": [{"__entity": {"type": t, "id": i}} for t, i in chain[1:]],
            "origin": {"__entity": {"type": chain[-1][0], "id": chain[-1][1]}},
        },
        "token": {
            "issuer": "https://idp",
            "scopes": draw(
                st.lists(
                    st.sampled_from(
                        ["files:read", "payments:write", "messages:send", "code:execute", "code:write", "data:delete"]
                    ),
                    unique=True,
                )
            ),
            "client_id": chain[0][1],
            "issued_at": 1,
            "expires_at": 2,
        },
        "binding": draw(st.sampled_from(["bearer", "dpop", "mtls"])),
    }
    if draw(st.booleans()):
        user = draw(st.sampled_from(users))
        ctx["on_behalf_of"] = {"__entity": {"type": user[0], "id": user[1]}}
    extra = draw(
        st.sampled_from(
            [
                {},
                {"amount": 500, "currency": "USD"},
                {"amount": 9_000_000, "currency": "EUR"},
                {"channel": "email", "purpose": "marketing"},
                {"channel": "sms", "purpose": "support"},
            ]
        )
    )
    ctx.update(extra)
    return ctx


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sliced_equals_full_on_the_example_estate(
    estate: tuple[Snapshot, cedarpy.Entities, list[Any]], data: st.DataObject
) -> None:
    snapshot, everything, uids = estate
    agents = [u for u in uids if u[0] == "Agent"]
    users = [u for u in uids if u[0] == "User"]
    principal = data.draw(st.sampled_from(agents + users))
    action = ("Action", data.draw(st.sampled_from(sorted(snapshot.actions))))
    resource = data.draw(st.sampled_from(uids))
    ctx = data.draw(st.builds(lambda: None).flatmap(lambda _: st.composite(_context)(agents, users)))
    q = Query(principal, action, resource, ctx)
    assert sliced_answer(snapshot, q) == full_answer(snapshot, everything, q)


def _generated_estate(tmp: Path, n_agents: int, n_templates_links: int) -> Path:
    """No schema, literal entities in conditions, action groups, templates with links, `is`/`in` scopes."""
    tmp.mkdir()
    ents = [
        {"uid": {"type": "Action", "id": "read"}, "attrs": {}, "parents": [{"type": "Action", "id": "all"}]},
        {"uid": {"type": "Action", "id": "write"}, "attrs": {}, "parents": [{"type": "Action", "id": "all"}]},
        {"uid": {"type": "Action", "id": "all"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Team", "id": "ops"}, "attrs": {"level": 3}, "parents": []},
        {
            "uid": {"type": "Doc", "id": "d0"},
            "attrs": {"owner": {"__entity": {"type": "User", "id": "u0"}}},
            "parents": [{"type": "Folder", "id": "f0"}],
        },
        {
            "uid": {"type": "Doc", "id": "d1"},
            "attrs": {"owner": {"__entity": {"type": "User", "id": "u1"}}},
            "parents": [{"type": "Folder", "id": "f1"}],
        },
        {
            "uid": {"type": "Folder", "id": "f0"},
            "attrs": {"team": {"__entity": {"type": "Team", "id": "ops"}}},
            "parents": [],
        },
        {"uid": {"type": "Folder", "id": "f1"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f0"}]},
        {"uid": {"type": "User", "id": "u0"}, "attrs": {"level": 1}, "parents": [{"type": "Group", "id": "g0"}]},
        {"uid": {"type": "User", "id": "u1"}, "attrs": {"level": 5}, "parents": []},
        {"uid": {"type": "Group", "id": "g0"}, "attrs": {}, "parents": []},
    ]
    (tmp / "entities.json").write_text(json.dumps(ents))
    agents = "\n".join(
        f"  - {{id: a{i}, owner: o, groups: [{'g' + str(i % 3)}], attributes: {{rank: {i % 4}}}}}"
        for i in range(n_agents)
    )
    (tmp / "agents.yaml").write_text("agents:\n" + agents + "\n")
    (tmp / "p.cedar").write_text("""
permit(principal in AgentGroup::"g0", action in Action::"all", resource in Folder::"f0");
permit(principal is Agent, action == Action::"read", resource) when { principal.rank > 1 };
forbid(principal is Agent in AgentGroup::"g1", action == Action::"write", resource);
permit(principal, action in [Action::"read", Action::"write"], resource)
  when { Team::"ops".level > 2 && resource has owner && resource.owner.level > 3 };
permit(principal == Agent::"a7", action, resource) when { resource.nope == 1 };
permit(principal in Group::"g0", action, resource);
@id("tpl") permit(principal == ?principal, action == Action::"write", resource in ?resource);
""")
    links = "\n".join(
        f"  - {{template: tpl, id: l{i}, values: "
        f"{{'?principal': 'Agent::\"a{i}\"', '?resource': 'Folder::\"f{i % 2}\"'}}}}"
        for i in range(n_templates_links)
    )
    (tmp / "links.yaml").write_text("links:\n" + links + "\n")
    return tmp


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_sliced_equals_full_on_a_generated_estate(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    snapshot, everything, uids = _generated(tmp_path_factory)
    principal = data.draw(st.sampled_from([u for u in uids if u[0] in ("Agent", "User")] + [("Agent", "ghost")]))
    action = data.draw(st.sampled_from([("Action", "read"), ("Action", "write"), ("Action", "all"), ("Action", "x")]))
    resource = data.draw(st.sampled_from([*uids, ("Doc", "missing")]))
    q = Query(principal, action, resource, {})
    assert sliced_answer(snapshot, q) == full_answer(snapshot, everything, q)


_GENERATED: dict[str, Any] = {}


def _generated(factory: pytest.TempPathFactory) -> tuple[Snapshot, cedarpy.Entities, list[Any]]:
    if "v" not in _GENERATED:
        snap = load_snapshot(str(_generated_estate(factory.mktemp("gen") / "estate", 30, 20)))
        _GENERATED["v"] = (snap, snap.entity_index.handle(snap.entity_index.uids), sorted(snap.entity_index.uids))
    return _GENERATED["v"]


def test_slices_are_small_and_cached() -> None:
    snapshot = load_snapshot(str(POLICIES))
    q = Query(("Agent", "assistant"), ("Action", "read_file"), ("File", "finance/reports/q3-forecast.xlsx"), {})
    ids = snapshot.policy_index.slice_ids(q.principal, snapshot.entity_index.ancestors(q.principal), q.action)
    assert 0 < len(ids) < len(snapshot.policy_index) / 2
    assert snapshot.policy_index.policy_set(ids) is snapshot.policy_index.policy_set(ids)
    closure = snapshot.entity_index.closure(roots_of([q]))
    assert ("Agent", "billing-bot") not in closure and ("AgentGroup", "assistants") in closure
    assert snapshot.entities_for(roots_of([q])) is snapshot.entities_for(roots_of([q]))


def test_entity_refs_finds_both_forms() -> None:
    value = {
        "a": {"__entity": {"type": "T", "id": "1"}},
        "b": [{"type": "U", "id": "2"}],
        "c": {"__extn": {"fn": "decimal", "arg": "1.0"}},
        "d": {"x": {"__entity": {"type": "V", "id": "3"}}},
    }
    assert set(entity_refs(value)) == {("T", "1"), ("U", "2"), ("V", "3")}


def test_with_added_keeps_the_store() -> None:
    index = EntityIndex([{"uid": {"type": "A", "id": "1"}, "attrs": {}, "parents": []}], None)
    bigger = index.with_added([{"uid": {"type": "B", "id": "2"}, "attrs": {}, "parents": [{"type": "A", "id": "1"}]}])
    assert bigger.uids == {("A", "1"), ("B", "2")} and index.uids == {("A", "1")}
    assert bigger.closure([("B", "2")]) == {("A", "1"), ("B", "2")}
