"""From a verified token to who is acting: current agent, user, delegation chain (docs/identity.md).

RFC 8693 section 4.1: the outermost `act.sub` is the current actor, nested `act` claims
are prior actors, the least recent most deeply nested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.config import DelegationConfig, IdentityConfig
from pep.errors import ChainError, TokenError
from pep.policy.registry import Registry
from pep.reasons import Reason
from pep.tokens.verifier import VerifiedToken

# Nesting past this is refused before any other chain rule, so a hostile token cannot
# make pep walk an unbounded structure.
_HARD_NESTING_LIMIT = 64


@dataclass(frozen=True)
class Identity:
    agent: str
    on_behalf_of: str | None
    # Current actor first, first actor last.
    chain: tuple[str, ...]
    user_groups: tuple[str, ...] = ()
    user_attributes: Mapping[str, Any] | None = None

    @property
    def depth(self) -> int:
        return len(self.chain)


def actor_chain(claims: Mapping[str, Any]) -> list[str]:
    """The `act` nesting as a list of actor subjects, current actor first."""
    chain: list[str] = []
    node = claims.get("act")
    while node is not None:
        if len(chain) >= _HARD_NESTING_LIMIT:
            raise ChainError(f"delegation chain nests deeper than {_HARD_NESTING_LIMIT}", Reason.CHAIN_TOO_DEEP)
        if not isinstance(node, Mapping):
            raise TokenError("`act` must be a JSON object", Reason.TOKEN_CLAIMS_MISSING)
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub:
            raise TokenError("every `act` needs a non-empty string `sub`", Reason.TOKEN_CLAIMS_MISSING)
        chain.append(sub)
        node = node.get("act")
    return chain


def resolve_identity(
    token: VerifiedToken,
    registry: Registry,
    delegation: DelegationConfig,
    identity: IdentityConfig,
) -> Identity:
    """Work out agent, user and chain, and apply the chain rules; raises `ChainError`."""
    claims = token.claims
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("`sub` must be a non-empty string", Reason.TOKEN_CLAIMS_MISSING)
    actors = actor_chain(claims)
    user: str | None
    if actors:
        if sub in registry:
            # An agent delegating onward: it is the first actor, and no user is involved.
            actors.append(sub)
            user = None
        else:
            user = sub
    elif sub in registry:
        actors, user = [sub], None  # autonomous agent
    elif token.client_id and token.client_id in registry:
        actors, user = [token.client_id], sub  # the agent acting directly for the user
    else:
        raise ChainError("no registered agent in the token (act, sub, client_id/azp)", Reason.CHAIN_UNKNOWN_AGENT)
    check_chain(actors, registry, delegation)
    _check_may_act(claims, actors[0])
    groups: tuple[str, ...] = ()
    attributes: dict[str, Any] = {}
    if user is not None:
        groups = _groups(claims.get(identity.user_groups_claim))
        attributes = {c: claims[c] for c in identity.user_claims if c in claims}
    return Identity(actors[0], user, tuple(actors), groups, attributes)


def check_chain(chain: Sequence[str], registry: Registry, delegation: DelegationConfig) -> None:
    if len(chain) > delegation.max_depth:
        raise ChainError(
            f"delegation chain has {len(chain)} agents, more than delegation.max_depth={delegation.max_depth}",
            Reason.CHAIN_TOO_DEEP,
        )
    seen: set[str] = set()
    for agent in chain:
        if agent in seen:
            raise ChainError(f"agent {agent!r} appears twice in the delegation chain", Reason.CHAIN_CYCLE)
        seen.add(agent)
    for agent in chain:
        if agent not in registry:
            raise ChainError(f"agent {agent!r} is not in the agent registry", Reason.CHAIN_UNKNOWN_AGENT)


def _check_may_act(claims: Mapping[str, Any], current: str) -> None:
    may_act = claims.get("may_act")
    if may_act is None:
        return
    if not isinstance(may_act, Mapping):
        raise TokenError("`may_act` must be a JSON object", Reason.TOKEN_CLAIMS_MISSING)
    allowed = may_act.get("sub")
    if allowed != current:
        raise ChainError(f"may_act does not admit the current actor {current!r}", Reason.CHAIN_DELEGATION_FORBIDDEN)


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in value.split() if g)
    if isinstance(value, list):
        return tuple(g for g in value if isinstance(g, str) and g)
    return ()
