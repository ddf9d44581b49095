"""Problems are reported at the offending token, not at the start of the policy or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pep.errors import PolicyLoadError
from pep.policy.loader import load_snapshot


def _problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PolicyLoadError) as e:
        load_snapshot(str(tmp_path))
    return [str(p) for p in e.value.problems]


def test_parse_error_at_the_token(tmp_path: Path) -> None:
    text = (
        '@id("ok")\npermit(principal, action, resource);\n\n'
        '@id("bad")\npermit(principal, action, resource)\n  when { principal.x == };\n'
    )
    assert _problems(tmp_path, {"main.cedar": text}) == ["main.cedar:6:25: parse error: unexpected token `}`"]


def test_schema_parse_error_at_the_token(tmp_path: Path) -> None:
    schema = "entity User { tier: Long }\nentity Doc;\n"
    found = _problems(tmp_path, {"schema.cedarschema": schema, "main.cedar": "permit(principal, action, resource);\n"})
    assert found == ["schema.cedarschema:2:1: invalid schema: error parsing schema: unexpected token `entity`"]


def test_schema_unknown_type_at_its_name(tmp_path: Path) -> None:
    schema = "entity Doc;\nentity User { tier: Lng };\n"
    found = _problems(tmp_path, {"schema.cedarschema": schema, "main.cedar": "permit(principal, action, resource);\n"})
    assert found == ["schema.cedarschema:2:21: invalid schema: failed to resolve type: Lng"]


def test_parse_error_after_a_string_is_not_blamed_on_the_string(tmp_path: Path) -> None:
    text = '@id("p")\npermit(principal, action, resource)\n  when { context.tag == "a b" &&& true };\n'
    found = _problems(tmp_path, {"main.cedar": text})
    assert len(found) == 1 and found[0].startswith("main.cedar:3:31: parse error"), found


_SCHEMA = (
    "entity AgentGroup;\nentity Agent in [AgentGroup] { tier?: Long, sandboxed?: Bool };\nentity Doc;\n"
    "action read appliesTo { principal: [Agent], resource: [Doc], context: { level: Long } };\n"
)


def test_schema_validation_names_the_policy_id_and_the_expression(tmp_path: Path) -> None:
    policies = (
        '@id("docs.ok")\npermit(principal, action, resource);\n\n'
        '@id("docs.read")\npermit(principal is Agent, action == Action::"read", resource)\n'
        'when {\n  context.level > 1 &&\n  context.level == "high"\n};\n'
    )
    found = _problems(tmp_path, {"schema.cedarschema": _SCHEMA, "main.cedar": policies})
    assert found == [
        "main.cedar:8:3: schema validation: policy 'docs.read': the types Long and String are not compatible, "
        'in `context.level == "high"`'
    ] or (
        len(found) == 1
        and found[0].startswith("main.cedar:8:3: schema validation: policy 'docs.read': ")
        and found[0].endswith('in `context.level == "high"`')
    ), found


def test_schema_validation_inside_parentheses(tmp_path: Path) -> None:
    policies = (
        '@id("p")\npermit(principal is Agent, action == Action::"read", resource)\n'
        "when { context.level > 0 && (principal has tier || principal.sandboxed > 2) };\n"
    )
    found = _problems(tmp_path, {"schema.cedarschema": _SCHEMA, "main.cedar": policies})
    assert found and all(p.startswith("main.cedar:3:52: schema validation: policy 'p': ") for p in found), found
    assert all(p.endswith("in `principal.sandboxed > 2`") for p in found), found


def test_agent_attribute_errors_name_the_attribute_and_its_position(tmp_path: Path) -> None:
    agents = (
        "agents:\n  - id: bot\n    owner: o@example.com\n    status: active\n"
        '    attributes:\n      sandboxed: true\n      tier: "3"\n      colour: red\n'
    )
    found = _problems(
        tmp_path,
        {"schema.cedarschema": _SCHEMA, "agents.yaml": agents, "main.cedar": "permit(principal, action, resource);\n"},
    )
    assert found == [
        'agents.yaml:7:7: Agent::"bot": attributes.tier: "3" is not of the type schema.cedarschema declares for '
        "Agent.tier",
        'agents.yaml:8:7: Agent::"bot": attributes.colour: Agent declares no attribute `colour` in schema.cedarschema',
    ]


def test_a_link_missing_a_slot_is_reported_at_its_values(tmp_path: Path) -> None:
    template = '@id("grant")\npermit(principal == ?principal, action, resource in ?resource);\n'
    links = 'links:\n  - template: grant\n    id: grant.bot\n    values: {"?principal": \'Agent::"bot"\'}\n'
    found = _problems(tmp_path, {"main.cedar": template, "links.yaml": links})
    assert found == [
        "links.yaml:4:5: links[0] (grant.bot): the template's slots are ?principal, ?resource; values fill ?principal"
    ]


def test_links_are_checked_beside_other_problems(tmp_path: Path) -> None:
    template = '@id("grant")\npermit(principal == ?principal, action, resource in ?resource);\n'
    found = _problems(
        tmp_path,
        {
            "main.cedar": template,
            "links.yaml": "links:\n  - template: grnt\n    id: grant.bot\n    values: {}\n",
            "agents.yaml": "agents:\n  - id: bot\n    owner: o@example.com\n    status: paused\n",
        },
    )
    assert any(p.startswith("agents.yaml:4:5:") for p in found) and any(
        p.startswith("links.yaml:2:") and "no template with id 'grnt'" in p for p in found
    ), found
