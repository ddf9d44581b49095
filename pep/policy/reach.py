"""What a policy set could allow one agent, worked out from the policies alone (`pep agents --usage`).

"Allowed by policy" is an upper bound, computed without any request: an (action, resource type)
pair is allowed for `Agent::"a"` when

1. the schema lets the action apply to an `Agent` principal and a resource of that type
   (`appliesTo`), and
2. some live permit (a static policy or a template link) could apply: its scope names the agent,
   one of its groups, `Agent` or any principal, names the action (or one of its groups), and its
   resource scope admits the type (`resource`, `== T::"x"`, `is T`, `in E` where a `T` can be
   `E` or sit under `E`'s type in the schema's `memberOf`), and
3. Cedar's partial evaluation of the agent's policy slice for the action, with the resource and
   the context unknown, leaves that permit satisfied or still open (a condition already false for
   this agent, like `principal in AgentGroup::"assistants"` for another agent, rules it out), and
   does not already deny (a forbid that holds for this agent whatever the resource and context).

It can say "allowed" where no real request would be (a condition on the resource or the user that
nothing satisfies, a forbid that holds for every resource of one type): it never says "not
allowed" where some request would be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

from pep.policy.slicing import scope_entity
from pep.policy.snapshot import Snapshot
from pep.uids import ACTION, AGENT, Uid, format_uid, parse_uid


@dataclass(frozen=True)
class SchemaFacts:
    """What the schema says about actions and entity types, as far as `reach` needs it."""

    # Action name (the `Action` type of the empty namespace, as pep asks) -> (principal types, resource types).
    applies: Mapping[str, tuple[frozenset[str], tuple[str, ...]]]
    # Entity type -> every type an entity of it may sit under (transitive `memberOf`).
    above: Mapping[str, frozenset[str]]


_NAMESPACE = re.compile(r"^namespace\s+(\S+)\s*\{\s*$")
_ENTITY = re.compile(r"^\s*entity\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+in\s+\[([^\]]*)\])?")
_ACTION = re.compile(r'^\s*action\s+"((?:[^"\\]|\\.)*)"')
_TYPES = re.compile(r"^\s*(principal|resource):\s*\[([^\]]*)\]")


def schema_facts(schema: cedarpy.Schema) -> SchemaFacts:
    """Read the schema's canonical text (Cedar renders one declaration per line, `appliesTo` one
    list per line): its actions' `appliesTo` and its entity types' `memberOf`."""
    namespace = ""
    declared: list[tuple[str, str, list[str]]] = []  # (namespace, name, memberOf as written)
    actions: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in str(schema).splitlines():
        if m := _NAMESPACE.match(line):
            namespace = m.group(1)
            continue
        if line.startswith("}"):
            namespace = ""
            continue
        if m := _ENTITY.match(line):
            declared.append((namespace, m.group(1), _names(m.group(2) or "")))
            current = None
        elif m := _ACTION.match(line):
            current = None
            if not namespace and "appliesTo" in line:  # pep asks Action::"name" of the empty namespace
                name = parse_uid(f'Action::"{m.group(1)}"')[1]
                current = actions[name] = {"principal": [], "resource": []}
        elif current is not None and (m := _TYPES.match(line)):
            current[m.group(1)] = _names(m.group(2))
    known = {f"{ns}::{name}" if ns else name for ns, name, _ in declared}

    def qualified(name: str, ns: str) -> str:
        # Cedar looks a name up in the declaring namespace first, then in the empty one.
        return f"{ns}::{name}" if ns and "::" not in name and f"{ns}::{name}" in known else name

    parents = {
        (f"{ns}::{name}" if ns else name): {qualified(p, ns) for p in member_of} for ns, name, member_of in declared
    }
    above = {t: frozenset(_closure(t, parents)) for t in parents}
    applies = {name: (frozenset(spec["principal"]), tuple(sorted(spec["resource"]))) for name, spec in actions.items()}
    return SchemaFacts(applies, above)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _closure(start: str, parents: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(parents.get(start, ()))
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            stack.extend(parents.get(t, ()))
    return seen


def admits(scope: Mapping[str, Any], values: Mapping[str, Any], rtype: str, facts: SchemaFacts) -> bool:
    """Whether a resource scope (EST, with a link's slot values) can match a resource of type `rtype`."""
    op = scope.get("op", "All")
    if op == "All":
        return True
    if op == "is":
        if scope.get("entity_type") != rtype:
            return False
        inner = scope.get("in")
        return not isinstance(inner, Mapping) or _under(scope_entity(inner, values), rtype, facts)
    entity = scope_entity(scope, values)
    if op == "==":
        return entity is not None and entity[0] == rtype
    if op == "in":
        return _under(entity, rtype, facts)
    return True  # a form this reading does not know: assume it may


def _under(entity: Uid | None, rtype: str, facts: SchemaFacts) -> bool:
    return entity is None or entity[0] == rtype or entity[0] in facts.above.get(rtype, frozenset())


def can_be(expr: Any, value: bool) -> bool:
    """Whether a residual expression (EST) could still evaluate to `value`; False only when it cannot."""
    if not isinstance(expr, Mapping) or len(expr) != 1:
        return True
    ((op, arg),) = expr.items()
    if op == "Value":
        return not isinstance(arg, bool) or arg == value
    if op == "&&" and isinstance(arg, Mapping):
        if value:
            return can_be(arg.get("left"), True) and can_be(arg.get("right"), True)
        return can_be(arg.get("left"), False) or can_be(arg.get("right"), False)
    if op == "||" and isinstance(arg, Mapping):
        if value:
            return can_be(arg.get("left"), True) or can_be(arg.get("right"), True)
        return can_be(arg.get("left"), False) and can_be(arg.get("right"), False)
    if op == "!" and isinstance(arg, Mapping):
        return can_be(arg.get("arg"), not value)
    if op == "if-then-else" and isinstance(arg, Mapping):
        return can_be(arg.get("then"), value) or can_be(arg.get("else"), value)
    return True


def _open(residual: Mapping[str, Any]) -> bool:
    """Whether a residual permit could still be satisfied: every `when` can be true, every `unless` false."""
    for condition in residual.get("conditions") or ():
        if not can_be(condition.get("body"), condition.get("kind") != "unless"):
            return False
    return True


def open_permits(snapshot: Snapshot, agent: str, action: str) -> set[str] | None:
    """The live permits that could still allow `agent` the action (step 3 above); None when the
    slice already denies whatever the resource and context."""
    principal = (AGENT, agent)
    index = snapshot.policy_index
    ids = index.slice_ids(principal, snapshot.entity_index.ancestors(principal), (ACTION, action))
    permits = {pid for pid in ids if index.head(pid)[0].get("effect") == "permit"}
    if not permits:
        return set()
    request = {"principal": format_uid(principal), "action": format_uid((ACTION, action))}
    result = cedarpy.is_authorized_partial(request, index.policy_set(ids), snapshot.entities_for({principal}))
    if result.decision == cedarpy.Decision.Deny:
        return None
    if result.decision == cedarpy.Decision.NoDecision and not result.residuals and not result.diagnostics.reasons:
        return permits  # Cedar could not evaluate it at all: every permit of the slice may apply
    residuals = result.residuals
    satisfied = set(result.diagnostics.reasons)
    return {pid for pid in permits if pid in satisfied or (pid in residuals and _open(residuals[pid]))}


def allowed_pairs(
    snapshot: Snapshot, agent: str, facts: SchemaFacts, skip: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The (action, resource type) pairs policy could allow `agent`, sorted (see the module text);
    the actions in `skip` left out."""
    pairs: set[tuple[str, str]] = set()
    left_out = set(skip)
    for action, (principals, resources) in facts.applies.items():
        if AGENT not in principals or not resources or action in left_out:
            continue
        permits = open_permits(snapshot, agent, action)
        for pid in permits or ():
            body, values = snapshot.policy_index.head(pid)
            scope = body.get("resource") or {"op": "All"}
            pairs.update((action, t) for t in resources if admits(scope, values, t, facts))
    return sorted(pairs)


def grants_of(snapshot: Snapshot, agent: str, actions: Iterable[str]) -> tuple[list[str], list[str]]:
    """The live permits that grant `agent` any of `actions`: those naming it alone (`principal ==
    Agent::"a"`, static or linked), and those it shares (a group, `Agent`, anyone) whose conditions
    could hold for it (`open_permits`)."""
    principal = (AGENT, agent)
    index = snapshot.policy_index
    ancestors = snapshot.entity_index.ancestors(principal)
    own: set[str] = set()
    shared: set[str] = set()
    for action in actions:
        still_open = open_permits(snapshot, agent, action) or set()
        for pid in index.slice_ids(principal, ancestors, (ACTION, action)):
            body, values = index.head(pid)
            if body.get("effect") != "permit":
                continue
            scope = body.get("principal") or {"op": "All"}
            if scope.get("op") == "==" and scope_entity(scope, values) == principal:
                own.add(pid)
            elif pid in still_open:
                shared.add(pid)
    return sorted(own), sorted(shared)
