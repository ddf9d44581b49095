"""What a policy set could allow one agent (`pep agents --usage`'s "allowed by policy"), from the policies alone."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cedarpy
import pytest

from pep.policy.loader import load_snapshot
from pep.policy.reach import admits, allowed_pairs, can_be, grants_of, schema_facts

SCHEMA = """
namespace App {
  entity Team;
  entity Member in [Team];
}
entity AgentGroup;
entity Agent in [AgentGroup] { sandboxed?: Bool };
entity Folder in [Folder];
entity File in [Folder];
entity Box;
action files;
action "read \\"quoted\\"", write in [files] appliesTo { principal: [Agent], resource: [File, Folder], context: {} };
action pack appliesTo { principal: [Agent], resource: [Box], context: {} };
action join appliesTo { principal: [Agent], resource: [App::Member], context: {} };
action nothing;
"""


def test_schema_facts_read_applies_to_and_member_of() -> None:
    facts = schema_facts(cedarpy.Schema.from_str(SCHEMA))
    assert facts.applies['read "quoted"'] == (frozenset({"Agent"}), ("File", "Folder"))
    assert facts.applies["join"] == (frozenset({"Agent"}), ("App::Member",))
    assert "nothing" not in facts.applies and "files" not in facts.applies  # they apply to nothing
    assert facts.above["File"] == {"Folder"} and facts.above["App::Member"] == {"App::Team"}


def test_a_resource_scope_admits_the_types_it_can_match() -> None:
    facts = schema_facts(cedarpy.Schema.from_str(SCHEMA))
    folder = {"type": "Folder", "id": "x"}
    assert admits({"op": "All"}, {}, "Box", facts)
    assert admits({"op": "in", "entity": folder}, {}, "File", facts)  # a File sits in a Folder
    assert not admits({"op": "in", "entity": folder}, {}, "Box", facts)
    assert admits({"op": "==", "entity": {"type": "Box", "id": "b"}}, {}, "Box", facts)
    assert not admits({"op": "is", "entity_type": "File"}, {}, "Folder", facts)
    assert admits({"op": "in", "slot": "?resource"}, {"?resource": 'Folder::"x"'}, "File", facts)
    assert not admits(
        {"op": "is", "entity_type": "File", "in": {"slot": "?resource"}}, {"?resource": 'Box::"b"'}, "File", facts
    )


@pytest.mark.parametrize(
    ("expr", "true", "false"),
    [
        ({"Value": False}, False, True),
        ({"&&": {"left": {"unknown": [{"Value": "resource"}]}, "right": {"Value": False}}}, False, True),
        ({"||": {"left": {"Value": False}, "right": {"Value": False}}}, False, True),
        ({"!": {"arg": {"Value": False}}}, True, False),
        ({"if-then-else": {"if": {"Var": "x"}, "then": {"Value": True}, "else": {"Value": True}}}, True, False),
        ({".": {"left": {"Var": "context"}, "attr": "x"}}, True, True),
    ],
)
def test_a_residual_can_be_true_or_false_unless_cedar_already_folded_it(expr: object, true: bool, false: bool) -> None:
    assert (can_be(expr, True), can_be(expr, False)) == (true, false)


def test_allowed_pairs_follow_scopes_conditions_and_forbids(tmp_path: Path) -> None:
    files = {
        "schema.cedarschema": SCHEMA,
        "agents.yaml": """
            agents:
              - {id: packer, owner: o, groups: [packers], attributes: {sandboxed: true}}
              - {id: reader, owner: o, groups: [readers]}
              - {id: loose, owner: o, groups: [packers], attributes: {sandboxed: false}}
        """,
        "p.cedar": """
            @id("read-files")
            permit(principal is Agent, action == Action::"read \\"quoted\\"", resource is File)
            when { principal in AgentGroup::"readers" };
            @id("pack")
            permit(principal in AgentGroup::"packers", action == Action::"pack", resource);
            @id("no-unsandboxed-packing")
            forbid(principal, action == Action::"pack", resource)
            unless { principal has sandboxed && principal.sandboxed };
            @id("grant")
            permit(principal == ?principal, action == Action::"write", resource in ?resource);
        """,
        "links.yaml": """
            links:
              - template: grant
                id: reader-writes
                values: {"?principal": 'Agent::"reader"', "?resource": 'Folder::"f"'}
        """,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    snapshot = load_snapshot(str(tmp_path))
    facts = schema_facts(snapshot.schema)
    assert allowed_pairs(snapshot, "packer", facts) == [("pack", "Box")]
    assert allowed_pairs(snapshot, "loose", facts) == []  # the forbid holds whatever the request
    assert allowed_pairs(snapshot, "reader", facts) == [
        ('read "quoted"', "File"),
        ("write", "File"),
        ("write", "Folder"),
    ]
    assert grants_of(snapshot, "reader", facts.applies) == (["reader-writes"], ["read-files"])
    assert grants_of(snapshot, "packer", facts.applies) == ([], ["pack"])
