"""Ask Cedar: each query against its policy slice, queries sharing a slice in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from pep.policy.loader import Snapshot
from pep.policy.slicing import Uid, entity_refs


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
