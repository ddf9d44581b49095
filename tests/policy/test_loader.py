"""The policy directory loads into one validated snapshot, or fails naming file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pep.errors import PolicyLoadError
from pep.policy.files import policy_files
from pep.policy.loader import load_snapshot
from pep.policy.source import split_statements

SCHEMA = """
entity Agent in [AgentGroup] { sandboxed?: Bool };
entity AgentGroup;
entity User in [Group];
entity Group;
entity Doc { public: Bool };
action read appliesTo { principal: [Agent], resource: [Doc], context: {} };
action "write-doc" appliesTo { principal: [Agent], resource: [Doc], context: {} };
"""

AGENTS = """
agents:
  - id: bot
    owner: team@example.com
    groups: [helpers]
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_ids_are_annotation_or_file_and_position(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "agents.yaml": AGENTS,
            "a.cedar": '@id("read-public")\n'
            'permit(principal, action == Action::"read", resource) when { resource.public };\n'
            "forbid(principal, action, resource) when { principal has sandboxed && principal.sandboxed };\n",
            "sub/b.cedar": 'permit(principal in AgentGroup::"helpers", action, resource);',
        },
    )
    snap = load_snapshot(str(tmp_path))
    assert set(snap.policies) == {"read-public", "a.cedar:1", "sub/b.cedar:0"}
    assert snap.policies["a.cedar:1"].line == 3
    assert snap.policy_count == 3
    assert snap.actions == frozenset({"read", "write-doc"})
    assert ("AgentGroup", "helpers") in snap.entity_uids


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    write(tmp_path, {"p.cedar": "permit(principal, action, resource);"})
    v1 = load_snapshot(str(tmp_path)).version
    assert load_snapshot(str(tmp_path)).version == v1
    (tmp_path / "p.cedar").write_text("forbid(principal, action, resource);")
    assert load_snapshot(str(tmp_path)).version != v1


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "good.cedar": "permit(principal, action, resource);\n",
            "bad.cedar": "permit(principal, action, resource);\n\n// a comment; with a semicolon\n"
            "permit(principal, action, resource) when { ;\n",
            "invalid.cedar": '\n\npermit(principal, action == Action::"read", resource) when { resource.nope };\n',
            "agents.yaml": "agents:\n  - id: bot\n    status: sleeping\n",
        },
    )
    with pytest.raises(PolicyLoadError) as info:
        load_snapshot(str(tmp_path))
    rendered = [str(p) for p in info.value.problems]
    assert any(r.startswith("bad.cedar:4:44: parse error: unexpected token `;`") for r in rendered), rendered
    assert any(r.startswith("invalid.cedar:3:62: schema validation") and "nope" in r for r in rendered), rendered
    assert any(r.startswith("agents.yaml:2:") and "owner" in r for r in rendered), rendered
    assert any(r.startswith("agents.yaml:3:5:") and "status" in r for r in rendered), rendered


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a.cedar": '@id("x")\npermit(principal, action, resource);',
            "b.cedar": '\n@id("x")\nforbid(principal, action, resource);',
        },
    )
    with pytest.raises(PolicyLoadError, match=r"b.cedar:2:1: duplicate policy id 'x' \(also a.cedar:1\)"):
        load_snapshot(str(tmp_path))


def test_shadow_tests_and_hidden_entries_are_not_live(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "live.cedar": "permit(principal, action, resource);",
            "shadow/s.cedar": "forbid(principal, action, resource);",
            "tests/t.cedar": "forbid(principal, action, resource);",
            "..data/live.cedar": "forbid(principal, action, resource);",
            ".git/x.cedar": "forbid(principal, action, resource);",
        },
    )
    assert policy_files(str(tmp_path)) == ["live.cedar"]


def test_templates_are_linked_from_links_yaml(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "agents.yaml": AGENTS,
            "t.cedar": '@id("may-read")\npermit(principal == ?principal, action == Action::"read", resource);',
            "links.yaml": "links:\n  - template: may-read\n    id: bot-reads\n"
            '    values: {"?principal": \'Agent::"bot"\'}\n',
        },
    )
    snap = load_snapshot(str(tmp_path))
    assert "bot-reads" in snap.policies
    assert snap.policy_count == 1


def test_link_values_with_empty_ids_fail(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "agents.yaml": AGENTS,
            "t.cedar": '@id("may-read")\npermit(principal == ?principal, action == Action::"read", resource);',
            "links.yaml": "links:\n  - template: may-read\n    id: nobody-reads\n"
            '    values: {"?principal": \'Agent::""\'}\n',
        },
    )
    with pytest.raises(PolicyLoadError, match=r"links.yaml:4:5: links\[0\] \(nobody-reads\): the id must not be empty"):
        load_snapshot(str(tmp_path))


def test_links_to_unknown_templates_fail(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "t.cedar": "permit(principal, action, resource);",
            "links.yaml": "links:\n  - template: nope\n    id: l1\n    values: {}\n",
        },
    )
    with pytest.raises(PolicyLoadError, match=r"links.yaml:2:\d+: links\[0\]: no template with id 'nope'"):
        load_snapshot(str(tmp_path))


def test_entities_that_break_the_schema_fail(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "entities.json": '[{"uid": {"type": "Doc", "id": "d"}, "attrs": {"public": "yes"}, "parents": []}]',
        },
    )
    with pytest.raises(PolicyLoadError, match=r"entities\.json"):
        load_snapshot(str(tmp_path))


def test_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_snapshot(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("permit(principal, action, resource);", [1]),
        (
            '\n\n  @id("a;b")\npermit(principal, action, resource)\nwhen { "x;\\"y" == "z" };\n'
            "// c;\nforbid(principal, action, resource);",
            [3, 7],
        ),
        ("permit(principal, action, resource)", [1]),
        ("// only a comment;\n", []),
    ],
)
def test_split_statements(text: str, lines: list[int]) -> None:
    assert [s.line for s in split_statements(text)] == lines


def test_entity_uids_may_use_the_entity_escape(tmp_path: Path) -> None:
    # Cedar's entity JSON accepts `{"__entity": {type, id}}` for a uid (cedar-examples'
    # github_example uses it); the loader used to reject every such entity.
    write(
        tmp_path,
        {
            "p.cedar": 'permit(principal in Group::"g", action, resource);',
            "entities.json": '[{"uid": {"__entity": {"type": "User", "id": "u"}}, "attrs": {},'
            ' "parents": [{"__entity": {"type": "Group", "id": "g"}}]},'
            ' {"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": []}]',
        },
    )
    snap = load_snapshot(str(tmp_path))
    assert snap.entity_uids == frozenset({("User", "u"), ("Group", "g")})


def test_validation_and_entity_schema_checks_can_be_turned_off(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "p.cedar": 'permit(principal, action == Action::"read", resource) when { resource.nope };',
            "entities.json": '[{"uid": {"type": "Doc", "id": "d"}, "attrs": {"public": "yes"}, "parents": []}]',
        },
    )
    with pytest.raises(PolicyLoadError) as info:
        load_snapshot(str(tmp_path))
    rendered = [str(p) for p in info.value.problems]
    assert any("schema validation" in r for r in rendered) and any("entities.json" in r for r in rendered)
    with pytest.raises(PolicyLoadError, match=r"entities\.json") as info:
        load_snapshot(str(tmp_path), validate_policies=False)
    assert not any("schema validation" in str(p) for p in info.value.problems)
    with pytest.raises(PolicyLoadError, match="schema validation"):
        load_snapshot(str(tmp_path), schema_for_entities=False)
    snap = load_snapshot(str(tmp_path), validate_policies=False, schema_for_entities=False)
    assert snap.schema is not None and snap.policy_count == 1


def test_a_reload_reuses_unchanged_files_and_matches_a_fresh_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.cedarschema": SCHEMA,
            "a.cedar": 'permit(principal, action == Action::"read", resource);\n',
            "b.cedar": "forbid(principal, action, resource) when { resource.public };\n",
        },
    )
    cache: dict = {}
    load_snapshot(str(tmp_path), cache=cache)
    assert {k[1] for k in cache if k[0] == "parse"} == {"a.cedar", "b.cedar"}
    (tmp_path / "b.cedar").write_text('@id("x")\nforbid(principal, action, resource) when { !resource.public };\n')
    cached = load_snapshot(str(tmp_path), cache=cache)
    fresh = load_snapshot(str(tmp_path))
    assert cached.version == fresh.version and cached.policies == fresh.policies
    assert len([k for k in cache if k[0] == "parse"]) == 2  # the old b.cedar entry is gone
    (tmp_path / "b.cedar").write_text("permit(principal, action, resource) when { resource.nope };\n")
    with pytest.raises(PolicyLoadError, match="nope"):
        load_snapshot(str(tmp_path), cache=cache)
    with pytest.raises(PolicyLoadError, match="nope"):  # a cached validation failure still fails
        load_snapshot(str(tmp_path), cache=cache)


def test_a_reload_sees_a_changed_registry(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"schema.cedarschema": SCHEMA, "agents.yaml": AGENTS, "p.cedar": "permit(principal, action, resource);"},
    )
    cache: dict = {}
    assert set(load_snapshot(str(tmp_path), cache=cache).registry.agents) == {"bot"}
    (tmp_path / "agents.yaml").write_text(AGENTS + "  - id: bot2\n    owner: o@example.com\n")
    assert set(load_snapshot(str(tmp_path), cache=cache).registry.agents) == {"bot", "bot2"}
    (tmp_path / "agents.yaml").write_text(AGENTS + "  - id: bot3\n")  # no owner: rejected, every time
    for _ in range(2):
        with pytest.raises(PolicyLoadError, match="owner"):
            load_snapshot(str(tmp_path), cache=cache)


def test_registry_scopes_are_a_list_of_scope_names(tmp_path: Path) -> None:
    agents = "agents:\n  - {id: a, owner: o, scopes: [files:read, files:write]}\n  - {id: b, owner: o, scopes: []}\n"
    agents += "  - {id: c, owner: o}\n"
    write(tmp_path, {"agents.yaml": agents, "p.cedar": "permit(principal, action, resource);"})
    registry = load_snapshot(str(tmp_path)).registry
    assert registry.get("a").scopes == frozenset({"files:read", "files:write"})  # type: ignore[union-attr]
    assert registry.get("b").scopes == frozenset()  # type: ignore[union-attr]
    assert registry.get("c").scopes is None  # type: ignore[union-attr]
    # The same registry written as JSON (the fast path) reads the same.
    (tmp_path / "agents.yaml").write_text(
        '{"agents": [{"id": "a", "owner": "o", "scopes": ["files:read", "files:write"]}, {"id": "c", "owner": "o"}]}'
    )
    registry = load_snapshot(str(tmp_path)).registry
    assert registry.get("a").scopes == frozenset({"files:read", "files:write"})  # type: ignore[union-attr]
    assert registry.get("c").scopes is None  # type: ignore[union-attr]


@pytest.mark.parametrize("scopes", ["files:read", "[files:read, '']", "[7]", "", "{read: true}", "[[a]]"])
def test_registry_scopes_that_are_not_a_list_of_names_are_refused_at_their_key(tmp_path: Path, scopes: str) -> None:
    agents = f"agents:\n  - id: ok\n    owner: o\n  - id: bot\n    owner: o\n    scopes: {scopes}\n"
    write(tmp_path, {"agents.yaml": agents, "p.cedar": "permit(principal, action, resource);"})
    with pytest.raises(PolicyLoadError) as info:
        load_snapshot(str(tmp_path))
    assert [str(p) for p in info.value.problems] == [
        "agents.yaml:6:5: agents[1] (bot): `scopes` must be a list of scope names (non-empty strings)"
    ]
