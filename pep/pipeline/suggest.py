"""`pep suggest`: Cedar policies that allow an agent what it used in a decision log, and no more.

The rule (docs/audit.md, "Least privilege from the log"): one permit per (action, resource type)
among the agent's uses (`pep.pipeline.usage.is_use`: allowed decisions of the policies, the agent
being the current actor), with the id `suggested.<agent>.<action>.<type>`, scoped to
`principal == Agent::"<agent>"`, `action == Action::"<action>"` and

- the resources it used, each for exactly the users it used it for: `resource == T::"id"` for one
  resource; for several `resource is T` and, for each set of users, the resources used for exactly
  those users (`resource == T::"a"` or `[T::"a", T::"b"].contains(resource)`), the alternatives
  joined by `||`;
- the users: `context.on_behalf_of == User::"u"` (or one of a set), or
  `!(context has on_behalf_of)` for acting for no one; both, joined by `||`, when it did both;
- the scopes: `context.token.scopes.containsAll([...])` with the scopes every one of these decisions
  held that the agent needs (`pep.pipeline.usage`), given a policy directory; without one, every
  scope all of them held. Left out when some of them had no token (a trusted AuthZEN subject).

Nothing is derived from the caller's own context keys (amounts, channels, tool arguments): the
forbids that bound them stay in force, and where only a permit's condition bounded them, the
suggestion is wider there than the grant it replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from pep.delegation.grants import DELEGATE_ACTION
from pep.pipeline.usage import Usage, held, pair_of
from pep.policy.reach import grants_of, schema_facts
from pep.policy.snapshot import Snapshot
from pep.uids import ACTION, AGENT, USER, format_uid


@dataclass(frozen=True)
class Suggested:
    id: str
    action: str
    resource_type: str
    decisions: int
    text: str


def _string(text: str) -> str:
    """A Cedar string literal (Cedar's escapes, as in uids)."""
    return format_uid(("T", text))[3:]


def _one_of(values: Sequence[str], expr: str) -> str:
    return f"{expr} == {values[0]}" if len(values) == 1 else f"[{', '.join(values)}].contains({expr})"


def _users(users: Sequence[str]) -> str:
    """The condition that the request is for one of `users` ("" standing for no user at all)."""
    named = [format_uid((USER, u)) for u in users if u]
    for_users = f"context has on_behalf_of && {_one_of(named, 'context.on_behalf_of')}" if named else ""
    if "" not in users:
        return for_users
    return f"(({for_users}) || !(context has on_behalf_of))" if named else "!(context has on_behalf_of)"


def _policy(agent: str, action: str, rtype: str, uses: list[Mapping[str, Any]], needed: set[str] | None) -> Suggested:
    """One permit for these uses; `needed`: the scopes they need (None: not known, every common one)."""
    pid = f"suggested.{agent}.{action}.{rtype}"
    users_of: dict[str, set[str]] = {}  # resource id -> the users it was used for ("": for no one)
    for e in uses:  # uses name their resource (is_use)
        users_of.setdefault(str(e["resource"]["id"]), set()).add(str(e.get("on_behalf_of") or ""))
    conditions: list[str] = []
    if len(users_of) == 1:
        ((only, users),) = users_of.items()
        resource = f"resource == {format_uid((rtype, only))}"
        conditions.append(_users(sorted(users)))
    else:
        resource = f"resource is {rtype}"
        # Each resource with exactly the users it was used for: resources sharing their users together.
        by_users: dict[tuple[str, ...], list[str]] = {}
        for rid, users in sorted(users_of.items()):
            by_users.setdefault(tuple(sorted(users)), []).append(format_uid((rtype, rid)))
        alternatives = [f"({_one_of(rs, 'resource')} && {_users(us)})" for us, rs in sorted(by_users.items())]
        conditions.append(alternatives[0] if len(alternatives) == 1 else f"({' || '.join(alternatives)})")
    if all(isinstance(e.get("token"), dict) and e["token"].get("iss") for e in uses):
        common = set.intersection(*(held(e) for e in uses))
        scopes = sorted(common if needed is None else common & needed)
        if len(scopes) == 1:
            conditions.append(f"context has token && context.token.scopes.contains({_string(scopes[0])})")
        elif scopes:
            listed = ", ".join(_string(s) for s in scopes)
            conditions.append(f"context has token && context.token.scopes.containsAll([{listed}])")
    head = (
        f"@id({_string(pid)})\npermit (principal == {format_uid((AGENT, agent))}, "
        f"action == {format_uid((ACTION, action))}, {resource})"
    )
    text = head + (f"\nwhen {{ {' && '.join(conditions)} }};" if conditions else ";")
    return Suggested(pid, action, rtype, len(uses), text)


def suggestions(agent: str, found: Usage, judged: bool) -> list[Suggested]:
    """One permit per (action, resource type) of the agent's uses (`found.entries`), sorted; `judged`:
    `found.needs` says what each use needs (a policy directory was given)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    needs: dict[tuple[str, str], set[str]] = {}
    for i, e in enumerate(found.entries):
        groups.setdefault(pair_of(e), []).append(e)
        if judged:
            needs.setdefault(pair_of(e), set()).update(found.needs[i])
    return [
        _policy(agent, a, t, uses, needs.get((a, t), set()) if judged else None)
        for (a, t), uses in sorted(groups.items())
    ]


def render(agent: str, found: Usage, policies: list[Suggested], snapshot: Snapshot | None) -> str:
    """The suggestions as one Cedar file, with a header saying what they replace; Cedar's format."""
    times = sorted(str(e.get("ts", "")) for e in found.entries)
    count = "1 policy" if len(policies) == 1 else f"{len(policies)} policies"
    decisions = "one allowed decision" if len(found.entries) == 1 else f"{len(found.entries)} allowed decisions"
    lines = [
        f"// pep suggest: {count} for {format_uid((AGENT, agent))}, from its {decisions} in the log",
        f"// ({times[0]} to {times[-1]}).",
        "// Each allows one action on one resource type: the resources used, each for the users it was",
        "// used for, with the scopes needed; nothing from the caller's own context (amounts, arguments).",
    ]
    if snapshot is not None:
        facts = schema_facts(snapshot.schema) if snapshot.schema is not None else None
        actions = {p.action for p in policies} | set(facts.applies if facts is not None else ())
        actions.discard(DELEGATE_ACTION)
        own, shared = grants_of(snapshot, agent, sorted(actions))
        lines.append(f"// To make them the agent's only grants in {snapshot.directory}:")
        if own:
            lines.append("//   delete these, which name this agent alone:")
            lines.extend(f"//     {pid} ({_where(snapshot, pid)})" for pid in own)
        if shared:
            lines.append(f'//   add `unless {{ principal == Agent::"{agent}" }}` to these, which it shares')
            lines.append("//   (a group, every agent), or take it out of their groups in agents.yaml:")
            lines.extend(f"//     {pid} ({_where(snapshot, pid)})" for pid in shared)
        if not own and not shared:
            lines.append("//   nothing else grants it anything now.")
    text = "\n".join(lines) + "\n\n" + "\n\n".join(p.text for p in policies) + "\n"
    try:
        return cedarpy.format_policies(text)
    except ValueError:  # never expected: the text is built from Cedar's own forms
        return text


def _where(snapshot: Snapshot, pid: str) -> str:
    info = snapshot.policies.get(pid)
    return f"{info.path}:{info.line}" if info is not None else "?"
