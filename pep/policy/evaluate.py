"""Ask Cedar: each query against its policy slice, queries sharing a slice in one call."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cedarpy

from pep.decision import Outcome
from pep.policy.slicing import entity_refs
from pep.policy.snapshot import Snapshot
from pep.reasons import Reason
from pep.uids import Uid


@dataclass(frozen=True)
class Query:
    principal: Uid
    action: Uid
    resource: Uid
    context: Mapping[str, Any] = field(default_factory=dict)
    # Parents of a principal the store does not hold (a user built from a token).
    principal_parents: tuple[Uid, ...] = ()

    def request(self) -> dict[str, Any]:
        return {
            "principal": {"type": self.principal[0], "id": self.principal[1]},
            "action": {"type": self.action[0], "id": self.action[1]},
            "resource": {"type": self.resource[0], "id": self.resource[1]},
            "context": self.context,
        }


def evaluate(
    snapshot: Snapshot,
    queries: Sequence[Query],
    entities: cedarpy.Entities,
    *,
    shadow: bool = False,
    schema: bool = True,
) -> list[cedarpy.AuthzResult]:
    """Cedar's answer for each query, in order, over the live (or shadow) policies.

    All queries go to Cedar in one call, over the union of their slices: a policy in
    another query's slice cannot match this query's scope, so it changes nothing here.
    """
    index = snapshot.shadow_index if shadow else snapshot.policy_index
    if index is None:
        raise ValueError("this snapshot has no shadow policies")
    ids: frozenset[str] = frozenset()
    for q in queries:
        ancestors = snapshot.entity_index.ancestors(q.principal, q.principal_parents)
        ids = ids | index.slice_ids(q.principal, ancestors, q.action)
    requests, policies = [q.request() for q in queries], index.policy_set(ids)
    if not schema or snapshot.schema is None:
        return cedarpy.is_authorized_batch(requests, policies, entities, None)
    shapes = snapshot.shapes
    keys = [shapes.key(q.principal, q.action, q.resource, q.context) for q in queries]
    if all(shapes.known(k) for k in keys):
        # Every request has a shape the schema already accepted: it would accept these too.
        return cedarpy.is_authorized_batch(requests, policies, entities, None)
    results = cedarpy.is_authorized_batch(requests, policies, entities, snapshot.schema)
    for key, result in zip(keys, results, strict=True):
        if result.decision != cedarpy.Decision.NoDecision:  # the schema accepted the request
            shapes.learn(key)
    return results


def roots_of(queries: Sequence[Query]) -> set[Uid]:
    """The entities queries name: principals, their parents, resources, context references."""
    roots: set[Uid] = set()
    for q in queries:
        roots.add(q.principal)
        roots.update(q.principal_parents)
        roots.add(q.resource)
        roots.update(entity_refs(dict(q.context)))
    return roots


def outcome_of(result: cedarpy.AuthzResult, *, strict: bool = True) -> Outcome:
    """Map a Cedar answer to a reason code (`evaluated`: the log knows it came from the policies)."""
    reasons = tuple(result.diagnostics.reasons)
    errors = tuple(result.diagnostics.errors)
    if result.decision == cedarpy.Decision.NoDecision:
        # Cedar could not build the request: it does not fit the schema.
        return Outcome(False, Reason.INVALID_REQUEST, errors=errors, evaluated=True)
    if errors and strict:
        return Outcome(False, Reason.EVALUATION_ERROR, policies=reasons, errors=errors, evaluated=True)
    if result.allowed:
        return Outcome(True, Reason.ALLOWED, policies=reasons, errors=errors, evaluated=True)
    if reasons:
        return Outcome(False, Reason.POLICY_FORBID, policies=reasons, errors=errors, evaluated=True)
    return Outcome(False, Reason.POLICY_NO_PERMIT, errors=errors, evaluated=True)


def outcomes(
    snapshot: Snapshot, queries: Sequence[Query], entities: cedarpy.Entities, *, strict: bool, schema: bool = True
) -> list[Outcome]:
    """Each query's outcome over the live policies, with the shadow policies' beside it when they exist.

    `schema=False` skips validating the request against the schema (MCP tool arguments are the
    tool's, not the schema's); policies were validated when loaded, and a value of the wrong type
    is an evaluation error, a deny when strict."""
    if not queries:
        return []
    live = [outcome_of(r, strict=strict) for r in evaluate(snapshot, queries, entities, schema=schema)]
    if snapshot.shadow_index is None:
        return live
    shadows = evaluate(snapshot, queries, entities, shadow=True, schema=schema)
    return [replace(o, shadow=outcome_of(r, strict=strict)) for o, r in zip(live, shadows, strict=True)]


def _uid_text(uid: Uid) -> str:
    return f"{uid[0]}::{json.dumps(uid[1])}"


def could_allow(snapshot: Snapshot, query: Query, entities: cedarpy.Entities, unknown: str) -> bool:
    """Whether some value of `context[unknown]` could make the live policies allow `query`.

    Cedar's partial evaluation with that key unknown: an allow, or a permit left depending on
    it, is "could"; a deny, an error, or only forbids left is "could not". A preview, never a
    decision: the real request is decided in full when it comes.
    """
    ancestors = snapshot.entity_index.ancestors(query.principal, query.principal_parents)
    ids = snapshot.policy_index.slice_ids(query.principal, ancestors, query.action)
    context = {**query.context, unknown: {"__extn": {"fn": "unknown", "arg": unknown}}}
    request = {
        "principal": _uid_text(query.principal),
        "action": _uid_text(query.action),
        "resource": _uid_text(query.resource),
        "context": context,
    }
    result = cedarpy.is_authorized_partial(request, snapshot.policy_index.policy_set(ids), entities)
    if result.decision == cedarpy.Decision.Allow:
        return True
    diagnostics = result.diagnostics
    if result.decision != cedarpy.Decision.NoDecision or diagnostics.errors:
        return False
    # A permit already satisfied, or one still depending on the unknown, with forbids left open.
    residuals = result.residuals
    candidates = [*diagnostics.reasons, *diagnostics.nontrivial_residuals]
    return any(residuals.get(pid, {}).get("effect") == "permit" for pid in candidates)
