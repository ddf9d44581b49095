"""A generated agent estate of a chosen size, for the scale benchmarks.

Realistic mix: a few shared policies per action (group-based), plus one template link per
agent grant until the policy count is reached; agents spread over groups.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

STD = """on_behalf_of?: User,
    delegation: {depth: Long, actors: Set<Agent>, origin: Agent},
    token: {issuer: String, scopes: Set<String>, client_id: String, issued_at: Long, expires_at: Long},
    binding: String"""

SCHEMA = f"""
entity AgentGroup;
entity Agent in [AgentGroup] {{ sandboxed?: Bool, tier?: Long }};
entity Group;
entity User in [Group];
entity Folder in [Folder];
entity Doc in [Folder] {{ owner: User, classification: String }};
action read, write, share appliesTo {{
  principal: [Agent], resource: [Doc, Folder], context: {{ {STD}, amount?: Long }}
}};
action delegate appliesTo {{ principal: [User, Agent], resource: [Agent], context: {{ {STD} }} }};
"""

SHARED = """
@id("read-for-owner")
permit(principal in AgentGroup::"readers", action == Action::"read", resource is Doc)
when { context has on_behalf_of && resource.owner == context.on_behalf_of };
@id("no-secret")
forbid(principal, action, resource is Doc) when { resource.classification == "secret" };
@id("write-sandboxed")
permit(principal in AgentGroup::"writers", action == Action::"write", resource)
when { principal has sandboxed && principal.sandboxed && context.delegation.depth <= 2 };
@id("users-delegate")
permit(principal is User, action == Action::"delegate", resource in AgentGroup::"readers");
@id("agents-delegate")
permit(principal in AgentGroup::"orchestrators", action == Action::"delegate", resource);
@id("grant")
permit(principal == ?principal, action in [Action::"share", Action::"write"], resource in ?resource);
"""


def write_estate(root: Path, *, policies: int, agents: int, groups: int = 50, folders: int = 200) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "schema.cedarschema").write_text(SCHEMA)
    (root / "shared.cedar").write_text(SHARED)
    # Per-group policies add to the count like hand-written team policies would.
    per_group = max(0, min(policies // 2, policies - 6))
    lines = []
    for i in range(per_group):
        g = i % groups
        lines.append(
            f'@id("team-{i}")\npermit(principal in AgentGroup::"team-{g}", action == Action::"share", '
            f'resource in Folder::"folder-{i % folders}") when {{ context.delegation.depth <= {1 + i % 3} }};'
        )
    (root / "teams.cedar").write_text("\n".join(lines) + "\n")
    links = max(0, policies - 6 - per_group)
    # Generated files are written as JSON, which is YAML too and loads far faster.
    link_list = [
        {
            "template": "grant",
            "id": f"grant-{i}",
            "values": {"?principal": f'Agent::"agent-{i % agents}"', "?resource": f'Folder::"folder-{i % folders}"'},
        }
        for i in range(links)
    ]
    (root / "links.yaml").write_text(json.dumps({"links": link_list}))
    agent_list = []
    for i in range(agents):
        grp = ["readers", f"team-{i % groups}"] + (["writers"] if i % 3 == 0 else [])
        if i == 0:
            grp.append("orchestrators")
        agent_list.append(
            {
                "id": f"agent-{i}",
                "owner": f"team-{i % groups}@example.com",
                "groups": grp,
                "attributes": {"sandboxed": i % 2 == 0, "tier": i % 4},
            }
        )
    (root / "agents.yaml").write_text(json.dumps({"agents": agent_list}))
    ents = [
        {
            "uid": {"type": "Folder", "id": f"folder-{i}"},
            "attrs": {},
            "parents": [{"type": "Folder", "id": f"folder-{i // 10}"}] if i >= 10 else [],
        }
        for i in range(folders)
    ]
    ents += [
        {"uid": {"type": "User", "id": f"user-{i}"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]}
        for i in range(100)
    ]
    ents.append({"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []})
    ents += [
        {
            "uid": {"type": "Doc", "id": f"doc-{i}"},
            "attrs": {
                "owner": {"__entity": {"type": "User", "id": f"user-{i % 100}"}},
                "classification": "secret" if i % 10 == 0 else "internal",
            },
            "parents": [{"type": "Folder", "id": f"folder-{i % folders}"}],
        }
        for i in range(1000)
    ]
    (root / "entities.json").write_text(json.dumps(ents))
    return root


if __name__ == "__main__":  # pragma: no cover
    import sys

    out = write_estate(Path(sys.argv[1]), policies=int(sys.argv[2]), agents=int(sys.argv[3]))
    print(out, os.listdir(out))
