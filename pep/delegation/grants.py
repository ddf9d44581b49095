"""Delegation grants (docs/identity.md): every hop of a chain must itself be permitted.

pep asks Cedar whether `Action::"delegate"` is permitted with the delegator (the user for
the first hop, else the prior agent) as principal and the delegate agent as resource.
The verdict depends only on the token and the snapshot, so it is kept per
(policy version, token): a token's later calls skip Cedar.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import cedarpy

from pep.delegation.identity import Identity
from pep.errors import PepError
from pep.policy.evaluate import Query, evaluate
from pep.policy.lru import LRU
from pep.policy.snapshot import Snapshot
from pep.reasons import Reason
from pep.uids import ACTION, AGENT, GROUP, USER, format_uid

DELEGATE_ACTION = "delegate"
GRANT_CACHE_SIZE = 10_000


class Grants:
    def __init__(self, *, strict: bool = True, cache_size: int = GRANT_CACHE_SIZE) -> None:
        self._strict = strict
        # "" when every hop is permitted, else why not.
        self._verdicts: LRU[tuple[str, str], str] = LRU(cache_size)

    def queries(self, identity: Identity, context: dict[str, Any], user: dict[str, Any] | None) -> list[Query]:
        """Each hop of the chain as Action::"delegate": delegator -> delegate agent."""
        chain = list(reversed(identity.chain))  # first actor first
        delegate_action = (ACTION, DELEGATE_ACTION)
        hops = []
        if identity.on_behalf_of is not None:
            groups = tuple((GROUP, g) for g in identity.user_groups) if user is not None else ()
            hops.append(Query((USER, identity.on_behalf_of), delegate_action, (AGENT, chain[0]), context, groups))
        for delegator, delegate in pairwise(chain):
            hops.append(Query((AGENT, delegator), delegate_action, (AGENT, delegate), context))
        return hops

    def known(self, snapshot: Snapshot, raw_token: str) -> str | None:
        """The kept verdict for this token and snapshot ("" when every hop is permitted), or None."""
        return self._verdicts.get((snapshot.version, raw_token))

    def check(
        self,
        snapshot: Snapshot,
        raw_token: str,
        hops: Sequence[Query],
        entities: cedarpy.Entities | None,
        bad: Sequence[str],
    ) -> None:
        """Every hop must be permitted. The verdict depends only on the token and the snapshot,
        so it is kept per (policy version, token) and a token's later calls skip Cedar."""
        key = (snapshot.version, raw_token)
        refused = self._verdicts.get(key)
        if refused is None:
            if entities is None:
                raise PepError(f"request entities: {bad[0]}", Reason.INVALID_REQUEST)
            refused = ""
            for hop, result in zip(hops, evaluate(snapshot, hops, entities), strict=True):
                if not result.allowed or (self._strict and result.diagnostics.errors):
                    refused = f"{format_uid(hop.principal)} may not delegate to {format_uid(hop.resource)}"
                    if result.diagnostics.errors:
                        refused += ": " + "; ".join(result.diagnostics.errors)
                    break
            self._verdicts.put(key, refused)
        if refused:
            raise PepError(refused, Reason.CHAIN_DELEGATION_FORBIDDEN)
