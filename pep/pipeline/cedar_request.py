"""Stage 3, the Cedar request: principal, action, resource, context and entities for each check.

A token principal gets the context keys pep sets (docs/identity.md, "What Cedar sees") and
one entity slice for the whole request; a trusted subject gets the caller's context as is,
and its own and the resource's properties merged over the entity store, check by check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from pep.delegation.identity import Identity
from pep.errors import RequestError
from pep.pipeline.principal import Principal
from pep.policy.evaluate import Query, roots_of
from pep.policy.properties import entities_with_properties
from pep.policy.request import Check, cedar_value, entity_delta
from pep.policy.slicing import entity_refs
from pep.policy.snapshot import Snapshot
from pep.tokens.verifier import VerifiedToken
from pep.tokens.workload import transaction_context
from pep.uids import ACTION, AGENT, GROUP, USER, Uid


def _ref(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def base_context(identity: Identity, token: VerifiedToken) -> dict[str, Any]:
    """The keys pep itself sets: on_behalf_of, delegation, token, binding."""
    ctx: dict[str, Any] = {
        "delegation": {
            "depth": identity.depth,
            "actors": [{"__entity": _ref(AGENT, a)} for a in identity.chain[1:]],
            "origin": {"__entity": _ref(AGENT, identity.chain[-1])},
        },
        "token": {
            "issuer": token.issuer,
            "scopes": sorted(token.scopes if identity.scopes is None else identity.scopes),
            "client_id": token.client_id,
            "issued_at": token.issued_at,
            "expires_at": token.expires_at,
        },
        "binding": token.binding,
    }
    transaction = transaction_context(token.claims, token.profile)  # a transaction token's tctx, rctx, purp
    if transaction is not None:
        ctx["token"]["transaction"] = transaction
    if identity.on_behalf_of is not None:
        ctx["on_behalf_of"] = {"__entity": _ref(USER, identity.on_behalf_of)}
    return ctx


def user_entity(identity: Identity) -> dict[str, Any] | None:
    """The on-behalf-of user as the token describes it: its groups and copied claims."""
    if identity.on_behalf_of is None:
        return None
    return {
        "uid": _ref(USER, identity.on_behalf_of),
        "attrs": cedar_value(dict(identity.user_attributes or {}), "user attributes"),
        "parents": [_ref(GROUP, g) for g in identity.user_groups],
    }


@dataclass(frozen=True)
class TokenRequest:
    """The Cedar request of a token principal: one query per check, and what they share."""

    queries: list[Query]
    base: dict[str, Any]
    user: dict[str, Any] | None
    # One slice for every check, or None (with the problem) when the request's entities clash.
    entities: cedarpy.Entities | None
    problem: str
    _snapshot: Snapshot
    _chain: tuple[str, ...]
    _resources: Sequence[dict[str, Any] | None]

    def entities_of(self, i: int) -> tuple[cedarpy.Entities | None, str]:
        """Check `i`'s entities: the shared slice, else a slice of its own."""
        if self.entities is not None:
            return self.entities, ""
        roots = {(AGENT, a) for a in self._chain} | roots_of([self.queries[i]])
        return _slice(self._snapshot, roots, self.user, [self._resources[i]])


def for_token(
    snapshot: Snapshot,
    principal: Principal,
    checks: Sequence[Check],
    contexts: Sequence[Mapping[str, Any]],
    resources: Sequence[dict[str, Any] | None],
) -> TokenRequest:
    identity, token = principal.identity, principal.token
    assert identity is not None and token is not None
    base = base_context(identity, token)
    user = user_entity(identity)
    if user is not None and (USER, user["uid"]["id"]) in snapshot.entity_index:
        user = None  # the entity store's user wins over the token's view
    queries = [
        Query((AGENT, identity.agent), (ACTION, c.action), (c.resource.type, c.resource.id), {**ctx, **base})
        for c, ctx in zip(checks, contexts, strict=True)
    ]
    # Everything the request names; the base context adds only the chain and the user.
    roots: set[Uid] = {(AGENT, a) for a in identity.chain}
    if identity.on_behalf_of is not None:
        roots.add((USER, identity.on_behalf_of))
    for c, ctx in zip(checks, contexts, strict=True):
        roots.add((c.resource.type, c.resource.id))
        roots.update(c.resource.parents)
        roots.update(entity_refs(ctx))
    entities, problem = _slice(snapshot, roots, user, resources)
    return TokenRequest(queries, base, user, entities, problem, snapshot, identity.chain, resources)


def for_subject(
    snapshot: Snapshot, principal: Principal, check: Check, context: Mapping[str, Any]
) -> tuple[Query, cedarpy.Entities]:
    """One trusted subject's check. Raises RequestError (malformed) or ValueError (entities that do not fit)."""
    assert principal.uid is not None
    query = Query(principal.uid, (ACTION, check.action), (check.resource.type, check.resource.id), dict(context))
    described = [
        (principal.uid, principal.properties, ()),
        ((check.resource.type, check.resource.id), check.resource.attributes, check.resource.parents),
    ]
    return query, entities_with_properties(snapshot, query, described)


def _slice(
    snapshot: Snapshot, roots: set[Uid], user: dict[str, Any] | None, resources: Sequence[dict[str, Any] | None]
) -> tuple[cedarpy.Entities | None, str]:
    """One entity slice, or (None, why) if the request's own entities do not fit together."""
    try:
        return snapshot.entities_for(roots, entity_delta([user, *resources])), ""
    except (ValueError, RequestError) as e:
        return None, str(e)
