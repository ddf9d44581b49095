"""Issuer profiles: where each identity provider's access tokens carry the agent, the user, the scopes.

THE table of presets (`PROFILES`), one entry per IdP, each with what it rests on (`doc`, `sources`).
A profile changes only where pep looks, never what it accepts as proof: signature, algorithms,
audience, expiry, size and the DPoP/mTLS rules are the same for every profile. `typ` is typing,
not proof, so a profile may accept the `typ` (or its absence) its IdP sends; `dpop+jwt` and ID
token types are never accepted, and a token shaped like an ID token (`nonce`, `at_hash`,
`c_hash`) is refused by every profile but `rfc9068` (which refuses it by `typ`, as before).

`resolve` applies an issuer's overrides (`claims`, `required_claims`, `accept_typ`) once, at
start-up; the request path reads the resolved `Profile` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pep.config import PROFILES as PROFILE_NAMES
from pep.config import IdentityConfig, IssuerConfig, TokenConfig
from pep.errors import ConfigError
from pep.tokens.profile_model import AppOnly, Profile

__all__ = ["ID_TOKEN_CLAIMS", "PROFILES", "TYPS", "AppOnly", "Profile", "describe", "normalise_typ", "resolve"]

# The `typ` values a profile may accept ("" = no typ header); the media-type form
# (`application/at+jwt`) is the same value (RFC 7515 4.1.9).
TYPS = ("at+jwt", "jwt", "")
# Claims only an OpenID Connect ID token carries (OIDC Core 2, 3.1.3.6, 3.3.2.11).
ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")
# RFC 9068 section 2.2, as `tokens.required_claims` has it by default.
_RFC9068_REQUIRED = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")


_SUB_IS_AGENT = AppOnly("sub", "{agent}")

PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="rfc9068",
            agent=("client_id", "azp"),
            user=("sub",),
            scopes=("scope", "scp"),
            groups=None,
            required_claims=None,
            accept_typ=None,
            refuse_id_tokens=False,
            doc=(
                "The default, exactly pep's behaviour before profiles: RFC 9068 access tokens (typ at+jwt; "
                "iss, sub, aud, exp, iat, jti, client_id required; client_id or azp names the client; scope a "
                "space-separated string, else scp). tokens.required_claims, tokens.accept_jwt_typ and "
                "identity.user_groups_claim apply."
            ),
            sources=("https://www.rfc-editor.org/rfc/rfc9068", "https://www.rfc-editor.org/rfc/rfc8693#section-4.1"),
        ),
        Profile(
            name="okta",
            agent=("cid",),
            user=("sub",),
            scopes=("scp",),
            groups=("groups",),
            required_claims=("iss", "sub", "aud", "exp", "iat", "jti", "cid"),
            accept_typ=("",),
            chain="client",
            app_only=(_SUB_IS_AGENT,),
            doc=(
                "Okta custom authorization server access tokens: no typ header; the client in cid, scopes in an "
                "scp array, jti and ver always sent; a user token has sub = the user's login and uid = the user's "
                "id, a client credentials token has sub = the client id (= cid) and no uid. groups only with a "
                "groups claim configured on the authorization server. On-behalf-of token exchange issues a token "
                "whose cid is the exchanging service and sub the user (no act)."
            ),
            sources=(
                "https://developer.okta.com/docs/reference/api/oidc/#access-token-payload",
                "https://developer.okta.com/docs/guides/set-up-token-exchange/main/",
            ),
        ),
        Profile(
            name="entra",
            agent=("azp", "appid"),
            user=("oid",),
            scopes=("scp", "roles"),
            groups=("groups",),
            required_claims=("iss", "sub", "aud", "exp", "iat", "tid", "oid", "azp|appid"),
            accept_typ=("jwt", ""),
            chain="client",
            app_only=(AppOnly("idtyp", "app"), AppOnly("scp", None)),
            doc=(
                "Microsoft Entra ID access tokens (v1 and v2): header typ JWT; the client in appid (v1) or azp "
                "(v2); the user in oid (sub is pairwise per application); delegated scopes in an scp "
                "space-separated string, which only user tokens carry; app-only permissions in a roles array "
                "(scopes: scp, else roles); uti instead of jti; app-only tokens have no scp (and idtyp = app when "
                "that optional claim is on). The on-behalf-of flow issues a token whose azp/appid is the middle "
                "tier (the agent) and oid the user (no act)."
            ),
            sources=(
                "https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference",
                "https://learn.microsoft.com/en-us/entra/identity-platform/optional-claims-reference",
                "https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-on-behalf-of-flow",
            ),
        ),
        Profile(
            name="auth0",
            agent=("client_id", "azp"),
            user=("sub",),
            scopes=("scope",),
            groups=("permissions",),
            required_claims=("iss", "sub", "aud", "exp", "iat", "client_id"),
            accept_typ=("at+jwt", "jwt"),
            app_only=(AppOnly("sub", "{agent}@clients"), AppOnly("gty", "client-credentials")),
            doc=(
                "Auth0 access tokens, both dialects: the Auth0 profile (typ JWT, the client in azp, no jti) and "
                "the RFC 9068 profile (typ at+jwt, client_id, jti); scope a space-separated string; RBAC "
                "permissions in a permissions array (read as the user's groups); a client credentials token has "
                "sub = '<client_id>@clients' and gty = client-credentials. Custom Token Exchange can set act."
            ),
            sources=(
                "https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles",
                "https://auth0.com/docs/get-started/authentication-and-authorization-flow/client-credentials-flow",
                "https://auth0.com/docs/authenticate/custom-token-exchange",
            ),
        ),
        Profile(
            name="ping",
            agent=("client_id",),
            user=("sub",),
            scopes=("scope",),
            groups=("groups",),
            required_claims=("iss", "aud", "exp", "iat", "client_id"),
            accept_typ=("at+jwt", "jwt", ""),
            app_only=(AppOnly("sub", None), _SUB_IS_AGENT),
            doc=(
                "PingOne access tokens: RS256, typ at+jwt optional until PingOne always sends it; client_id, "
                "scope a space-separated string, env and org; sub (the user) and sid are absent from client "
                "credentials tokens, which are the client acting alone. "
                "PingAM/PingFederate JWT access tokens send typ JWT (or none) and express RFC 8693 token exchange "
                "with act (may_act restricts who may act)."
            ),
            sources=(
                "https://developer.pingidentity.com/pingone-api/foundations/authentication-concepts/"
                "access-tokens-and-id-tokens/token-claims.html",
                "https://docs.pingidentity.com/pingam/8/oauth2-guide/token-exchange.html",
            ),
        ),
        Profile(
            name="zitadel",
            agent=("client_id", "azp"),
            user=("sub",),
            scopes=("scope",),
            groups=("urn:zitadel:iam:org:project:roles",),
            required_claims=("iss", "sub", "aud", "exp", "iat", "jti"),
            accept_typ=("jwt", "at+jwt"),
            doc=(
                "ZITADEL JWT access tokens: iss, sub, aud, exp, iat, jti, client_id/azp; no scope claim (scopes "
                "are empty unless claims.scopes names one); roles under urn:zitadel:iam:org:project:roles, an "
                "object whose keys are the role names; a service user (machine user) token has sub = that user's "
                "id. Token exchange with an actor token carries act only when a JWT access token is requested "
                "(requested_token_type urn:ietf:params:oauth:token-type:jwt)."
            ),
            sources=(
                "https://zitadel.com/docs/apis/openidoauth/claims",
                "https://zitadel.com/docs/guides/integrate/token-exchange",
            ),
        ),
        Profile(
            name="workos",
            agent=("client_id",),
            user=("sub",),
            scopes=("scope",),
            groups=("role", "permissions"),
            required_claims=("iss", "sub", "aud", "exp", "iat", "jti", "client_id"),
            accept_typ=("at+jwt", "jwt", ""),
            chain="client",
            app_only=(_SUB_IS_AGENT,),
            doc=(
                "WorkOS AuthKit Connect access tokens: a user token has sub = the user id, client_id = the "
                "requesting application, org_id, sid, scope, jti; an M2M (client credentials) token has sub = "
                "client_id = the application's client id and no sid. AuthKit session tokens have no aud or client_id "
                "and are refused under this profile; their act means an admin impersonating the user."
            ),
            sources=(
                "https://workos.com/docs/authkit/connect/token-claims",
                "https://workos.com/docs/fga/authkit-integration",
            ),
        ),
        Profile(
            name="keycloak",
            agent=("azp", "client_id"),
            user=("sub",),
            scopes=("scope",),
            groups=("groups", "realm_access.roles"),
            required_claims=("iss", "sub", "aud", "exp", "iat", "jti", "azp"),
            accept_typ=("jwt", "at+jwt"),
            app_only=(AppOnly("preferred_username", "service-account-{agent}", lower=True),),
            expect=(("typ", "Bearer"),),
            doc=(
                "Keycloak access tokens: header typ JWT; payload typ Bearer (ID tokens say ID); the client in azp "
                "(and client_id in a service-account token); scope a space-separated string; realm roles in "
                "realm_access.roles, groups with a group membership mapper; aud needs an audience mapper. A "
                "service-account (client credentials) token has sub = the service account user's UUID and "
                "preferred_username = service-account-<client>: it is the client acting alone, never a user. "
                "Standard token exchange (26.2+) gives azp = the exchanging client and sub = the user, with no "
                "act; delegation with an actor token and act is not in a released version yet."
            ),
            sources=(
                "https://www.keycloak.org/docs/latest/server_admin/#_service_accounts",
                "https://www.keycloak.org/securing-apps/token-exchange",
                "https://www.keycloak.org/docs/latest/server_admin/#_audience",
            ),
        ),
        Profile(
            name="hydra",
            agent=("client_id",),
            user=("sub",),
            scopes=("scp", "scope"),
            groups=("groups",),
            required_claims=("iss", "sub", "aud", "exp", "iat", "jti", "client_id"),
            accept_typ=("jwt", "at+jwt"),
            chain="client",
            app_only=(_SUB_IS_AGENT,),
            doc=(
                "Ory Hydra with strategies.access_token=jwt: iss, sub, aud (an array), exp, iat, nbf, jti, "
                "client_id; scopes in an scp array by default (strategies.jwt.scope_claim may add a scope "
                "string); custom claims under ext; a client credentials token has sub = client_id. No token "
                "exchange: a user token is the client acting for its sub."
            ),
            sources=(
                "https://www.ory.sh/docs/hydra/jwks#json-web-token-jwt-access-tokens",
                "https://github.com/ory/hydra/issues/3524",
            ),
        ),
        Profile(
            name="vault",
            agent=("sub",),
            user=(),
            scopes=("scope",),
            groups=("groups",),
            required_claims=("iss", "sub", "aud", "exp", "iat"),
            accept_typ=("",),
            chain="client",
            users=False,
            doc=(
                "HashiCorp Vault identity tokens (identity/oidc/token/<role>): no typ header; iss, sub = the "
                "entity id, aud = the role's client_id, exp, iat, namespace, plus the role's template claims; no "
                "jti. A workload identity: never a user; claims.agent may name a template claim instead of sub."
            ),
            sources=(
                "https://developer.hashicorp.com/vault/docs/secrets/identity/identity-token",
                "https://developer.hashicorp.com/vault/api-docs/secret/identity/tokens",
            ),
        ),
        Profile(
            name="cognito",
            agent=("client_id",),
            user=("sub",),
            scopes=("scope",),
            groups=("cognito:groups",),
            required_claims=("iss", "sub", "exp", "iat", "jti", "client_id", "token_use"),
            accept_typ=("",),
            audience_claim="client_id",
            chain="client",
            app_only=(_SUB_IS_AGENT,),
            expect=(("token_use", "access"),),
            doc=(
                "Amazon Cognito user pool access tokens: header kid and alg only (no typ); no aud, the app client "
                "is client_id (matched against audiences); token_use = access (ID tokens say id); scope a "
                "space-separated string; groups in cognito:groups; username and sub for a user; a client "
                "credentials token has sub = client_id. No token exchange."
            ),
            sources=(
                "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html",
                "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html",
            ),
        ),
        Profile(
            name="spiffe",
            agent=("sub",),
            user=(),
            scopes=("scope",),
            groups=(),
            required_claims=("sub", "aud", "exp"),
            accept_typ=("jwt", "jose", ""),
            chain="client",
            users=False,
            doc=(
                "SPIFFE JWT-SVIDs (SPIRE and other SPIFFE issuers): typ JWT or JOSE, or none; sub = the workload's "
                "SPIFFE ID, mapped to its agent by spiffe_id in agents.yaml; aud and exp required, iss optional (an "
                "SVID without iss is matched to the spiffe issuer of its trust domain); sub must be in the issuer's "
                "trust_domain. Keys from the trust domain's bundle (use jwt-svid). A workload identity: never a user."
            ),
            sources=(
                "https://github.com/spiffe/spiffe/blob/main/standards/JWT-SVID.md",
                "https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md",
                "https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Trust_Domain_and_Bundle.md",
            ),
        ),
        Profile(
            name="txntoken",
            agent=("req_wl", "rctx.req_wl"),
            user=("sub",),
            scopes=("scope",),
            groups=(),
            required_claims=("sub", "aud", "exp", "iat", "txn", "scope"),
            accept_typ=("txntoken+jwt",),
            app_only=(_SUB_IS_AGENT,),
            jti_claim="txn",
            doc=(
                "OAuth Transaction Tokens (draft-ietf-oauth-transaction-tokens): typ txntoken+jwt; txn (the "
                "transaction id, pep's jti), sub (the transaction's principal: the user, or a registered agent "
                "acting alone), scope, aud (the trust domain), iat, exp; iss optional (matched to the one txntoken "
                "issuer whose audiences name aud). The agent is the requesting workload, req_wl (rctx.req_wl in "
                "earlier drafts; claims.agent may name another claim, a dotted path such as tctx.agent). tctx, rctx "
                "and purp reach policies as context.token.transaction."
            ),
            sources=(
                "https://datatracker.ietf.org/doc/draft-ietf-oauth-transaction-tokens/",
                "https://www.rfc-editor.org/rfc/rfc8417#section-2.2",
            ),
        ),
    )
}

if tuple(PROFILES) != PROFILE_NAMES:  # pragma: no cover - the config layer names the same table
    raise RuntimeError("pep.config.PROFILES and pep.tokens.profiles.PROFILES differ")


def normalise_typ(value: str) -> str:
    """`at+jwt`, `jwt` or "" from a header `typ` or an `accept_typ` entry (case-insensitive, media-type form)."""
    text = value.lower()
    return text[len("application/") :] if text.startswith("application/") else text


def resolve(issuer: IssuerConfig, tokens: TokenConfig, identity: IdentityConfig | None = None) -> Profile:
    """The issuer's effective profile: the preset, then its overrides; globals fill what the preset leaves.

    Without `identity`, `groups` stays None for the rfc9068 profile (identity.user_groups_claim at request time).
    """
    base = PROFILES.get(issuer.profile)
    if base is None:
        raise ConfigError("profile", f"unknown profile {issuer.profile!r} (known: {', '.join(PROFILES)})")
    p = base
    if p.required_claims is None:
        p = replace(p, required_claims=tokens.required_claims)
    if p.accept_typ is None:
        p = replace(p, accept_typ=("at+jwt", "jwt") if tokens.accept_jwt_typ else ("at+jwt",))
    if p.groups is None and identity is not None:
        p = replace(p, groups=(identity.user_groups_claim,))
    c = issuer.claims
    overrides: dict[str, Any] = {
        name: value
        for name, value in (("agent", c.agent), ("user", c.user), ("scopes", c.scopes), ("groups", c.groups))
        if value is not None
    }
    if issuer.required_claims is not None:
        overrides["required_claims"] = issuer.required_claims
    if issuer.accept_typ is not None:
        overrides["accept_typ"] = issuer.accept_typ
    p = replace(p, **overrides)
    return replace(p, accept_typ=tuple(dict.fromkeys(normalise_typ(t) for t in p.accept_typ or ())))


def describe(profile: Profile) -> dict[str, Any]:
    """The resolved mapping as plain data (`pep config show`)."""
    return {
        "profile": profile.name,
        "claims": {
            "agent": list(profile.agent),
            "user": list(profile.user) if profile.users else [],
            "scopes": list(profile.scopes),
            "groups": list(profile.groups or ()),
        },
        "required_claims": list(profile.required_claims or ()),
        "accept_typ": list(profile.accept_typ or ()),
        "audience_claim": profile.audience_claim,
        "chain": profile.chain,
        "app_only_when": (
            ["always"]
            if not profile.users
            else ["sub is a registered agent"]
            + [f"{a.claim} is absent" if a.value is None else f"{a.claim} = {a.value}" for a in profile.app_only]
        ),
        "expect": {k: v for k, v in profile.expect},
        "refuse_id_token_claims": list(ID_TOKEN_CLAIMS) if profile.refuse_id_tokens else [],
    }
