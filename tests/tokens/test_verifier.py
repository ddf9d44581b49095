"""TokenVerifier behaviour beyond single reasons: the result, the cache, failure hygiene."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.dev import tokens as devtoken
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens import jwks as jwks_module
from pep.tokens import verifier as verifier_module
from pep.tokens.cache import ExpiringLRU, ReplayCache
from pep.tokens.verifier import Credentials, split_scheme
from tests.harness import forge
from tests.harness.forge import AUDIENCE, ISSUER, OMIT
from tests.harness.tokens import ClientCert, Env

METHOD = "POST"
URI = "https://pep.test/pep.v1.Authorizer/Authorize"


def test_verified_token_fields(env: Env) -> None:
    claims = env.claims(scope="read  write read", act={"sub": "bot-a", "act": {"sub": "bot-b"}})
    token = env.token(claims)
    result = env.verify("Bearer " + token)
    assert result.issuer == ISSUER
    assert result.binding == "bearer"
    assert result.scopes == frozenset({"read", "write"})
    assert result.client_id == "billing-bot"
    assert result.jti == "jti-0001"
    assert result.issued_at == int(env.clock.now)
    assert result.expires_at == int(env.clock.now) + 300
    assert result.header["typ"] == "at+jwt"
    assert result.claims["act"]["act"]["sub"] == "bot-b"
    with pytest.raises(TypeError):
        result.claims["sub"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "scopes", "client_id", "jti"),
    [
        ({"scope": OMIT, "scp": ["a", "b"]}, {"a", "b"}, "billing-bot", "jti-0001"),
        ({"scope": OMIT, "scp": "a b"}, {"a", "b"}, "billing-bot", "jti-0001"),
        ({"scope": OMIT}, set(), "billing-bot", "jti-0001"),
        ({"scope": "x", "scp": ["y"]}, {"x"}, "billing-bot", "jti-0001"),
        ({"client_id": OMIT, "azp": "app"}, {"read", "write"}, "app", "jti-0001"),
        ({"client_id": "c", "azp": "app"}, {"read", "write"}, "c", "jti-0001"),
    ],
)
def test_scopes_client_id_and_jti(
    env: Env, changes: dict[str, Any], scopes: set[str], client_id: str, jti: str
) -> None:
    result = env.verify(env.token(env.claims(**changes)))
    assert result.scopes == frozenset(scopes)
    assert result.client_id == client_id
    assert result.jti == jti


def test_jti_and_iat_optional_when_not_required(env: Env) -> None:
    v = env.verifier(required_claims=("iss", "sub", "aud", "exp"))
    result = v.verify(Credentials(env.token(env.claims(jti=OMIT, iat=OMIT))))
    assert result.jti == "" and result.issued_at == 0


@pytest.mark.parametrize(
    ("raw", "scheme", "token"),
    [
        ("abc", "", "abc"),
        ("Bearer abc", "bearer", "abc"),
        ("BEARER\tabc", "bearer", "abc"),
        ("DPoP abc", "dpop", "abc"),
        ("dpop   abc ", "dpop", "abc"),
        ("Bearer", "bearer", ""),
        ("Bearerabc", "", "Bearerabc"),
        ("Basic abc", "", "Basic abc"),
    ],
)
def test_split_scheme(raw: str, scheme: str, token: str) -> None:
    assert split_scheme(raw) == (scheme, token)


# --- the verified-token cache ---------------------------------------------------------


@pytest.fixture
def signature_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwks_module.verify_signature  # the verifier's signature checks run in jwks.verifying_keys

    def counting(alg: str, *args: Any) -> bool:
        calls.append(alg)
        return real(alg, *args)

    monkeypatch.setattr(jwks_module, "verify_signature", counting)
    return calls


def test_cache_skips_the_signature_on_a_hit(env: Env, signature_calls: list[str]) -> None:
    v = env.verifier()
    token = env.token()
    first, second = v.verify(Credentials(token)), v.verify(Credentials("Bearer " + token))
    assert first == second
    assert len(signature_calls) == 1


def test_cache_is_keyed_on_the_whole_token(env: Env, signature_calls: list[str]) -> None:
    v = env.verifier()
    token = env.token()
    v.verify(Credentials(token))
    # Same signature, different payload: must not ride on the cached verdict.
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(forge.tamper_payload(token, sub="mallory")))
    assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(forge.tamper_header(token, kid=forge.kid_of(env.key), x=1)))
    assert info.value.reason == Reason.TOKEN_SIGNATURE_INVALID


def test_cache_rechecks_expiry(env: Env, signature_calls: list[str]) -> None:
    v = env.verifier()
    token = env.token(env.claims(exp=int(env.clock.now) + 60))
    v.verify(Credentials(token))
    env.clock.now += 61  # past exp, within leeway: the entry is gone, full check passes
    v.verify(Credentials(token))
    assert len(signature_calls) == 2
    env.clock.now += 30
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(token))
    assert info.value.reason == Reason.TOKEN_EXPIRED


def test_cache_hit_rechecks_time_claims(env: Env) -> None:
    v = env.verifier()
    token = env.token()
    v.verify(Credentials(token))
    env.clock.now -= 100  # the clock stepped back: iat is now in the future
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(token))
    assert info.value.reason == Reason.TOKEN_NOT_YET_VALID


def test_cache_is_bounded(env: Env, signature_calls: list[str]) -> None:
    v = env.verifier(cache_size=2)
    tokens = [env.token(env.claims(jti=f"j{i}")) for i in range(3)]
    for t in tokens:
        v.verify(Credentials(t))
    v.verify(Credentials(tokens[2]))
    assert len(signature_calls) == 3
    v.verify(Credentials(tokens[0]))  # evicted
    assert len(signature_calls) == 4


def test_cache_disabled(env: Env, signature_calls: list[str]) -> None:
    v = env.verifier(cache_size=0)
    token = env.token()
    v.verify(Credentials(token))
    v.verify(Credentials(token))
    assert len(signature_calls) == 2


def test_cached_claims_cannot_be_changed_by_a_caller(env: Env) -> None:
    v = env.verifier()
    token = env.token()
    first = v.verify(Credentials(token))
    first.claims["act"]["sub"] = "evil-bot"
    with pytest.raises(TypeError):
        first.header["extra"] = 1  # type: ignore[index]
    second = v.verify(Credentials(token))
    assert second.claims["act"]["sub"] == "billing-bot"
    second.claims["act"]["sub"] = "evil-bot"
    assert v.verify(Credentials(token)).claims["act"]["sub"] == "billing-bot"


def test_pop_checks_run_on_cache_hits(env: Env, client_cert: ClientCert, dpop_key: Any) -> None:
    v = env.verifier()
    key, jwk = dpop_key
    bound = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))
    proof = devtoken.mint_dpop_proof(key, jwk, htm=METHOD, htu=URI, access_token=bound, now=env.clock.now)
    v.verify(Credentials("DPoP " + bound, proof, METHOD, URI))
    for creds, reason in [
        (Credentials("DPoP " + bound, proof, METHOD, URI), Reason.DPOP_REPLAY),
        (Credentials("Bearer " + bound, proof, METHOD, URI), Reason.POP_BINDING_MISMATCH),
        (Credentials("DPoP " + bound), Reason.DPOP_PROOF_MISSING),
    ]:
        with pytest.raises(TokenError) as info:
            v.verify(creds)
        assert info.value.reason == reason
    mtls = env.token(env.claims(cnf={"x5t#S256": client_cert.x5t}))
    v.verify(Credentials(mtls, client_cert_thumbprint=client_cert.x5t))
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(mtls, client_cert_thumbprint=forge.b64(bytes(32))))
    assert info.value.reason == Reason.POP_BINDING_MISMATCH


def test_expiring_lru_unit() -> None:
    lru: ExpiringLRU[int] = ExpiringLRU(2)
    lru.put("a", 1, deadline=10, now=0)
    lru.put("b", 2, deadline=10, now=0)
    assert lru.get("a", now=1) == 1  # a is now most recent
    lru.put("c", 3, deadline=10, now=1)
    assert lru.get("b", now=1) is None and lru.get("a", now=1) == 1
    assert lru.get("a", now=10) is None and len(lru) == 1
    lru.put("d", 4, deadline=5, now=5)  # already dead: not stored
    assert lru.get("d", now=5) is None


def test_replay_cache_unit() -> None:
    cache = ReplayCache(3)
    assert cache.add("a", deadline=10, now=0)
    assert not cache.add("a", deadline=20, now=5)
    assert cache.add("a", deadline=20, now=10)  # expired: accepted again
    for k in "bcd":
        assert cache.add(k, deadline=100, now=11)
    assert len(cache) == 3  # bounded: the oldest ("a") was dropped
    assert cache.add("a", deadline=100, now=12)


# --- failure hygiene -----------------------------------------------------------------


def test_unexpected_errors_become_token_malformed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("secret internals")

    v = env.verifier()
    monkeypatch.setattr(verifier_module, "check_types", boom)
    with pytest.raises(TokenError) as info:
        v.verify(Credentials(env.token()))
    assert info.value.reason == Reason.TOKEN_MALFORMED
    assert "secret" not in info.value.detail


@pytest.mark.parametrize("bad", [None, 5, b"bytes", ["list"]])
def test_non_string_credentials(env: Env, bad: Any) -> None:
    with pytest.raises(TokenError):
        env.verifier().verify(Credentials(bad))


def test_details_never_carry_token_or_proof(env: Env, dpop_key: Any) -> None:
    key, jwk = dpop_key
    v = env.verifier()
    bound = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))
    proof = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu=URI, access_token=bound, now=env.clock.now)
    attempts = [
        Credentials(forge.tamper_signature(env.token())),
        Credentials(env.token(env.claims(iss="https://evil.test/<script>"))),
        Credentials(env.token(env.claims(aud="https://evil.test"))),
        Credentials("DPoP " + bound, proof, METHOD, URI),
        Credentials(env.token(typ="evil\ninjected")),
        Credentials(
            forge.sign_segments(
                env.key, forge.b64json(forge.good_header(env.key, alg="evil\ninjected")), forge.b64json(env.claims())
            )
        ),
        Credentials(env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))),
    ]
    for creds in attempts:
        with pytest.raises(TokenError) as info:
            v.verify(creds)
        detail = info.value.detail
        for secret in [*creds.token.split(" ")[-1].split("."), *proof.split(".")]:
            assert secret not in detail
        assert "evil" not in detail and "\n" not in detail


def test_concurrent_verification(env: Env) -> None:
    v = env.verifier(cache_size=8)
    tokens = [env.token(env.claims(jti=f"t{i}")) for i in range(32)]
    bad = [forge.tamper_signature(t) for t in tokens]
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(200):
            good = tokens[(i + offset) % len(tokens)]
            if v.verify(Credentials(good)).jti != forge.decode_segment(good.split(".")[1])["jti"]:
                errors.append("wrong result")
            try:
                v.verify(Credentials(bad[(i + offset) % len(bad)]))
                errors.append("accepted a bad token")
            except TokenError:
                pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_close_is_idempotent(env: Env) -> None:
    v = env.verifier()
    v.close()
    v.close()


def test_other_issuer_audience_is_per_issuer(env: Env, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    v = env.verifier(audiences=("https://a.test", AUDIENCE))
    assert v.verify(Credentials(env.token(env.claims(aud="https://a.test"))))
    with pytest.raises(TokenError) as info:
        env.verifier().verify(Credentials(env.token(env.claims(aud="https://a.test"))))
    assert info.value.reason == Reason.TOKEN_AUDIENCE_INVALID


@pytest.mark.parametrize(
    ("cnf", "words"),
    [
        ({"jkt": "A" * 43, "x5t#S256": "A" * 43}, "both"),
        ({"jwk": {}}, "no supported"),
        ({"jkt": "short"}, "cnf.jkt"),
    ],
)
def test_cnf_details(env: Env, cnf: dict[str, Any], words: str) -> None:
    with pytest.raises(TokenError) as info:
        env.verify(env.token(env.claims(cnf=cnf)))
    assert info.value.reason == Reason.TOKEN_CLAIMS_MISSING and words in info.value.detail


def test_proof_jwk_must_fit_alg_detail(env: Env, dpop_key: Any) -> None:
    key, jwk = dpop_key
    bound = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))
    claims = {"jti": "j", "htm": METHOD, "htu": URI, "iat": int(env.clock.now)}
    proof = forge.sign_segments(
        key, forge.b64json({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}), forge.b64json(claims)
    )
    with pytest.raises(TokenError) as info:
        env.verify("DPoP " + bound, dpop_proof=proof, http_method=METHOD, http_uri=URI)
    assert info.value.reason == Reason.DPOP_PROOF_INVALID and "does not fit" in info.value.detail
