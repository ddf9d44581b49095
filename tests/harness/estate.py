"""A small, fixed agent estate the server tests run against (independent of ./policies)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

STD_CONTEXT = """
    on_behalf_of?: User,
    delegation: {depth: Long, actors: Set<Agent>, origin: Agent},
    token: {issuer: String, scopes: Set<String>, client_id: String, issued_at: Long, expires_at: Long},
    binding: String,
"""

SCHEMA = f"""
entity AgentGroup;
entity Agent in [AgentGroup] {{ sandboxed?: Bool }};
entity Group;
entity User in [Group];
entity Doc {{ owner?: User, classification?: String }};
action read, write appliesTo {{
  principal: [Agent], resource: [Doc],
  context: {{ {STD_CONTEXT} amount?: Long, price?: decimal }}
}};
action delegate appliesTo {{ principal: [User, Agent], resource: [Agent], context: {{ {STD_CONTEXT} }} }};
"""

POLICIES = {
    "docs.cedar": """
        @id("read-docs")
        permit(principal in AgentGroup::"workers", action == Action::"read", resource);

        @id("no-secrets")
        forbid(principal, action, resource)
        when { resource has classification && resource.classification == "secret" };

        // Errors (Long overflow) for any amount other than 0 or 1: strict mode must deny.
        @id("write-overflow")
        permit(principal in AgentGroup::"workers", action == Action::"write", resource)
        when { context has amount && context.amount * 4611686018427387904 > 1 };
    """,
    "delegation.cedar": """
        @id("users-delegate-to-workers")
        permit(principal is User, action == Action::"delegate", resource in AgentGroup::"workers");

        @id("orchestrators-delegate")
        permit(principal in AgentGroup::"orchestrators", action == Action::"delegate",
               resource in AgentGroup::"workers");
    """,
}

AGENTS = """
agents:
  - {id: orchestrator, owner: platform@example.com, groups: [orchestrators, workers]}
  - {id: orchestrator2, owner: platform@example.com, groups: [orchestrators, workers]}
  - {id: orchestrator3, owner: platform@example.com, groups: [orchestrators, workers]}
  - {id: orchestrator4, owner: platform@example.com, groups: [orchestrators, workers]}
  - {id: worker, owner: team@example.com, groups: [workers], attributes: {sandboxed: true}}
  - {id: loner, owner: team@example.com}
  - {id: sleepy, owner: team@example.com, status: suspended, groups: [workers]}
  - {id: retired, owner: team@example.com, status: decommissioned, groups: [workers]}
  - {id: old, owner: team@example.com, expires: 2020-01-31, groups: [workers]}
"""

ENTITIES = """
[
  {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"classification": "internal"}, "parents": []},
  {"uid": {"type": "Doc", "id": "keys"}, "attrs": {"classification": "secret"}, "parents": []}
]
"""


def write_estate(
    root: Path,
    *,
    schema: str = SCHEMA,
    agents: str = AGENTS,
    entities: str = ENTITIES,
    policies: Mapping[str, str] = POLICIES,
) -> Path:
    """A policy directory under `root`: this estate, or one given part by part."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.cedarschema").write_text(textwrap.dedent(schema))
    (root / "agents.yaml").write_text(textwrap.dedent(agents))
    (root / "entities.json").write_text(entities)
    for name, text in policies.items():
        (root / name).write_text(textwrap.dedent(text))
    return root
