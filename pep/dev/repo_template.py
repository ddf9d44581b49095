"""The policy repository `pep init` writes: a schema, a registry of one agent, a first policy with
its delegation grant, and a suite that passes (`pep validate`, `pep fmt --check` and `pep test`
are clean on it). The CI files and the repository's README are in `pep.dev.repo_ci`.
"""

from __future__ import annotations

from pep.dev.repo_ci import ci_files

__all__ = ["files"]

SCHEMA = """\
// The Cedar schema of this policy repository: every policy is validated against it,
// and every request is checked against it (one that does not fit is denied
// invalid_request).
//
// pep hands Cedar:
//   principal  Agent::"<current actor>"  (agents.yaml: attributes, AgentGroup parents)
//   action     Action::"<name>"
//   resource   the caller's resource, or the entity stored in entities.json
//   context    Context below, plus the caller's own keys at the top level

// Groups of agents, named in agents.yaml (`groups`).
entity AgentGroup;

// An agent identity from agents.yaml; its `attributes` become these attributes.
entity Agent in [AgentGroup] {
  sandboxed?: Bool,
};

// The people agents act for (`context.on_behalf_of`), built from the token's `sub`,
// with its `groups` claim as Group parents.
entity Group in [Group];
entity User in [Group];

// The resources. Add a type per kind of thing your agents touch.
entity Document {
  owner: User,
  readers?: Set<User>,
};

// `context.delegation`: the chain behind the current actor.
type Delegation = {
  depth: Long,
  actors: Set<Agent>,
  origin: Agent,
};

// `context.token`: facts from the verified access token.
type TokenInfo = {
  issuer: String,
  scopes: Set<String>,
  client_id: String,
  issued_at: Long,
  expires_at: Long,
};

// The context pep builds for every request. An action whose caller sends its own
// context keys declares them next to these.
type Context = {
  on_behalf_of?: User,
  delegation: Delegation,
  token: TokenInfo,
  binding: String,
};

action read_document appliesTo {
  principal: [Agent],
  resource: [Document],
  context: Context,
};

// Delegation grants: pep asks `delegate` once per hop of a delegation chain, the
// delegator (the User for the first hop) as principal, the agent as resource.
action delegate appliesTo {
  principal: [User, Agent],
  resource: [Agent],
  context: Context,
};
"""


AGENTS = """\
# The agent registry: one entry per agent identity, `id` exactly as it appears in
# tokens (`act.sub`, `sub`, or `client_id`). An agent that is not listed is refused
# (chain_unknown_agent); a suspended or expired one is denied before any policy.
agents:
  - id: assistant
    owner: platform-team@example.com
    status: active
    groups: [assistants]
    attributes: {sandboxed: false}
"""


DELEGATION = """\
// Delegation grants: which agents a user may put to work.
@id("delegation.users-to-assistants")
permit (
  principal is User,
  action == Action::"delegate",
  resource in AgentGroup::"assistants"
);
"""


DOCUMENTS = """\
// Documents: an agent reads a document only for a person who may read it (its
// owner or a named reader), with a token that carries documents:read.
@id("documents.read.for-readers")
permit (
  principal is Agent,
  action == Action::"read_document",
  resource is Document
)
when
{
  context has on_behalf_of &&
  context.token.scopes.contains("documents:read") &&
  (resource.owner == context.on_behalf_of ||
   (resource has readers && resource.readers.contains(context.on_behalf_of)))
};
"""


SUITE = """\
# The suite of documents.cedar and delegation.cedar: `pep test .` runs every file
# in tests/, `pep test . --coverage` shows that every policy decides some case.
# A `token` case mints a real token and runs it through the whole pipeline
# (registry, delegation grants, then the policies); a `principal` case asks Cedar
# directly, with the complete context written out (`&tok` and `*tok`, YAML anchors,
# reuse the token record).

# Entities for these cases only (a real deployment stores them in entities.json
# or the caller sends them with the request).
entities:
  - uid: {type: Document, id: plans/roadmap.md}
    attrs:
      owner: {__entity: {type: User, id: alice}}
      readers: [{__entity: {type: User, id: bob}}]
    parents: []

cases:
  - name: the assistant reads alice's roadmap for alice, its owner
    token: {sub: alice, act_chain: [assistant], scopes: [documents:read]}
    action: read_document
    resource: Document::"plans/roadmap.md"
    expect: allow
    expect_policies: [documents.read.for-readers]

  - name: and for bob, a named reader
    token: {sub: bob, act_chain: [assistant], scopes: [documents:read]}
    action: read_document
    resource: Document::"plans/roadmap.md"
    expect: allow

  - name: but not for carol, who may not read it
    token: {sub: carol, act_chain: [assistant], scopes: [documents:read]}
    action: read_document
    resource: Document::"plans/roadmap.md"
    expect: deny
    expect_reason: policy_no_permit

  - name: nor without the documents:read scope
    token: {sub: alice, act_chain: [assistant], scopes: [openid]}
    action: read_document
    resource: Document::"plans/roadmap.md"
    expect: deny
    expect_reason: policy_no_permit

  - name: an agent missing from agents.yaml is refused before any policy
    token: {sub: alice, act_chain: [ghost-bot], scopes: [documents:read]}
    action: read_document
    resource: Document::"plans/roadmap.md"
    expect: deny
    expect_reason: chain_unknown_agent

  - name: the policy alone, asked directly (no token, registry or delegation checks)
    principal: Agent::"assistant"
    action: read_document
    resource: Document::"plans/roadmap.md"
    context:
      on_behalf_of: {__entity: {type: User, id: bob}}
      delegation: {depth: 1, actors: [], origin: {__entity: {type: Agent, id: assistant}}}
      token: &tok
        issuer: https://idp.example.com
        scopes: [documents:read]
        client_id: assistant
        issued_at: 1798761600
        expires_at: 1798762200
      binding: bearer
    expect: allow
    expect_policies: [documents.read.for-readers]

  - name: alice may put the assistant to work (the delegation grant, asked directly)
    principal: User::"alice"
    action: delegate
    resource: Agent::"assistant"
    context:
      on_behalf_of: {__entity: {type: User, id: alice}}
      delegation: {depth: 1, actors: [], origin: {__entity: {type: Agent, id: assistant}}}
      token: *tok
      binding: bearer
    expect: allow
    expect_policies: [delegation.users-to-assistants]
"""


def files(install: str) -> dict[str, str]:
    """Every file of a new policy repository by its path (`/`-separated), CI installing pep with
    `pip install "<install>"`."""
    return {
        "schema.cedarschema": SCHEMA,
        "agents.yaml": AGENTS,
        "delegation.cedar": DELEGATION,
        "documents.cedar": DOCUMENTS,
        "tests/documents.yaml": SUITE,
        **ci_files(install),
    }
