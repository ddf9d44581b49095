"""DPoP proofs (RFC 9449): the RFC's own example proofs, every proof check, htu
normalisation, and the replay cache."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pep.config import TokenConfig
from pep.dev import tokens as devtoken
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.dpop import DPoPVerifier, access_token_hash, normalize_htu
from pep.tokens.verifier import Credentials
from tests.harness import forge
from tests.harness.forge import OMIT, b64, b64json
from tests.harness.tokens import Env

# RFC 9449 section 7.1 and 4.1/5 examples (token-standards.md 9.2).
RFC_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC_ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
RFC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
RFC_RSA_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
_RFC_HEADER = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0Rs"
    "cEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
)
RFC_RESOURCE_PROOF = (
    _RFC_HEADER
    + ".eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0"
    "ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9"
    ".2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RFC_RESOURCE_IAT = 1562262618
RFC_TOKEN_REQUEST_PROOF = (
    _RFC_HEADER
    + ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwi"
    "aWF0IjoxNTYyMjYyNjE2fQ"
    ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC_REFRESH_PROOF = (
    _RFC_HEADER
    + ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwi"
    "aWF0IjoxNTYyMjY1Mjk2fQ"
    ".pAqut2IRDm_De6PR93SYmGBPXpwrAk90e8cP2hjiaG5QsGSuKDYW7_X620BxqhvYC8ynrrvZLTk41mSRroapUA"
)
RFC_RESOURCE = "https://resource.example.org/protectedresource"
RFC_TOKEN_ENDPOINT = "https://server.example.com/token"

METHOD = "POST"
URI = "https://pep.test/pep.v1.Authorizer/Authorize"
INVALID = Reason.DPOP_PROOF_INVALID


def _check(verifier: DPoPVerifier, proof: str, **kw: Any) -> None:
    args: dict[str, Any] = {"access_token": RFC_TOKEN, "method": "GET", "uri": RFC_RESOURCE, "jkt": RFC_JKT}
    args.update(kw)
    verifier.check(proof, **args)


def test_rfc9449_ath_vector() -> None:
    assert access_token_hash(RFC_TOKEN) == RFC_ATH


def test_rfc9449_resource_proof_verifies_then_replays() -> None:
    verifier = DPoPVerifier(TokenConfig())
    _check(verifier, RFC_RESOURCE_PROOF, now=RFC_RESOURCE_IAT)
    with pytest.raises(TokenError) as info:
        _check(verifier, RFC_RESOURCE_PROOF, now=RFC_RESOURCE_IAT + 1)
    assert info.value.reason == Reason.DPOP_REPLAY


@pytest.mark.parametrize(
    "uri",
    [
        RFC_RESOURCE + "?q=1#f",
        "https://RESOURCE.Example.ORG/protectedresource",
        "HTTPS://resource.example.org:443/protectedresource",
        "https://resource.example.org/a/../protectedresource",
        "https://resource.example.org/./protected%72esource",
    ],
)
def test_rfc9449_resource_proof_normalised_uri(uri: str) -> None:
    _check(DPoPVerifier(TokenConfig()), RFC_RESOURCE_PROOF, uri=uri, now=RFC_RESOURCE_IAT)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"method": "POST"}, INVALID),
        ({"uri": "https://resource.example.org/other"}, INVALID),
        ({"uri": "http://resource.example.org/protectedresource"}, INVALID),
        ({"access_token": "another-token"}, INVALID),
        ({"now": RFC_RESOURCE_IAT + 301}, INVALID),
        ({"now": RFC_RESOURCE_IAT - 31}, INVALID),
        ({"jkt": RFC_RSA_THUMBPRINT}, Reason.POP_BINDING_MISMATCH),
    ],
    ids=["htm", "htu path", "htu scheme", "ath", "too old", "future", "jkt of another key"],
)
def test_rfc9449_resource_proof_negatives(change: dict[str, Any], reason: Reason) -> None:
    args = {"now": RFC_RESOURCE_IAT, **change}
    with pytest.raises(TokenError) as info:
        _check(DPoPVerifier(TokenConfig()), RFC_RESOURCE_PROOF, **args)
    assert info.value.reason == reason


def test_rfc9449_token_request_proof_fails_at_a_resource() -> None:
    # Wrong htm and htu for the resource, and no ath although a token is presented.
    with pytest.raises(TokenError) as info:
        _check(DPoPVerifier(TokenConfig()), RFC_TOKEN_REQUEST_PROOF, now=1562262616)
    assert info.value.reason == INVALID
    with pytest.raises(TokenError) as info:
        _check(
            DPoPVerifier(TokenConfig()), RFC_TOKEN_REQUEST_PROOF, method="POST", uri=RFC_TOKEN_ENDPOINT, now=1562262616
        )
    assert info.value.reason == INVALID and "ath" in info.value.detail


def test_rfc9449_refresh_proof_reusing_jti_is_a_replay() -> None:
    # Both RFC proofs carry jti "-BwC3ESc6acc2lTc" for the same htu; the second is a replay
    # as long as the first is still inside its window (here: a one-hour window).
    verifier = DPoPVerifier(replace(TokenConfig(), dpop_max_age_seconds=3600))
    args: dict[str, Any] = {"access_token": None, "method": "POST", "uri": RFC_TOKEN_ENDPOINT, "jkt": RFC_JKT}
    verifier.check(RFC_TOKEN_REQUEST_PROOF, now=1562262616, **args)
    with pytest.raises(TokenError) as info:
        verifier.check(RFC_REFRESH_PROOF, now=1562265296, **args)
    assert info.value.reason == Reason.DPOP_REPLAY


# --- every proof check, through the full verifier -------------------------------------


@dataclass
class ProofKit:
    env: Env
    key: ec.EllipticCurvePrivateKey
    jwk: dict[str, str]
    rsa: rsa.RSAPrivateKey

    @property
    def jkt(self) -> str:
        return devtoken.jwk_thumbprint(self.jwk)

    def token(self) -> str:
        return self.env.token(self.env.claims(cnf={"jkt": self.jkt}))

    def claims(self, token: str, **changes: Any) -> dict[str, Any]:
        base = {"jti": "proof-1", "htm": METHOD, "htu": URI, "iat": int(self.env.clock.now)}
        base["ath"] = access_token_hash(token)
        return forge.merge(base, changes)

    def header(self, **changes: Any) -> dict[str, Any]:
        return forge.merge({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}, changes)

    def proof(self, token: str, header: dict[str, Any] | None = None, **claims: Any) -> str:
        return devtoken.sign_jws(self.key, header or self.header(), self.claims(token, **claims))


@pytest.fixture
def pk(env: Env, dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]], rsa_key: rsa.RSAPrivateKey) -> ProofKit:
    return ProofKit(env, dpop_key[0], dpop_key[1], rsa_key)


ProofBuild = Callable[[ProofKit, str], str]


def _raw_proof(k: ProofKit, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return forge.sign_segments(k.key, b64json(header), b64json(claims))


PROOF_CASES: list[tuple[str, ProofBuild, Reason | None]] = [
    ("valid", lambda k, t: k.proof(t), None),
    ("valid, typ application/dpop+jwt", lambda k, t: k.proof(t, k.header(typ="application/dpop+jwt")), None),
    ("valid, typ DPOP+JWT", lambda k, t: k.proof(t, k.header(typ="DPOP+JWT")), None),
    ("valid, htu with query and fragment", lambda k, t: k.proof(t, htu=URI + "?a=1#frag"), None),
    (
        "valid, htu host uppercase and :443",
        lambda k, t: k.proof(t, htu="https://PEP.TEST:443/pep.v1.Authorizer/Authorize"),
        None,
    ),
    ("valid, iat at the max age", lambda k, t: k.proof(t, iat=int(k.env.clock.now) - 300), None),
    ("valid, iat at the future skew", lambda k, t: k.proof(t, iat=int(k.env.clock.now) + 30), None),
    ("empty proof", lambda k, t: "", Reason.DPOP_PROOF_MISSING),
    ("not a JWS", lambda k, t: "garbage", INVALID),
    ("oversize", lambda k, t: k.proof(t, pad="x" * 9000), INVALID),
    (
        "duplicate claim",
        lambda k, t: forge.sign_segments(
            k.key, b64json(k.header()), b64(forge.b64json({})[:0] + '{"jti":"a","jti":"b"}')
        ),
        INVALID,
    ),
    ("typ missing", lambda k, t: k.proof(t, k.header(typ=OMIT)), INVALID),
    ("typ JWT", lambda k, t: k.proof(t, k.header(typ="JWT")), INVALID),
    ("typ at+jwt", lambda k, t: k.proof(t, k.header(typ="at+jwt")), INVALID),
    ("alg none", lambda k, t: _raw_proof(k, k.header(alg="none"), k.claims(t)), INVALID),
    ("alg HS256", lambda k, t: _raw_proof(k, k.header(alg="HS256"), k.claims(t)), INVALID),
    ("alg unknown", lambda k, t: _raw_proof(k, k.header(alg="ES256K"), k.claims(t)), INVALID),
    ("alg does not fit the jwk", lambda k, t: _raw_proof(k, k.header(alg="RS256"), k.claims(t)), INVALID),
    ("alg es256 (case)", lambda k, t: _raw_proof(k, k.header(alg="es256"), k.claims(t)), INVALID),
    ("jwk missing", lambda k, t: k.proof(t, k.header(jwk=OMIT)), INVALID),
    ("jwk not an object", lambda k, t: k.proof(t, k.header(jwk="key")), INVALID),
    ("jwk with private d", lambda k, t: k.proof(t, k.header(jwk={**k.jwk, "d": b64(bytes(32))})), INVALID),
    (
        "jwk point off the curve",
        lambda k, t: k.proof(t, k.header(jwk={**k.jwk, "y": b64(bytes(31) + b"\x01")})),
        INVALID,
    ),
    ("jwk of another key", lambda k, t: k.proof(t, k.header(jwk=devtoken.new_dpop_key()[1])), INVALID),
    ("jku header", lambda k, t: k.proof(t, k.header(jku="https://evil.test")), INVALID),
    ("x5c header", lambda k, t: k.proof(t, k.header(x5c=["MIIB"])), INVALID),
    ("crit header", lambda k, t: k.proof(t, k.header(crit=["htm"])), INVALID),
    ("tampered signature", lambda k, t: forge.tamper_signature(k.proof(t)), INVALID),
    ("tampered claims", lambda k, t: forge.tamper_payload(k.proof(t), htu=URI + "x"), INVALID),
    ("jti missing", lambda k, t: k.proof(t, jti=OMIT), INVALID),
    ("jti empty", lambda k, t: k.proof(t, jti=""), INVALID),
    ("jti a number", lambda k, t: k.proof(t, jti=7), INVALID),
    ("jti too long", lambda k, t: k.proof(t, jti="j" * 257), INVALID),
    ("htm missing", lambda k, t: k.proof(t, htm=OMIT), INVALID),
    ("htm other method", lambda k, t: k.proof(t, htm="GET"), INVALID),
    ("htm lowercase", lambda k, t: k.proof(t, htm="post"), INVALID),
    ("htu missing", lambda k, t: k.proof(t, htu=OMIT), INVALID),
    ("htu other path", lambda k, t: k.proof(t, htu="https://pep.test/other"), INVALID),
    ("htu other host", lambda k, t: k.proof(t, htu="https://evil.test/pep.v1.Authorizer/Authorize"), INVALID),
    ("htu http scheme", lambda k, t: k.proof(t, htu="http://pep.test/pep.v1.Authorizer/Authorize"), INVALID),
    ("htu other port", lambda k, t: k.proof(t, htu="https://pep.test:8443/pep.v1.Authorizer/Authorize"), INVALID),
    ("htu relative", lambda k, t: k.proof(t, htu="/pep.v1.Authorizer/Authorize"), INVALID),
    ("htu not a string", lambda k, t: k.proof(t, htu=[URI]), INVALID),
    ("iat missing", lambda k, t: k.proof(t, iat=OMIT), INVALID),
    ("iat a string", lambda k, t: k.proof(t, iat=str(int(k.env.clock.now))), INVALID),
    ("iat a boolean", lambda k, t: k.proof(t, iat=True), INVALID),
    ("iat too old", lambda k, t: k.proof(t, iat=int(k.env.clock.now) - 301), INVALID),
    ("iat in the future", lambda k, t: k.proof(t, iat=int(k.env.clock.now) + 31), INVALID),
    ("ath missing", lambda k, t: k.proof(t, ath=OMIT), INVALID),
    ("ath of another token", lambda k, t: k.proof(t, ath=access_token_hash(t + "x")), INVALID),
    ("ath a number", lambda k, t: k.proof(t, ath=1), INVALID),
    ("ath of the token with its prefix", lambda k, t: k.proof(t, ath=access_token_hash("DPoP " + t)), INVALID),
    (
        "signed by another key with its own jwk",
        lambda k, t: devtoken.sign_jws(k.rsa, k.header(alg="RS256", jwk=devtoken.public_jwk(k.rsa)), k.claims(t)),
        Reason.POP_BINDING_MISMATCH,
    ),
]


@pytest.mark.parametrize(("name", "build", "reason"), PROOF_CASES, ids=[c[0] for c in PROOF_CASES])
def test_proof_checks(pk: ProofKit, name: str, build: ProofBuild, reason: Reason | None) -> None:
    token = pk.token()
    creds = Credentials("DPoP " + token, build(pk, token), METHOD, URI)
    verifier = pk.env.verifier()
    if reason is None:
        assert verifier.verify(creds).binding == "dpop"
        return
    with pytest.raises(TokenError) as info:
        verifier.verify(creds)
    assert info.value.reason == reason, info.value.detail


def test_proof_alg_outside_configured_list(pk: ProofKit) -> None:
    token = pk.token()
    creds = Credentials("DPoP " + token, pk.proof(token), METHOD, URI)
    with pytest.raises(TokenError) as info:
        pk.env.verifier(dpop_algorithms=("PS256",)).verify(creds)
    assert info.value.reason == INVALID


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_proof_with_ed25519_key(env: Env, ed_key: Any, alg: str) -> None:
    jwk = devtoken.public_jwk(ed_key)
    token = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))
    proof = devtoken.mint_dpop_proof(ed_key, jwk, htm=METHOD, htu=URI, access_token=token, now=env.clock.now, alg=alg)
    assert env.verifier().verify(Credentials("DPoP " + token, proof, METHOD, URI)).binding == "dpop"


def test_proof_with_rsa_pss_key(env: Env, rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = devtoken.public_jwk(rsa_key)
    token = env.token(env.claims(cnf={"jkt": devtoken.jwk_thumbprint(jwk)}))
    proof = devtoken.mint_dpop_proof(
        rsa_key, jwk, htm=METHOD, htu=URI, access_token=token, now=env.clock.now, alg="PS256"
    )
    assert env.verifier().verify(Credentials("DPoP " + token, proof, METHOD, URI)).binding == "dpop"


@pytest.mark.parametrize(("method", "uri"), [("", URI), (METHOD, ""), (METHOD, "not a uri")])
def test_request_facts_missing(pk: ProofKit, method: str, uri: str) -> None:
    token = pk.token()
    with pytest.raises(TokenError) as info:
        pk.env.verifier().verify(Credentials("DPoP " + token, pk.proof(token), method, uri))
    assert info.value.reason == INVALID


# --- replay --------------------------------------------------------------------------


def test_same_proof_twice_is_a_replay(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    creds = Credentials("DPoP " + token, pk.proof(token), METHOD, URI)
    verifier.verify(creds)
    with pytest.raises(TokenError) as info:
        verifier.verify(creds)
    assert info.value.reason == Reason.DPOP_REPLAY


def test_same_jti_new_iat_is_a_replay(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))
    pk.env.clock.now += 5
    with pytest.raises(TokenError) as info:
        verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))
    assert info.value.reason == Reason.DPOP_REPLAY


def test_same_jti_for_another_uri_is_not_a_replay(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    other = "https://pep.test/pep.v1.Authorizer/AuthorizeBatch"
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same", htu=other), METHOD, other))


def test_replay_key_uses_the_normalised_uri(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))
    upper = "HTTPS://PEP.TEST:443/pep.v1.Authorizer/Authorize?x=1"
    with pytest.raises(TokenError) as info:
        verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same", htu=upper), METHOD, upper))
    assert info.value.reason == Reason.DPOP_REPLAY


def test_invalid_proof_does_not_poison_the_replay_cache(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    for bad in (pk.proof(token, jti="same", htm="GET"), pk.proof(token, jti="same", ath="x")):
        with pytest.raises(TokenError):
            verifier.verify(Credentials("DPoP " + token, bad, METHOD, URI))
    other_key, other_jwk = devtoken.new_dpop_key()
    wrong_key = devtoken.sign_jws(other_key, pk.header(jwk=other_jwk), pk.claims(token, jti="same"))
    with pytest.raises(TokenError) as info:
        verifier.verify(Credentials("DPoP " + token, wrong_key, METHOD, URI))
    assert info.value.reason == Reason.POP_BINDING_MISMATCH
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))


def test_replay_entry_expires_with_the_proof_window(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))
    pk.env.clock.now += 302  # the first proof could no longer be accepted anyway
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="same"), METHOD, URI))


def test_replay_is_atomic_across_threads(pk: ProofKit) -> None:
    token = pk.token()
    verifier = pk.env.verifier()
    creds = Credentials("DPoP " + token, pk.proof(token), METHOD, URI)
    verifier.verify(Credentials("DPoP " + token, pk.proof(token, jti="warm"), METHOD, URI))  # cache the token
    results: list[str] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            verifier.verify(creds)
            results.append("ok")
        except TokenError as e:
            results.append(e.reason.value)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert results.count("dpop_replay") == 15


# --- htu normalisation (RFC 3986 6.2.2, 6.2.3) ----------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://example.com", "https://example.com/"),
        ("HTTPS://Example.COM/a", "https://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
        ("https://example.com:0443/a", "https://example.com/a"),
        ("https://example.com:/a", "https://example.com/a"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://example.com/%7euser/%2fx", "https://example.com/~user/%2Fx"),
        ("https://example.com/x/%2e%2E/b", "https://example.com/b"),
        ("https://example.com/%41%2e%2E/b", "https://example.com/A../b"),
        ("https://example.com/a?q=1#f", "https://example.com/a"),
        ("https://example.com#f", "https://example.com/"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://example.com/A", "https://example.com/A"),
    ],
)
def test_normalize_htu(uri: str, expected: str) -> None:
    assert normalize_htu(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "/relative",
        "example.com/a",
        "ftp://example.com/a",
        "https:/example.com/a",
        "https://user@example.com/a",
        "https://example.com:99999/a",
        "https://example.com:8x/a",
        "https://exa mple.com/a",
        "https://example.com/%zz",
        "https://ex%41mple.com/a",
        "https://[::1/a",
        "https:///a",
        "https://example.com/\x00",
    ],
)
def test_normalize_htu_rejects(uri: str) -> None:
    assert normalize_htu(uri) is None


def test_proof_jwk_header_is_not_an_access_token_key(env: Env, dpop_key: Any) -> None:
    # A token whose header embeds a jwk is malformed even when that jwk signed it.
    key, jwk = dpop_key
    token = devtoken.sign_jws(key, {"typ": "at+jwt", "alg": "ES256", "jwk": jwk}, env.claims())
    with pytest.raises(TokenError) as info:
        env.verify(token)
    assert info.value.reason == Reason.TOKEN_MALFORMED
