"""One loaded policy directory, immutable: what every request reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from pep.policy.killswitch_file import KillList
from pep.policy.limits_file import Limits
from pep.policy.registry import Registry
from pep.policy.shapes import ValidatedShapes
from pep.policy.slicing import EntityIndex, PolicyIndex
from pep.uids import Uid


@dataclass(frozen=True)
class PolicyInfo:
    id: str
    path: str
    line: int
    effect: str
    template: bool
    # The policy as written (a link: its template's text), for `pep check`.
    text: str = ""


@dataclass(frozen=True)
class Snapshot:
    """One loaded policy set. Never mutated: a reload builds a new one."""

    directory: str
    version: str
    policy_set: cedarpy.PolicySet
    schema: cedarpy.Schema | None
    registry: Registry
    policies: Mapping[str, PolicyInfo]
    # Every stored entity (entities.json, agents, agent groups): requests get slices of it.
    entity_index: EntityIndex
    # The live policies by principal and action scope: requests get slices of them.
    policy_index: PolicyIndex
    actions: frozenset[str]
    loaded_at: float = 0.0
    # Shadow policies (shadow/): evaluated beside the live set, never enforced.
    shadow_policy_set: cedarpy.PolicySet | None = None
    shadow_index: PolicyIndex | None = None
    shadow_policies: Mapping[str, PolicyInfo] = field(default_factory=dict)
    killswitch: KillList = field(default_factory=KillList)
    limits: Limits = field(default_factory=Limits)
    # Request shapes this snapshot's schema has accepted (pep.policy.shapes).
    shapes: ValidatedShapes = field(default_factory=ValidatedShapes, compare=False, repr=False)

    @property
    def entity_uids(self) -> frozenset[Uid]:
        return self.entity_index.uids

    def entities_for(self, roots: Iterable[Uid], delta: list[dict[str, Any]] | None = None) -> cedarpy.Entities:
        """The entities a request can reach from `roots`, plus its own `delta` entities."""
        return self.entity_index.handle(roots, delta)

    @property
    def policy_count(self) -> int:
        """Policies that can decide: static ones and template links, not bare templates."""
        return sum(1 for p in self.policies.values() if not p.template)
