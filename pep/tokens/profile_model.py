"""The shape of an issuer profile (`Profile`, `AppOnly`); the presets are in pep/tokens/profiles.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AppOnly:
    """The token is app-only (an autonomous agent, no user) when `claim` equals `value`.

    `{agent}` in `value` stands for the agent claim's value; `value=None` means "the claim is absent".
    """

    claim: str
    value: str | None
    # Compare with the agent lower-cased (Keycloak lower-cases usernames, not client ids).
    lower: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    # Claims naming the OAuth client, i.e. the agent: the first present wins.
    agent: tuple[str, ...]
    # Claims naming the user the agent acts for: the first present wins.
    user: tuple[str, ...]
    # Claims holding the scopes (a space-separated string or an array): the first present wins.
    scopes: tuple[str, ...]
    # Claims holding the user's groups or roles (string, array, or an object whose keys are names):
    # merged. None: `identity.user_groups_claim` (the rfc9068 profile, as before).
    groups: tuple[str, ...] | None
    # Claims that must be present; "a|b" is satisfied by either. None: `tokens.required_claims`.
    required_claims: tuple[str, ...] | None
    # Header `typ` values accepted ("" = none). None: `at+jwt`, and `JWT` if `tokens.accept_jwt_typ`.
    accept_typ: tuple[str, ...] | None
    # The claim matched against the issuer's `audiences` (an IdP without `aud` names its client instead).
    audience_claim: str = "aud"
    # "act": delegation is RFC 8693 nested `act`; "client": the IdP's on-behalf-of flow shows as the
    # client (the agent) acting for the token's user, a chain of one. `act` is read in both cases.
    chain: str = "act"
    # How an app-only (client credentials) token shows, beyond `sub` being a registered agent.
    app_only: tuple[AppOnly, ...] = ()
    # False: the IdP's tokens never carry a user (workload identities): every token is app-only.
    users: bool = True
    # Claims that must hold exactly this value, else `token_type_invalid` (the IdP's own token-type claim).
    expect: tuple[tuple[str, str], ...] = ()
    # Refuse tokens carrying ID-token claims (`nonce`, `at_hash`, `c_hash`) with `token_type_invalid`.
    refuse_id_tokens: bool = True
    # The claim that is the token's unique id (`jti`; a transaction token's `txn`).
    jti_claim: str = "jti"
    doc: str = ""
    sources: tuple[str, ...] = ()
