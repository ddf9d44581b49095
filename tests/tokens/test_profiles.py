"""Issuer profiles (`issuers[].profile`): vendor-shaped tokens through the real TokenVerifier and resolve_identity.

Each documented token resolves to the right agent, user, scopes and chain under its profile; the
same token under the default profile gets today's answer; and no profile accepts a forged
signature, a wrong audience, an expired token, a DPoP proof or an ID token.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.config import PROFILES as PROFILE_NAMES
from pep.config import DelegationConfig, IdentityConfig, IssuerClaims, IssuerConfig, TokenConfig
from pep.delegation.identity import Identity, resolve_identity
from pep.errors import PepError, TokenError
from pep.pipeline.cedar_request import base_context
from pep.policy.registry import AgentRecord, Registry
from pep.reasons import Reason
from pep.tokens.profiles import PROFILES
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from tests.harness import forge
from tests.harness.forge import ISSUER, OMIT
from tests.harness.tokens import Env
from tests.tokens.vendor_tokens import AGENTS, CASES, SVID_ID, TRUST_DOMAIN, Case, case

REGISTRY = Registry({a: AgentRecord(a, "owner@example.com") for a in AGENTS}, {SVID_ID: "svid-agent"})
APP_CASES = [c for c in CASES if c.kind == "app"]


def _verifier(env: Env, profile: str, audiences: tuple[str, ...], tokens: TokenConfig | None = None, **kw: Any):
    if profile == "spiffe":
        kw.setdefault("trust_domain", TRUST_DOMAIN)
    issuer = IssuerConfig(ISSUER, audiences, ("ES256",), jwks_file=env.jwks_path, profile=profile, **kw)
    v = TokenVerifier([issuer], tokens or TokenConfig(), clock=env.clock)
    env.verifiers.append(v)
    return v


def _token(env: Env, c: Case, **changes: Any) -> str:
    claims = forge.merge(c.claims(int(env.clock.now)), changes)
    return forge.token(env.key, claims, typ=c.typ)


def _resolve(token: VerifiedToken) -> Identity:
    return resolve_identity(token, REGISTRY, DelegationConfig(max_depth=4, require_grants=False), IdentityConfig())


def _reason(fn: Any) -> Reason:
    with pytest.raises(PepError) as e:
        fn()
    return e.value.reason


def test_the_table_covers_every_public_profile_name() -> None:
    assert tuple(PROFILES) == PROFILE_NAMES
    assert {c.profile for c in CASES} == set(PROFILE_NAMES) - {"rfc9068"}
    for p in PROFILES.values():
        assert p.doc and p.sources, p.name


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_vendor_token_resolves_under_its_profile(env: Env, c: Case) -> None:
    token = _verifier(env, c.profile, c.audiences).verify(Credentials(_token(env, c)))
    identity = _resolve(token)
    assert (identity.agent, identity.on_behalf_of, identity.chain) == (c.agent, c.user, c.chain)
    assert token.scopes == c.scopes
    assert identity.user_groups == c.groups
    # Policies see the same context shape whatever the IdP: a set of scopes, the agent's client id.
    ctx = base_context(identity, token)["token"]
    assert ctx["scopes"] == sorted(c.scopes)
    assert isinstance(ctx["client_id"], str)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_the_same_token_under_the_default_profile_gets_todays_answer(env: Env, c: Case) -> None:
    verifier = _verifier(env, "rfc9068", c.audiences)
    raw = _token(env, c)
    if c.default is None:
        identity = _resolve(verifier.verify(Credentials(raw)))
        assert (identity.agent, identity.on_behalf_of) == c.default_as
    else:
        assert _reason(lambda: verifier.verify(Credentials(raw))) == c.default


@pytest.mark.parametrize(
    ("case_id", "reason"),
    [
        ("entra-user", Reason.TOKEN_CLAIMS_MISSING),  # no jti (Entra sends uti)
        ("auth0-user", Reason.TOKEN_CLAIMS_MISSING),  # no jti
        ("okta-app", Reason.TOKEN_TYPE_INVALID),  # no typ at all
        ("cognito-app", Reason.TOKEN_TYPE_INVALID),
        ("vault-app", Reason.TOKEN_TYPE_INVALID),
    ],
)
def test_accept_jwt_typ_alone_is_not_enough(env: Env, case_id: str, reason: Reason) -> None:
    c = case(case_id)
    verifier = _verifier(env, "rfc9068", c.audiences, TokenConfig(accept_jwt_typ=True))
    assert _reason(lambda: verifier.verify(Credentials(_token(env, c)))) == reason


def test_keycloak_service_account_is_the_agent_never_a_user(env: Env) -> None:
    c = case("keycloak-app")
    raw = _token(env, c)
    # Today, hand-tuned: the service account's UUID becomes the on-behalf-of user, which is wrong.
    legacy = _resolve(_verifier(env, "rfc9068", c.audiences, TokenConfig(accept_jwt_typ=True)).verify(Credentials(raw)))
    assert (legacy.agent, legacy.on_behalf_of) == ("kc-agent", "9f1c0c5e-3b7a-4d2e-8f00-5a1b2c3d4e5f")
    identity = _resolve(_verifier(env, "keycloak", c.audiences).verify(Credentials(raw)))
    assert (identity.agent, identity.on_behalf_of, identity.chain) == ("kc-agent", None, ("kc-agent",))
    # Keycloak lower-cases usernames: service-account-<client> matches a client id with capitals.
    raw = _token(env, c, azp="KC-Agent", client_id="KC-Agent")
    token = _verifier(env, "keycloak", c.audiences).verify(Credentials(raw))
    assert token.app_only and token.client_id == "KC-Agent"


def test_an_app_only_token_of_an_unregistered_client_is_unknown_not_a_user(env: Env) -> None:
    for case_id, changes in (
        (
            "keycloak-app",
            {"azp": "stranger", "client_id": "stranger", "preferred_username": "service-account-stranger"},
        ),
        ("auth0-app", {"azp": "stranger", "sub": "stranger@clients"}),
        ("entra-app", {"azp": "stranger"}),
        ("ping-app", {"client_id": "stranger"}),
    ):
        c = case(case_id)
        token = _verifier(env, c.profile, c.audiences).verify(Credentials(_token(env, c, **changes)))
        assert _reason(lambda t=token: _resolve(t)) == Reason.CHAIN_UNKNOWN_AGENT, case_id


@pytest.mark.parametrize("c", APP_CASES, ids=lambda c: c.profile)
def test_no_profile_accepts_what_the_default_refuses_as_proof(
    env: Env, c: Case, other_ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = _verifier(env, c.profile, c.audiences)
    claims = c.claims(int(env.clock.now))

    def reason(raw: str, v: TokenVerifier = verifier) -> Reason:
        return _reason(lambda: v.verify(Credentials(raw)))

    forged = forge.token(other_ec_key, claims, typ=c.typ, kid=forge.kid_of(env.key))
    assert reason(forged) == Reason.TOKEN_SIGNATURE_INVALID
    assert reason(forge.token(env.key, claims, typ="dpop+jwt")) == Reason.TOKEN_TYPE_INVALID
    assert reason(forge.token(env.key, claims, typ="id+jwt")) == Reason.TOKEN_TYPE_INVALID
    assert reason(forge.token(env.key, {**claims, "nonce": "n-0S6_WzA2Mj"}, typ=c.typ)) == Reason.TOKEN_TYPE_INVALID
    assert reason(forge.token(env.key, {**claims, "at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}, typ=c.typ)) == (
        Reason.TOKEN_TYPE_INVALID
    )
    assert reason(forge.token(env.key, claims, typ=c.typ, alg="HS256")) == Reason.TOKEN_ALGORITHM_REJECTED
    wrong_aud = _verifier(env, c.profile, ("https://someone-else.test",))
    assert reason(_token(env, c), wrong_aud) == Reason.TOKEN_AUDIENCE_INVALID
    env.clock.now += 3600 + 31
    assert reason(_token(env, replace(c, claims=lambda n: c.claims(n - 3700)))) == Reason.TOKEN_EXPIRED


@pytest.mark.parametrize("c", APP_CASES, ids=lambda c: c.profile)
def test_a_token_missing_what_its_profile_requires_is_denied_naming_the_claim(env: Env, c: Case) -> None:
    verifier = _verifier(env, c.profile, c.audiences)
    required = PROFILES[c.profile].required_claims or ()
    for name in required:
        if name in ("iss",) or "|" in name or name not in c.claims(0):
            continue
        with pytest.raises(TokenError) as e:
            verifier.verify(Credentials(_token(env, c, **{name: OMIT})))
        reasons = {Reason.TOKEN_CLAIMS_MISSING, Reason.TOKEN_TYPE_INVALID, Reason.TOKEN_AUDIENCE_INVALID}
        assert e.value.reason in reasons, name
        if e.value.reason == Reason.TOKEN_CLAIMS_MISSING:
            assert f"required claim {name} is missing" in str(e.value)


def test_cognito_id_token_is_refused(env: Env) -> None:
    c = case("cognito-user")
    n = int(env.clock.now)
    id_token = {
        "at_hash": "xyz",
        "sub": "aaaa-bbbb-alice",
        "cognito:groups": ["admin"],
        "iss": ISSUER,
        "cognito:username": "alice",
        "aud": "cog-agent",
        "token_use": "id",
        "auth_time": n,
        "exp": n + 3600,
        "iat": n,
        "jti": "cog-id",
    }
    verifier = _verifier(env, "cognito", c.audiences)
    assert _reason(lambda: verifier.verify(Credentials(forge.token(env.key, id_token, typ=OMIT)))) == (
        Reason.TOKEN_TYPE_INVALID
    )
    # Without at_hash, token_use still says it is not an access token.
    del id_token["at_hash"]
    assert _reason(lambda: verifier.verify(Credentials(forge.token(env.key, id_token, typ=OMIT)))) == (
        Reason.TOKEN_TYPE_INVALID
    )


def test_keycloak_id_token_is_refused_by_its_payload_typ(env: Env) -> None:
    c = case("keycloak-user")
    verifier = _verifier(env, "keycloak", c.audiences)
    with pytest.raises(TokenError) as e:
        verifier.verify(Credentials(_token(env, c, typ="ID")))
    assert e.value.reason == Reason.TOKEN_TYPE_INVALID and "typ" in str(e.value)


def test_overrides_claims_required_claims_and_accept_typ(env: Env) -> None:
    okta = case("okta-user")
    v = _verifier(env, "okta", okta.audiences, claims=IssuerClaims(user=("uid",), groups=()))
    identity = _resolve(v.verify(Credentials(_token(env, okta))))
    assert (identity.on_behalf_of, identity.user_groups) == ("00u-alice", ())

    strict = _verifier(env, "okta", okta.audiences, accept_typ=("at+jwt",))
    assert _reason(lambda: strict.verify(Credentials(_token(env, okta)))) == Reason.TOKEN_TYPE_INVALID

    entra = case("entra-user")
    v = _verifier(env, "entra", entra.audiences, required_claims=("iss", "sub", "aud", "exp", "iat", "uti", "nbf"))
    v.verify(Credentials(_token(env, entra)))
    with pytest.raises(TokenError) as e:
        v.verify(Credentials(_token(env, entra, uti=OMIT)))
    assert e.value.reason == Reason.TOKEN_CLAIMS_MISSING and "uti" in str(e.value)

    zitadel = case("zitadel-user")
    roles = IssuerClaims(scopes=("urn:zitadel:iam:org:project:roles",))
    token = _verifier(env, "zitadel", zitadel.audiences, claims=roles).verify(Credentials(_token(env, zitadel)))
    assert token.scopes == {"reader"}

    vault = case("vault-app")
    named = _verifier(env, "vault", vault.audiences, claims=IssuerClaims(agent=("agent",)))
    identity = _resolve(named.verify(Credentials(_token(env, vault, agent="vault-agent", sub="entity-unregistered"))))
    assert (identity.agent, identity.on_behalf_of) == ("vault-agent", None)


def test_a_profile_user_claim_that_is_missing_is_a_precise_deny(env: Env) -> None:
    c = case("entra-user")
    v = _verifier(env, "entra", c.audiences, required_claims=("iss", "sub", "aud", "exp", "iat"))
    token = v.verify(Credentials(_token(env, c, oid=OMIT)))
    assert _reason(lambda: _resolve(token)) == Reason.TOKEN_CLAIMS_MISSING


def test_wrongly_typed_profile_claims_are_refused(env: Env) -> None:
    okta = case("okta-user")
    v = _verifier(env, "okta", okta.audiences)
    for changes in ({"cid": 7}, {"scp": [1, 2]}, {"scp": {"a": 1}}):
        reason = _reason(lambda ch=changes: v.verify(Credentials(_token(env, okta, **ch))))
        assert reason == Reason.TOKEN_CLAIMS_MISSING, changes
