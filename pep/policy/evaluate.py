"""Ask Cedar: each query against its policy slice, queries sharing a slice in one call."""

from __future__ import annotations

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
    return cedarpy.is_authorized_batch(
        [q.request() for q in queries], index.policy_set(ids), entities, snapshot.schema if schema else None
    )


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
    """Map a Cedar answer to a reason code."""
    reasons = tuple(result.diagnostics.reasons)
    errors = tuple(result.diagnostics.errors)
    if result.decision == cedarpy.Decision.NoDecision:
        # Cedar could not build the request: it does not fit the schema.
        return Outcome(False, Reason.INVALID_REQUEST, errors=errors)
    if errors and strict:
        return Outcome(False, Reason.EVALUATION_ERROR, policies=reasons, errors=errors)
    if result.allowed:
        return Outcome(True, Reason.ALLOWED, policies=reasons, errors=errors)
    if reasons:
        return Outcome(False, Reason.POLICY_FORBID, policies=reasons, errors=errors)
    return Outcome(False, Reason.POLICY_NO_PERMIT, errors=errors)


def outcomes(
    snapshot: Snapshot, queries: Sequence[Query], entities: cedarpy.Entities, *, strict: bool
) -> list[Outcome]:
    """Each query's outcome over the live policies, with the shadow policies' beside it when they exist."""
    if not queries:
        return []
    live = [outcome_of(r, strict=strict) for r in evaluate(snapshot, queries, entities)]
    if snapshot.shadow_index is None:
        return live
    shadows = evaluate(snapshot, queries, entities, shadow=True)
    return [replace(o, shadow=outcome_of(r, strict=strict)) for o, r in zip(live, shadows, strict=True)]
