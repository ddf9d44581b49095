"""From a verified token to who is acting: current agent, user, delegation chain (docs/identity.md).

RFC 8693 section 4.1: the outermost `act.sub` is the current actor, nested `act` claims
are prior actors, the least recent most deeply nested. Where the token names the client
(the agent) and the user comes from the issuer's profile (pep/tokens/profiles.py): the
verified token carries them (`client_id`, `user`, `app_only`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.config import DelegationConfig, IdentityConfig
from pep.errors import ChainError, TokenError
from pep.policy.registry import AgentRecord, Registry
from pep.reasons import Reason
from pep.tokens.claims import claim_value, names_of
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
    # The scopes policies see (`context.token.scopes`): the token's intersected with the current
    # actor's registry `scopes`; None means the token's as they are. Sorted, what was taken out.
    scopes: frozenset[str] | None = None
    scopes_dropped: tuple[str, ...] = ()

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
    # Only an app-only token may go without `sub` (PingOne's client credentials tokens).
    if (sub is not None or not token.app_only) and (not isinstance(sub, str) or not sub):
        raise TokenError("`sub` must be a non-empty string", Reason.TOKEN_CLAIMS_MISSING)
    actors = actor_chain(claims)
    profile = token.profile
    # The agent the subject stands for: a registered `sub`, or, in an app-only token (a
    # Keycloak service account, Auth0's `<client>@clients`, ...), the client itself: never a user.
    subject_agent: str | None = None
    if profile.name == "spiffe":  # a JWT-SVID: its SPIFFE ID names the agent (`spiffe_id` in agents.yaml)
        subject_agent = registry.agent_for_spiffe_id(sub) if isinstance(sub, str) else None
        if subject_agent is None:
            raise ChainError(f"SPIFFE ID {sub!r} is no agent's spiffe_id in the registry", Reason.CHAIN_UNKNOWN_AGENT)
    elif sub in registry:
        subject_agent = sub
    elif token.app_only:
        subject_agent = token.client_id or (sub if not profile.users else None)
        if subject_agent is None:
            raise ChainError("app-only token names no client (agent)", Reason.CHAIN_UNKNOWN_AGENT)
    person = token.user  # the profile's user claim: `sub` for rfc9068, as before; Entra's `oid`
    user: str | None
    if actors:
        if subject_agent is not None:
            # An agent delegating onward: it is the first actor, and no user is involved.
            actors.append(subject_agent)
            user = None
        else:
            user = _user(person)
    elif subject_agent is not None:
        actors, user = [subject_agent], None  # autonomous agent
    elif token.client_id and token.client_id in registry:
        actors, user = [token.client_id], _user(person)  # the agent acting directly for the user
    else:
        agents = "/".join(profile.agent) or "client"
        raise ChainError(f"no registered agent in the token (act, sub, {agents})", Reason.CHAIN_UNKNOWN_AGENT)
    check_chain(actors, registry, delegation)
    _check_may_act(claims, actors[0])
    groups: tuple[str, ...] = ()
    attributes: dict[str, Any] = {}
    if user is not None:
        if profile.groups is None:  # rfc9068 without an override: identity.user_groups_claim, as before
            groups = _groups(claims.get(identity.user_groups_claim))
        else:
            groups = tuple(dict.fromkeys(g for name in profile.groups for g in _groups(claim_value(claims, name))))
        attributes = {c: claims[c] for c in identity.user_claims if c in claims}
    scopes, dropped = minimized_scopes(token.scopes, registry.get(actors[0]), identity.require_registry_scopes)
    return Identity(actors[0], user, tuple(actors), groups, attributes, scopes, dropped)


def minimized_scopes(
    scopes: frozenset[str], record: AgentRecord | None, require_registry: bool
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The scopes policies see and the ones dropped (sorted): the token's intersected with the agent's
    registry `scopes`; an agent listing none keeps the token's, or gets none with `require_registry`."""
    allowed = record.scopes if record is not None else None
    if allowed is None:
        if not require_registry or not scopes:
            return scopes, ()
        return frozenset(), tuple(sorted(scopes))
    if scopes <= allowed:
        return scopes, ()
    return scopes & allowed, tuple(sorted(scopes - allowed))


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


def _user(value: str) -> str:
    if not value:
        raise TokenError("the token names no user (the profile's user claim is missing)", Reason.TOKEN_CLAIMS_MISSING)
    return value


def _groups(value: Any) -> tuple[str, ...]:
    """A space-separated string, a list of strings, or an object whose keys are the names (ZITADEL roles)."""
    return names_of(value)
