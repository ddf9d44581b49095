"""SPIFFE JWT-SVIDs (profile spiffe) and transaction tokens (profile txntoken), through the real verifier.

Real ES256 signatures; SPIFFE bundles (keys with `use: jwt-svid`, `spiffe_sequence`,
`spiffe_refresh_hint`, `x509-svid` keys with `x5c`) from a file and over real HTTP.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.config import DelegationConfig, IdentityConfig, IssuerClaims, IssuerConfig, TokenConfig, parse_config
from pep.delegation.identity import Identity, resolve_identity
from pep.dev import tokens as devtoken
from pep.errors import ConfigError, PepError
from pep.pipeline.cedar_request import base_context
from pep.policy.registry import parse_registry
from pep.policy.source import load_yaml
from pep.reasons import Reason
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from pep.uids import spiffe_trust_domain
from tests.harness import forge
from tests.harness.forge import AUDIENCE, OMIT
from tests.harness.tokens import Env

TD = "example.org"
SVID_ISSUER = "https://oidc.example.org"
BOT = "spiffe://example.org/ns/agents/sa/billing-bot"
TXN_ISSUER = "https://tts.example.org"
REGISTRY_YAML = f"""
agents:
  - {{id: billing-bot, owner: pay@example.com, spiffe_id: "{BOT}"}}
  - {{id: planner, owner: pay@example.com}}
"""


def _registry(text: str = REGISTRY_YAML) -> Any:
    registry, problems = parse_registry(load_yaml(text, "agents.yaml"), "agents.yaml")
    assert not problems
    return registry


def spire_bundle(key: ec.EllipticCurvePrivateKey, *, use: str = "jwt-svid") -> dict[str, Any]:
    """A SPIFFE trust bundle as SPIRE serves it: no alg on the keys, an X.509 authority beside the JWT one."""
    jwk = devtoken.public_jwk(key)
    x509_authority = {**devtoken.public_jwk(ec.generate_private_key(ec.SECP256R1())), "use": "x509-svid"}
    x509_authority["x5c"] = ["MIIBkTCCATegAwIBAgIBATAKBggqhkjOPQQDAjAAMB4XDTI2"]
    return {
        "keys": [x509_authority, {**jwk, "kid": forge.kid_of(key), "use": use}],
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300,
    }


def _write(tmp: Path, name: str, doc: Any) -> str:
    path = tmp / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def _spiffe(env: Env, *, jwks: str | None = None, issuer: str = SVID_ISSUER, **kw: Any) -> IssuerConfig:
    path = jwks or _write(env.tmp, "bundle.json", spire_bundle(env.key))
    return IssuerConfig(issuer, (AUDIENCE,), ("ES256",), jwks_file=path, profile="spiffe", trust_domain=TD, **kw)


def _verifier(env: Env, *issuers: IssuerConfig) -> TokenVerifier:
    v = TokenVerifier(list(issuers), TokenConfig(), clock=env.clock, jwks_background_refresh=False)
    env.verifiers.append(v)
    return v


def svid(env: Env, key: Any = None, typ: Any = "JWT", **changes: Any) -> str:
    n = int(env.clock.now)
    claims = forge.merge({"iss": SVID_ISSUER, "sub": BOT, "aud": [AUDIENCE], "exp": n + 300, "iat": n}, changes)
    return forge.token(key or env.key, claims, typ=typ)


def _resolve(token: VerifiedToken, registry: Any = None) -> Identity:
    return resolve_identity(
        token, registry or _registry(), DelegationConfig(require_grants=False), IdentityConfig()
    )  # fmt: skip


def _reason(fn: Any) -> tuple[Reason, str]:
    with pytest.raises(PepError) as e:
        fn()
    return e.value.reason, str(e.value)


# --- SPIFFE JWT-SVIDs -------------------------------------------------------------------------


def test_an_svid_from_a_spire_bundle_file_is_its_registered_agent(env: Env) -> None:
    v = _verifier(env, _spiffe(env))
    token = v.verify(Credentials(svid(env)))
    assert (token.issuer, token.client_id, token.app_only, token.user) == (SVID_ISSUER, BOT, True, "")
    identity = _resolve(token)
    assert (identity.agent, identity.on_behalf_of, identity.chain) == ("billing-bot", None, ("billing-bot",))
    assert base_context(identity, token)["token"]["client_id"] == BOT
    # JWT-SVID 2.3: typ JWT or JOSE, or none at all.
    for typ in ("JOSE", OMIT):
        v.verify(Credentials(svid(env, typ=typ, jti=f"svid-{typ}")))


def test_an_svid_without_iss_is_matched_by_its_trust_domain(env: Env) -> None:
    other = IssuerConfig(
        "https://idp.test", (AUDIENCE,), ("ES256",), jwks_file=env.jwks_path
    )  # an ordinary issuer beside it
    v = _verifier(env, other, _spiffe(env))
    assert v.verify(Credentials(svid(env, iss=OMIT))).issuer == SVID_ISSUER
    reason, detail = _reason(lambda: v.verify(Credentials(svid(env, iss=OMIT, sub="spiffe://elsewhere.test/x"))))
    assert reason == Reason.TOKEN_ISSUER_UNTRUSTED and "trust domain" in detail
    # Not a SPIFFE ID and no iss: the missing iss, as before.
    assert _reason(lambda: v.verify(Credentials(svid(env, iss=OMIT, sub="billing-bot")))) == (
        Reason.TOKEN_CLAIMS_MISSING,
        "required claim iss is missing",
    )


def test_wrong_trust_domain_unmapped_id_aud_mismatch_and_a_bad_spiffe_id(env: Env) -> None:
    v = _verifier(env, _spiffe(env))
    reason, detail = _reason(lambda: v.verify(Credentials(svid(env, sub="spiffe://evil.example/ns/agents/sa/x"))))
    assert reason == Reason.TOKEN_ISSUER_UNTRUSTED and "trust domain" in detail
    stranger = v.verify(Credentials(svid(env, sub="spiffe://example.org/ns/agents/sa/stranger")))
    reason, detail = _reason(lambda: _resolve(stranger))
    assert reason == Reason.CHAIN_UNKNOWN_AGENT and "spiffe_id" in detail
    assert _reason(lambda: v.verify(Credentials(svid(env, aud=["spiffe://example.org/other"]))))[0] == (
        Reason.TOKEN_AUDIENCE_INVALID
    )
    for bad in ("spiffe://example.org", "spiffe://Example.org/x", "spiffe://example.org/a//b", "https://x/y"):
        reason, detail = _reason(lambda b=bad: v.verify(Credentials(svid(env, sub=b))))
        assert (reason, detail) == (
            Reason.TOKEN_CLAIMS_MISSING,
            "claim sub must be a SPIFFE ID (spiffe://<trust domain>/<path>)",
        )
    for name in ("sub", "aud", "exp"):
        assert _reason(lambda n=name: v.verify(Credentials(svid(env, **{n: OMIT}))))[0] == Reason.TOKEN_CLAIMS_MISSING
    # An ordinary access token typ is not an SVID's.
    assert _reason(lambda: v.verify(Credentials(svid(env, typ="at+jwt"))))[0] == Reason.TOKEN_TYPE_INVALID


def test_jwt_svid_keys_count_only_for_spiffe_issuers(env: Env) -> None:
    bundle = _write(env.tmp, "bundle.json", spire_bundle(env.key))
    plain = IssuerConfig("https://idp.test", (AUDIENCE,), ("ES256",), jwks_file=bundle)
    with pytest.raises(ConfigError) as e:
        TokenVerifier([plain], TokenConfig())
    assert "no usable signing keys" in str(e.value)
    # A spiffe issuer also takes an OIDC-style JWKS (use sig), as SPIRE's discovery provider serves it.
    sig = _write(env.tmp, "sig.json", spire_bundle(env.key, use="sig"))
    assert _verifier(env, _spiffe(env, jwks=sig)).verify(Credentials(svid(env)))


class _Bundle(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def bundle_server(env: Env) -> Iterator[str]:
    _Bundle.body = json.dumps(spire_bundle(env.key)).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Bundle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/bundle"
    server.shutdown()
    server.server_close()


def test_an_svid_verified_with_a_bundle_served_over_http(env: Env, bundle_server: str) -> None:
    issuer = IssuerConfig(
        SVID_ISSUER, (AUDIENCE,), ("ES256",), jwks_uri=bundle_server, profile="spiffe", trust_domain=TD
    )
    results: list[str] = []
    v = TokenVerifier(
        [issuer], TokenConfig(), clock=env.clock, on_jwks_refresh=results.append, jwks_background_refresh=False
    )
    env.verifiers.append(v)
    assert _resolve(v.verify(Credentials(svid(env, iss=OMIT)))).agent == "billing-bot"
    assert results == ["success"]


def test_spiffe_config_and_registry_are_checked() -> None:
    def issuer(**kw: Any) -> dict[str, Any]:
        return {"issuer": SVID_ISSUER, "audiences": [AUDIENCE], "jwks_uri": "https://x.test/keys", **kw}

    def problem(**kw: Any) -> str:
        with pytest.raises(ConfigError) as e:
            parse_config({"issuers": [issuer(**kw)]})
        return str(e.value)

    parsed = parse_config({"issuers": [issuer(profile="spiffe", trust_domain="spiffe://example.org")]})
    assert parsed.issuers[0].trust_domain == TD
    assert "trust_domain: is required for profile: spiffe" in problem(profile="spiffe")
    assert "trust_domain: is for profile: spiffe only" in problem(trust_domain=TD)
    assert "SPIFFE trust domain name" in problem(profile="spiffe", trust_domain="Example.ORG")
    assert "txntoken+jwt, always" in problem(profile="txntoken", accept_typ=["JWT"])
    text = f"""
agents:
  - {{id: a, owner: o@x, spiffe_id: "{BOT}"}}
  - {{id: b, owner: o@x, spiffe_id: "{BOT}"}}
  - {{id: c, owner: o@x, spiffe_id: "spiffe://example.org"}}
"""
    registry, problems = parse_registry(load_yaml(text, "agents.yaml"), "agents.yaml")
    assert registry.agent_for_spiffe_id(BOT) == "a"
    shown = [f"{p.path}:{p.line}: {p.message}" for p in problems]
    assert any("agents.yaml:4:" in s and "already agent 'a'" in s for s in shown), shown
    assert any("agents.yaml:5:" in s and "must be a SPIFFE ID" in s for s in shown), shown


def test_two_spiffe_issuers_cannot_share_a_trust_domain(env: Env) -> None:
    with pytest.raises(ConfigError) as e:
        TokenVerifier([_spiffe(env), _spiffe(env, issuer="https://other.example.org")], TokenConfig())
    assert "issuers[1].trust_domain" in str(e.value)


def test_spiffe_id_syntax() -> None:
    assert spiffe_trust_domain("spiffe://example.org/ns/default/sa/x") == "example.org"
    assert spiffe_trust_domain("spiffe://td_1.example-x/a.b-c_d") == "td_1.example-x"
    for bad in (
        "spiffe://example.org",
        "spiffe://example.org/",
        "spiffe://example.org/a/",
        "spiffe://example.org/./a",
        "spiffe://example.org/a/../b",
        "spiffe://example.org:8443/a",
        "spiffe://user@example.org/a",
        "spiffe://example.org/a?q=1",
        "spiffe://example.org/a%20b",
        "SPIFFE://example.org/a",
        "spiffe:///a",
        "spiffe://" + "a" * 2048 + "/x",
        None,
        7,
    ):
        assert spiffe_trust_domain(bad) is None, bad


# --- transaction tokens -----------------------------------------------------------------------


def _txn_issuer(env: Env, **kw: Any) -> IssuerConfig:
    return IssuerConfig(
        TXN_ISSUER, ("trust-domain.example",), ("ES256",), jwks_file=env.jwks_path, profile="txntoken", **kw
    )


def txn(env: Env, typ: Any = "txntoken+jwt", **changes: Any) -> str:
    n = int(env.clock.now)
    claims = {
        "iss": TXN_ISSUER,
        "iat": n,
        "exp": n + 60,
        "aud": "trust-domain.example",
        "txn": "97053963-771d-49cc-a4e3-20aad399c312",
        "sub": "alice@example.com",
        "req_wl": "billing-bot",
        "scope": "trade.stocks",
        "tctx": {"action": "BUY", "ticker": "MSFT", "quantity": 100, "customer_type": {"geo": "US"}},
        "rctx": {"req_ip": "69.151.72.123", "authn": "face"},
        "purp": "trade",
    }
    return forge.token(env.key, forge.merge(claims, changes), typ=typ)


def test_a_transaction_token_reaches_policies_as_context_token_transaction(env: Env) -> None:
    v = _verifier(env, _txn_issuer(env))
    token = v.verify(Credentials(txn(env)))
    assert (token.jti, token.client_id, token.user, token.scopes) == (
        "97053963-771d-49cc-a4e3-20aad399c312",
        "billing-bot",
        "alice@example.com",
        {"trade.stocks"},
    )
    identity = _resolve(token)
    assert (identity.agent, identity.on_behalf_of) == ("billing-bot", "alice@example.com")
    ctx = base_context(identity, token)["token"]
    assert ctx["transaction"] == {
        "tctx": {"action": "BUY", "ticker": "MSFT", "quantity": 100, "customer_type": {"geo": "US"}},
        "rctx": {"req_ip": "69.151.72.123", "authn": "face"},
        "purp": "trade",
    }
    # Absent tctx, rctx and purp: the keys are still there, empty (one schema shape for every token).
    bare = v.verify(Credentials(txn(env, tctx=OMIT, rctx=OMIT, purp=OMIT, txn="t-2")))
    assert base_context(_resolve(bare), bare)["token"]["transaction"] == {"tctx": {}, "rctx": {}, "purp": ""}
    # Another profile's token never gets the key.
    plain = _verifier(env, IssuerConfig(forge.ISSUER, (AUDIENCE,), ("ES256",), jwks_file=env.jwks_path))
    other = plain.verify(Credentials(forge.token(env.key, forge.good_claims(env.clock.now))))
    assert "transaction" not in base_context(_resolve(other), other)["token"]


def test_the_agent_is_the_requesting_workload_or_the_claim_the_issuer_names(env: Env) -> None:
    v = _verifier(env, _txn_issuer(env))
    earlier_draft = v.verify(Credentials(txn(env, req_wl=OMIT, rctx={"req_wl": "billing-bot"})))
    assert _resolve(earlier_draft).agent == "billing-bot"
    internal = v.verify(Credentials(txn(env, sub="planner", req_wl="planner")))
    assert (_resolve(internal).agent, _resolve(internal).on_behalf_of) == ("planner", None)
    named = _verifier(env, _txn_issuer(env, claims=IssuerClaims(agent=("tctx.agent",))))
    token = named.verify(Credentials(txn(env, tctx={"agent": "planner"}, req_wl="gateway")))
    assert _resolve(token).agent == "planner"
    nobody = v.verify(Credentials(txn(env, req_wl=OMIT)))
    assert _reason(lambda: _resolve(nobody))[0] == Reason.CHAIN_UNKNOWN_AGENT


def test_transaction_token_claims_that_are_no_cedar_values_are_refused_with_the_path(env: Env) -> None:
    v = _verifier(env, _txn_issuer(env))
    for changes, path in (
        ({"tctx": {"price": 1.5}}, "claim tctx.price is not a whole number"),
        ({"tctx": {"items": [1, None]}}, "claim tctx.items[1] is null"),
        ({"rctx": {"who": {"__entity": {"type": "Agent", "id": "root"}}}}, "claim rctx.who.__entity is a Cedar escape"),
        ({"tctx": {"n": 2**70}}, "claim tctx.n is outside Cedar's Long range"),
        ({"tctx": "BUY"}, "claim tctx must be an object"),
        ({"purp": 7}, "claim purp must be a non-empty string"),
        ({"txn": ""}, "claim txn must be a non-empty string"),
    ):
        reason, detail = _reason(lambda c=changes: v.verify(Credentials(txn(env, **c))))
        assert reason == Reason.TOKEN_CLAIMS_MISSING and detail.startswith(path), (changes, detail)
    assert v.verify(Credentials(txn(env, tctx={"whole": 2.0}, txn="t-3"))).claims["tctx"] == {"whole": 2.0}
    for name in ("txn", "scope", "iat", "sub"):
        reason, detail = _reason(lambda n=name: v.verify(Credentials(txn(env, **{n: OMIT}))))
        assert (reason, detail) == (Reason.TOKEN_CLAIMS_MISSING, f"required claim {name} is missing")


def test_txntoken_typ_is_only_for_txntoken_issuers(env: Env) -> None:
    plain = IssuerConfig(forge.ISSUER, (AUDIENCE,), ("ES256",), jwks_file=env.jwks_path)
    alone = _verifier(env, plain)
    assert _reason(lambda: alone.verify(Credentials(txn(env))))[0] == Reason.TOKEN_TYPE_INVALID
    both = _verifier(env, plain, _txn_issuer(env))
    # The global pre-check admits it now, the issuer's own typ check still refuses it for the other issuer.
    as_plain = txn(env, iss=forge.ISSUER, aud=AUDIENCE)
    assert _reason(lambda: both.verify(Credentials(as_plain)))[0] == Reason.TOKEN_TYPE_INVALID
    for typ in ("at+jwt", "JWT", OMIT):
        assert _reason(lambda t=typ: both.verify(Credentials(txn(env, typ=t))))[0] == Reason.TOKEN_TYPE_INVALID
    assert both.verify(Credentials(txn(env, typ="application/txntoken+jwt")))


def test_a_transaction_token_without_iss_is_matched_by_its_trust_domain_audience(env: Env) -> None:
    v = _verifier(env, _txn_issuer(env))
    assert v.verify(Credentials(txn(env, iss=OMIT))).issuer == TXN_ISSUER
    reason, detail = _reason(lambda: v.verify(Credentials(txn(env, iss=OMIT, aud="other.example"))))
    assert reason == Reason.TOKEN_ISSUER_UNTRUSTED and "names its aud" in detail
