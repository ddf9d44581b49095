"""Stage 1, the principal: who asks, from a token or as a trusted subject.

Failures are kept, not raised: admission raises them in their place in the controls' order,
so the kill switch's `all` (and a disabled issuer) outrank a bad token or a broken chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pep.config import DelegationConfig, IdentityConfig
from pep.controls.admit import Who
from pep.decision import Caller
from pep.delegation.identity import Identity, check_chain, resolve_identity
from pep.errors import PepError
from pep.pipeline.request import Subject
from pep.policy.registry import Registry
from pep.reasons import Reason
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from pep.uids import AGENT, Uid, format_uid


@dataclass(frozen=True)
class Principal:
    """The resolved principal of a request, or why it could not be resolved."""

    uid: Uid | None
    identity: Identity | None
    who: Who
    token: VerifiedToken | None = None
    # A trusted subject's attributes (None for a token principal).
    properties: Mapping[str, Any] | None = None
    trusted: bool = False

    @property
    def resolved(self) -> bool:
        return self.who.token_error is None and self.who.chain_error is None


def from_token(
    verifier: TokenVerifier,
    creds: Credentials,
    registry: Registry,
    delegation: DelegationConfig,
    identity_config: IdentityConfig,
    expect: tuple[str, str] | None,
    owner: tuple[str, str] | None = None,
) -> Principal:
    try:
        token = verifier.verify(creds)
    except PepError as e:
        return Principal(None, None, Who(token_error=e))
    try:
        identity = resolve_identity(token, registry, delegation, identity_config)
    except PepError as e:
        return Principal(None, None, Who(issuer=token.issuer, chain_error=e, **_revocable(token)), token)
    who = Who(token.issuer, identity.on_behalf_of, identity.chain, identity.agent, **_revocable(token))
    if expect is not None and expect != (AGENT, identity.agent):
        principal_uid = format_uid((AGENT, identity.agent))
        mismatch = PepError(
            f"{format_uid(expect)} is not the token's principal {principal_uid}", Reason.INVALID_REQUEST
        )
        who = Who(token.issuer, chain_error=mismatch, **_revocable(token))
    if owner is not None and owner != (identity.agent, identity.on_behalf_of or ""):
        # Said without naming the owner: the caller learns only that it is someone else.
        taken = PepError("the session was opened by another agent or for another user", Reason.INVALID_REQUEST)
        who = Who(token.issuer, chain_error=taken, **_revocable(token))
    return Principal((AGENT, identity.agent), identity, who, token)


def _revocable(token: VerifiedToken) -> dict[str, Any]:
    """What revocation judges a token by (pep.controls.revocation): its jti and its iat, None when absent."""
    iat = token.claims.get("iat")
    return {"token": True, "jti": token.jti, "issued_at": float(iat) if isinstance(iat, (int, float)) else None}


def from_subject(subject: Subject, registry: Registry, delegation: DelegationConfig) -> Principal:
    """A trusted subject: an `Agent` is a chain of one (registered, its controls apply); anyone else a user."""
    uid = (subject.type, subject.id)
    if subject.type != AGENT:
        identity = Identity("", subject.id, ())
        return Principal(uid, identity, Who(user=subject.id), properties=subject.properties, trusted=True)
    chain = (subject.id,)
    identity = Identity(subject.id, None, chain)
    try:
        check_chain(chain, registry, delegation)
    except PepError as e:
        return Principal(uid, identity, Who(chain_error=e), properties=subject.properties, trusted=True)
    return Principal(uid, identity, Who(chain=chain, agent=subject.id), properties=subject.properties, trusted=True)


def caller(
    who: Principal,
    *,
    schema: bool,
    strict: bool,
    grants: bool,
    listing: bool,
    policies: bool,
    require_registry_scopes: bool = False,
) -> Caller:
    """What the principal puts in Cedar's request besides the policy directory, for the log (references only)."""
    ident, token = who.identity, who.token
    user = ident is not None and ident.on_behalf_of is not None and not who.trusted
    return Caller(
        user_groups=ident.user_groups if user and ident is not None else (),
        user_attributes=ident.user_attributes if user and ident is not None else None,
        issued_at=token.issued_at if token is not None else None,
        expires_at=token.expires_at if token is not None else None,
        subject=who.uid if who.trusted else None,
        subject_properties=who.properties if who.trusted else None,
        schema=schema,
        strict=strict,
        grants=grants,
        listing=listing,
        policies=policies,
        require_registry_scopes=require_registry_scopes,
    )
