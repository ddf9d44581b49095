"""The reason matrix: one row per check and cause, each a minimal change to a good token.

Every bad row is otherwise valid (properly signed, right typ, fresh), so removing the
check it targets makes the row pass or fail with a different reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness import forge
from tests.harness.forge import AUDIENCE, ISSUER, OMIT, b64
from tests.harness.tokens import ClientCert, Env, write_jwks

METHOD = "POST"
URI = "https://pep.test/pep.v1.Authorizer/Authorize"


@dataclass
class Kit:
    env: Env
    rsa: rsa.RSAPrivateKey
    other: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    cert: ClientCert
    dpop: tuple[ec.EllipticCurvePrivateKey, dict[str, str]]

    @property
    def now(self) -> float:
        return self.env.clock.now

    def tok(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        return forge.token(self.env.key, self.env.claims(**claims), **(header or {}))

    def raw(self, header: str | dict[str, Any], payload: str | bytes) -> str:
        h = b64(header if isinstance(header, str) else json.dumps(header))
        return forge.sign_segments(self.env.key, h, b64(payload))

    def good_header_json(self) -> str:
        return json.dumps(forge.good_header(self.env.key))

    def good_claims_json(self) -> str:
        return json.dumps(self.env.claims())

    @property
    def jkt(self) -> str:
        return devtoken.jwk_thumbprint(self.dpop[1])

    def proof(self, token: str, **changes: Any) -> str:
        key, jwk = changes.pop("key", self.dpop[0]), changes.pop("jwk", self.dpop[1])
        args: dict[str, Any] = {"htm": METHOD, "htu": URI, "access_token": token, "now": self.now}
        args.update(changes)
        return devtoken.mint_dpop_proof(key, jwk, **args)

    def multi(self, **kwargs: Any) -> TokenVerifier:
        """A verifier whose issuer publishes the EC and the RSA key."""
        path = write_jwks(self.env.tmp, "multi.json", [self.env.key, self.rsa])
        return self.env.verifier(jwks_path=path, **kwargs)


@pytest.fixture
def kit(
    env: Env,
    rsa_key: rsa.RSAPrivateKey,
    other_ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    client_cert: ClientCert,
    dpop_key: tuple[ec.EllipticCurvePrivateKey, dict[str, str]],
) -> Kit:
    return Kit(env, rsa_key, other_ec_key, ed_key, client_cert, dpop_key)


Build = Callable[[Kit], "Credentials | str"]
MakeVerifier = Callable[[Kit], TokenVerifier]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    reason: Reason | None  # None: accepted
    verifier: MakeVerifier | None = None
    binding: str = "bearer"


def _dpop_creds(k: Kit, prefix: str = "DPoP ", **proof_changes: Any) -> Credentials:
    token = k.tok(cnf={"jkt": k.jkt})
    return Credentials(prefix + token, k.proof(token, **proof_changes), METHOD, URI)


def _mtls_token(k: Kit) -> str:
    return k.tok(cnf={"x5t#S256": k.cert.x5t})


def _nonce_verifier(k: Kit) -> TokenVerifier:
    """The env's issuer with `dpop_nonce: true` (pep/tokens/nonce.py)."""
    issuer = IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_file=k.env.jwks_path, dpop_nonce=True)
    verifier = TokenVerifier([issuer], TokenConfig(), clock=k.env.clock, cache_size=10)
    k.env.verifiers.append(verifier)
    return verifier


def _two_issuers(k: Kit) -> TokenVerifier:
    other_path = write_jwks(k.env.tmp, "other.json", [k.other])
    issuers = [
        IssuerConfig(ISSUER, (AUDIENCE,), ("ES256",), jwks_file=k.env.jwks_path),
        IssuerConfig("https://other.test", (AUDIENCE,), ("ES256",), jwks_file=other_path),
    ]
    v = TokenVerifier(issuers, TokenConfig(), clock=k.env.clock)
    k.env.verifiers.append(v)
    return v


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _noncanonical_signature(token: str) -> str:
    h, p, s = token.split(".")
    # ES256 signatures are 64 bytes: 86 characters with 4 unused low bits in the last.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(s[-1]) | 1]
    return f"{h}.{p}.{s[:-1]}{last}"


def _without(claim: str) -> Build:
    return lambda k: k.tok(**{claim: OMIT})


MISSING = Reason.TOKEN_MISSING
MALFORMED = Reason.TOKEN_MALFORMED
ALG = Reason.TOKEN_ALGORITHM_REJECTED
TYP = Reason.TOKEN_TYPE_INVALID
CLAIMS = Reason.TOKEN_CLAIMS_MISSING
UNTRUSTED = Reason.TOKEN_ISSUER_UNTRUSTED
SIG = Reason.TOKEN_SIGNATURE_INVALID
EXPIRED = Reason.TOKEN_EXPIRED
NYV = Reason.TOKEN_NOT_YET_VALID
AUD = Reason.TOKEN_AUDIENCE_INVALID
POP = Reason.POP_BINDING_MISMATCH

CASES: list[Case] = [
    # Positive controls: the base every other row changes by one thing.
    Case("good token", lambda k: k.tok(), None),
    Case("good token with Bearer prefix", lambda k: "Bearer " + k.tok(), None),
    Case("good token with lowercase bearer prefix", lambda k: "bearer  " + k.tok(), None),
    # token_missing
    Case("empty", lambda k: "", MISSING),
    Case("whitespace only", lambda k: "  \t ", MISSING),
    Case("Bearer prefix only", lambda k: "Bearer ", MISSING),
    Case("DPoP scheme only", lambda k: "DPoP", MISSING),
    # token_malformed: shape
    Case("one segment", lambda k: "abc", MALFORMED),
    Case("two segments", lambda k: ".".join(k.tok().split(".")[:2]), MALFORMED),
    Case("four segments", lambda k: k.tok() + ".abc", MALFORMED),
    Case("JWE five segments", lambda k: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", MALFORMED),
    Case("empty signature segment", lambda k: ".".join(k.tok().split(".")[:2]) + ".", MALFORMED),
    Case("base64 padding", lambda k: k.tok() + "==", MALFORMED),
    Case("standard base64 alphabet", lambda k: k.tok().replace("-", "+").replace("_", "/") + "+/", MALFORMED),
    Case("space inside", lambda k: k.tok().replace(".", ". ", 1), MALFORMED),
    Case("non-canonical base64url", lambda k: _noncanonical_signature(k.tok()), MALFORMED),
    Case("impossible base64url length", lambda k: k.tok() + "AAA", MALFORMED),
    Case("JSON serialization", lambda k: json.dumps({"payload": "x", "signature": "y"}), MALFORMED),
    Case("oversize", lambda k: forge.oversize(k.env.key, 9000), MALFORMED),
    # token_malformed: header and payload content (properly signed)
    Case("header not JSON", lambda k: k.raw("not json", k.good_claims_json()), MALFORMED),
    Case("header JSON array", lambda k: k.raw("[1,2]", k.good_claims_json()), MALFORMED),
    Case("payload JSON string", lambda k: k.raw(k.good_header_json(), '"text"'), MALFORMED),
    Case("payload not UTF-8", lambda k: k.raw(k.good_header_json(), b'{"iss":"\xff"}'), MALFORMED),
    Case(
        "payload with UTF-8 BOM",
        lambda k: k.raw(k.good_header_json(), b"\xef\xbb\xbf" + k.good_claims_json().encode()),
        MALFORMED,
    ),
    Case("payload trailing data", lambda k: k.raw(k.good_header_json(), k.good_claims_json() + " x"), MALFORMED),
    Case(
        "duplicate header member",
        lambda k: k.raw(k.good_header_json()[:-1] + ', "typ": "at+jwt"}', k.good_claims_json()),
        MALFORMED,
    ),
    Case(
        "duplicate payload member",
        lambda k: k.raw(k.good_header_json(), k.good_claims_json()[:-1] + f', "iss": "{ISSUER}"}}'),
        MALFORMED,
    ),
    Case("NaN in payload", lambda k: k.raw(k.good_header_json(), k.good_claims_json()[:-1] + ', "x": NaN}'), MALFORMED),
    Case(
        "Infinity in payload",
        lambda k: k.raw(k.good_header_json(), k.good_claims_json()[:-1] + ', "x": 1e999}'),
        MALFORMED,
    ),
    Case(
        "lone surrogate",
        lambda k: k.raw(k.good_header_json(), k.good_claims_json()[:-1] + ', "x": "\\ud800"}'),
        MALFORMED,
    ),
    Case("nesting too deep", lambda k: k.tok(deep=_nested(40)), MALFORMED),
    Case("crit header", lambda k: k.tok({"crit": ["exp"]}), MALFORMED),
    Case("cty JWT (nested token)", lambda k: k.tok({"cty": "JWT"}), MALFORMED),
    Case("jku header", lambda k: k.tok({"jku": "https://evil.test/jwks"}), MALFORMED),
    Case("x5u header", lambda k: k.tok({"x5u": "https://evil.test/cert"}), MALFORMED),
    Case("x5c header", lambda k: k.tok({"x5c": ["MIIB"]}), MALFORMED),
    Case("embedded jwk header", lambda k: k.tok({"jwk": devtoken.public_jwk(k.env.key)}), MALFORMED),
    Case("alg missing", lambda k: k.raw(forge.good_header(k.env.key, alg=OMIT), k.good_claims_json()), MALFORMED),
    Case(
        "alg not a string",
        lambda k: k.raw(forge.good_header(k.env.key, alg=["ES256"]), k.good_claims_json()),
        MALFORMED,
    ),
    Case("kid not a string", lambda k: k.tok({"kid": 7}), MALFORMED),
    Case("kid too long", lambda k: k.tok({"kid": "k" * 300}), MALFORMED),
    # token_algorithm_rejected
    Case("alg none", lambda k: forge.alg_none(k.env.claims(), "none", "c2ln"), ALG),
    Case("alg None", lambda k: forge.alg_none(k.env.claims(), "None", "c2ln"), ALG),
    Case("alg NONE", lambda k: forge.alg_none(k.env.claims(), "NONE", "c2ln"), ALG),
    Case("alg noNE", lambda k: forge.alg_none(k.env.claims(), "noNE", "c2ln"), ALG),
    Case("alg none, unsecured (empty signature)", lambda k: forge.alg_none(k.env.claims()), ALG),
    Case("alg nOnE, unsecured", lambda k: forge.alg_none(k.env.claims(), "nOnE"), ALG),
    Case("alg ES256, empty signature", lambda k: forge.alg_none(k.env.claims(), "ES256"), MALFORMED),
    Case("alg none, empty signature, bad payload", lambda k: forge.alg_none(k.env.claims())[:-2] + "!.", MALFORMED),
    Case("header not JSON, empty signature", lambda k: "bm9uZQ." + k.tok().split(".")[1] + ".", MALFORMED),
    Case(
        "alg none wins over typ and issuer",
        lambda k: forge.b64json({"alg": "none"}) + "." + forge.b64json({"iss": "https://evil.test"}) + ".c2ln",
        ALG,
    ),
    Case(
        "HS256 keyed with the public key PEM",
        lambda k: forge.hmac_with_public_key(
            k.env.claims(),
            k.env.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            forge.kid_of(k.env.key),
        ),
        ALG,
    ),
    Case("HS512", lambda k: forge.hmac_with_public_key(k.env.claims(), b"secret", "k", "HS512"), ALG),
    Case("hs256 lowercase", lambda k: forge.hmac_with_public_key(k.env.claims(), b"secret", "k", "hs256"), ALG),
    Case("alg wrong case (es256)", lambda k: k.tok({"alg": "es256"}), ALG),
    Case("RS256 not on the issuer's list", lambda k: forge.token(k.rsa, k.env.claims()), ALG, lambda k: k.multi()),
    Case(
        "RS256 allowed: control",
        lambda k: forge.token(k.rsa, k.env.claims()),
        None,
        lambda k: k.multi(algorithms=("ES256", "RS256")),
    ),
    Case(
        "header alg differs from the key's alg",
        lambda k: forge.token(k.rsa, k.env.claims(), kid=forge.kid_of(k.env.key)),
        ALG,
        lambda k: k.multi(algorithms=("ES256", "RS256")),
    ),
    Case(
        "no kid, no key for the alg",
        lambda k: forge.token(ec.generate_private_key(ec.SECP384R1()), k.env.claims(), kid=OMIT),
        ALG,
        lambda k: k.env.verifier(algorithms=("ES256", "ES384")),
    ),
    # token_type_invalid
    Case("typ missing", lambda k: k.tok({"typ": OMIT}), TYP),
    Case("typ JWT", lambda k: k.tok({"typ": "JWT"}), TYP),
    Case("typ application/jwt", lambda k: k.tok({"typ": "application/jwt"}), TYP),
    Case("typ dpop+jwt", lambda k: k.tok({"typ": "dpop+jwt"}), TYP),
    Case("typ txntoken+jwt", lambda k: k.tok({"typ": "txntoken+jwt"}), TYP),
    Case("typ oauth-id-jag+jwt", lambda k: k.tok({"typ": "oauth-id-jag+jwt"}), TYP),
    Case("typ with trailing space", lambda k: k.tok({"typ": "at+jwt "}), TYP),
    Case("typ not a string", lambda k: k.tok({"typ": 5}), TYP),
    Case("typ AT+JWT (case-insensitive)", lambda k: k.tok({"typ": "AT+JWT"}), None),
    Case("typ at+JWT (RFC 9068 example)", lambda k: k.tok({"typ": "at+JWT"}), None),
    Case("typ application/at+jwt", lambda k: k.tok({"typ": "application/at+jwt"}), None),
    Case("typ JWT when accepted", lambda k: k.tok({"typ": "JWT"}), None, lambda k: k.env.verifier(accept_jwt_typ=True)),
    Case(
        "typ missing when JWT accepted",
        lambda k: k.tok({"typ": OMIT}),
        TYP,
        lambda k: k.env.verifier(accept_jwt_typ=True),
    ),
    # iss (read before the signature, to pick the key set)
    Case("iss missing", lambda k: k.tok(iss=OMIT), CLAIMS),
    Case("iss a number", lambda k: k.tok(iss=5), CLAIMS),
    Case("iss empty", lambda k: k.tok(iss=""), CLAIMS),
    Case("iss a list", lambda k: k.tok(iss=[ISSUER]), CLAIMS),
    Case("iss unknown", lambda k: k.tok(iss="https://evil.test"), UNTRUSTED),
    Case("iss with trailing slash", lambda k: k.tok(iss=ISSUER + "/"), UNTRUSTED),
    Case("iss different case", lambda k: k.tok(iss=ISSUER.upper()), UNTRUSTED),
    # token_signature_invalid
    Case("unknown kid", lambda k: forge.unknown_kid(k.env.key, k.env.claims()), SIG),
    Case("tampered payload", lambda k: forge.tamper_payload(k.tok(), sub="mallory"), SIG),
    Case("tampered header", lambda k: forge.tamper_header(k.tok(), extra="x"), SIG),
    Case("tampered signature", lambda k: forge.tamper_signature(k.tok()), SIG),
    Case("truncated signature", lambda k: forge.truncate_signature(k.tok(), 3), SIG),
    Case(
        "all-zero signature",
        lambda k: ".".join(k.tok().split(".")[:2]) + "." + b64(bytes(64)),
        SIG,
    ),
    Case("other key, our kid", lambda k: forge.token(k.other, k.env.claims(), kid=forge.kid_of(k.env.key)), SIG),
    Case("other key, no kid", lambda k: forge.token(k.other, k.env.claims(), kid=OMIT), SIG),
    Case("our key, no kid: control", lambda k: k.tok({"kid": OMIT}), None),
    Case(
        "issuer B claimed, signed with issuer A's key",
        lambda k: k.tok(iss="https://other.test"),
        SIG,
        _two_issuers,
    ),
    Case(
        "issuer B claimed, A's key, no kid",
        lambda k: k.tok({"kid": OMIT}, iss="https://other.test"),
        SIG,
        _two_issuers,
    ),
    Case(
        "issuer B with its own key: control",
        lambda k: forge.token(k.other, k.env.claims(iss="https://other.test")),
        None,
        _two_issuers,
    ),
    # token_expired (leeway 30 s)
    Case("expired beyond leeway", lambda k: k.tok(exp=int(k.now) - 31), EXPIRED),
    Case("expired exactly at the leeway", lambda k: k.tok(exp=int(k.now) - 30), EXPIRED),
    Case("expired within leeway: control", lambda k: k.tok(exp=int(k.now) - 29), None),
    # token_not_yet_valid
    Case("nbf in the future", lambda k: k.tok(nbf=int(k.now) + 31), NYV),
    Case("iat in the future", lambda k: k.tok(iat=int(k.now) + 31), NYV),
    Case("nbf within leeway: control", lambda k: k.tok(nbf=int(k.now) + 30), None),
    Case("iat within leeway: control", lambda k: k.tok(iat=int(k.now) + 30), None),
    # token_audience_invalid
    Case("aud other", lambda k: k.tok(aud="https://other.test"), AUD),
    Case("aud list without us", lambda k: k.tok(aud=["https://a.test", "https://b.test"]), AUD),
    Case("aud empty list", lambda k: k.tok(aud=[]), AUD),
    Case("aud different case", lambda k: k.tok(aud=AUDIENCE.upper()), AUD),
    Case("aud with trailing slash", lambda k: k.tok(aud=AUDIENCE + "/"), AUD),
    Case("aud prefix of ours", lambda k: k.tok(aud=AUDIENCE[:-1]), AUD),
    Case("aud list with us: control", lambda k: k.tok(aud=["https://a.test", AUDIENCE]), None),
    # token_claims_missing: required claims
    *[Case(f"{name} missing", _without(name), CLAIMS) for name in ("sub", "aud", "exp", "iat", "jti")],
    Case("client_id missing", lambda k: k.tok(client_id=OMIT), CLAIMS),
    Case("client_id missing, azp present: control", lambda k: k.tok(client_id=OMIT, azp="billing-bot"), None),
    Case(
        "configured required claim missing",
        lambda k: k.tok(scope=OMIT),
        CLAIMS,
        lambda k: k.env.verifier(required_claims=("iss", "sub", "aud", "exp", "scope")),
    ),
    Case(
        "jti not required: control",
        lambda k: k.tok(jti=OMIT),
        None,
        lambda k: k.env.verifier(required_claims=("iss", "sub", "aud", "exp")),
    ),
    # token_claims_missing: wrong JSON types
    Case("exp a string", lambda k: k.tok(exp=str(int(k.now) + 300)), CLAIMS),
    Case("exp a boolean", lambda k: k.tok(exp=True), CLAIMS),
    Case("iat a string", lambda k: k.tok(iat="now"), CLAIMS),
    Case("nbf a boolean", lambda k: k.tok(nbf=False), CLAIMS),
    Case("nbf null", lambda k: k.tok(nbf=None), CLAIMS),
    Case("sub empty", lambda k: k.tok(sub=""), CLAIMS),
    Case("sub a number", lambda k: k.tok(sub=42), CLAIMS),
    Case("client_id a number", lambda k: k.tok(client_id=42), CLAIMS),
    Case("azp a list", lambda k: k.tok(client_id=OMIT, azp=["x"]), CLAIMS),
    Case("jti empty", lambda k: k.tok(jti=""), CLAIMS),
    Case("jti a number", lambda k: k.tok(jti=1), CLAIMS),
    Case("scope a list", lambda k: k.tok(scope=["read"]), CLAIMS),
    Case("scp a number", lambda k: k.tok(scp=1), CLAIMS),
    Case("aud a number", lambda k: k.tok(aud=1), CLAIMS),
    Case("aud list with a number", lambda k: k.tok(aud=[AUDIENCE, 1]), CLAIMS),
    Case("act a string", lambda k: k.tok(act="billing-bot"), CLAIMS),
    Case("may_act a list", lambda k: k.tok(may_act=["x"]), CLAIMS),
    Case("cnf a string", lambda k: k.tok(cnf="x"), CLAIMS),
    Case("lifetime too long", lambda k: k.tok(exp=int(k.now) + 86401), CLAIMS),
    Case("lifetime at the limit: control", lambda k: k.tok(exp=int(k.now) + 86400), None),
    Case(
        "lifetime too long without iat",
        lambda k: k.tok(iat=OMIT, exp=int(k.now) + 86401),
        CLAIMS,
        lambda k: k.env.verifier(required_claims=("iss", "sub", "aud", "exp")),
    ),
    # cnf content
    Case("cnf empty", lambda k: k.tok(cnf={}), CLAIMS),
    Case("cnf with both jkt and x5t#S256", lambda k: k.tok(cnf={"jkt": k.jkt, "x5t#S256": k.cert.x5t}), CLAIMS),
    Case("cnf jwk (unsupported)", lambda k: k.tok(cnf={"jwk": k.dpop[1]}), CLAIMS),
    Case("cnf jkt plus unknown member", lambda k: k.tok(cnf={"jkt": k.jkt, "kid": "x"}), CLAIMS),
    Case("cnf jkt not a thumbprint", lambda k: k.tok(cnf={"jkt": "short"}), CLAIMS),
    Case("cnf jkt a number", lambda k: k.tok(cnf={"jkt": 5}), CLAIMS),
    Case("cnf x5t#S256 not a thumbprint", lambda k: k.tok(cnf={"x5t#S256": "abc"}), CLAIMS),
    Case(
        "cnf x5t#S256 RFC 8705 example (non-canonical base64url)",
        lambda k: k.tok(cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
        CLAIMS,
    ),
    # DPoP-bound tokens (details in test_dpop.py)
    Case("DPoP-bound, valid proof", lambda k: _dpop_creds(k), None, binding="dpop"),
    Case("DPoP-bound, no prefix, valid proof", lambda k: _dpop_creds(k, prefix=""), None, binding="dpop"),
    Case("DPoP-bound, lowercase dpop prefix", lambda k: _dpop_creds(k, prefix="dpop "), None, binding="dpop"),
    Case("DPoP-bound presented as Bearer", lambda k: _dpop_creds(k, prefix="Bearer "), POP),
    Case("DPoP-bound presented as bearer", lambda k: _dpop_creds(k, prefix="bearer "), POP),
    Case("DPoP-bound, no proof", lambda k: "DPoP " + k.tok(cnf={"jkt": k.jkt}), Reason.DPOP_PROOF_MISSING),
    Case("DPoP-bound, no prefix, no proof", lambda k: k.tok(cnf={"jkt": k.jkt}), Reason.DPOP_PROOF_MISSING),
    Case("DPoP-bound, proof for another method", lambda k: _dpop_creds(k, htm="GET"), Reason.DPOP_PROOF_INVALID),
    Case(
        "DPoP-bound, proof by another key",
        lambda k: _dpop_creds(k, key=k.other, jwk=devtoken.public_jwk(k.other)),
        POP,
    ),
    Case("DPoP-bound, nonce issuer, no nonce", lambda k: _dpop_creds(k), Reason.DPOP_NONCE_REQUIRED, _nonce_verifier),
    Case(
        "DPoP-bound, nonce issuer, forged nonce",
        lambda k: _dpop_creds(k, nonce="A" * 32),
        Reason.DPOP_NONCE_REQUIRED,
        _nonce_verifier,
    ),
    # OAuth Token Status List (details, with a real list server, in test_status_list.py)
    Case(
        "status list unreachable (fail closed)",
        lambda k: k.tok(status={"status_list": {"idx": 0, "uri": "http://127.0.0.1:9/list"}}),
        Reason.TOKEN_REVOKED,
    ),
    Case("status claim without status_list", lambda k: k.tok(status={"idx": 0}), CLAIMS),
    Case("DPoP scheme, unbound token", lambda k: Credentials("DPoP " + k.tok(), "x", METHOD, URI), POP),
    Case(
        "DPoP scheme, certificate-bound token",
        lambda k: Credentials("DPoP " + _mtls_token(k), client_cert_thumbprint=k.cert.x5t),
        POP,
    ),
    Case("unbound token with a stray proof", lambda k: Credentials(k.tok(), "x.y.z", METHOD, URI), None),
    # mTLS-bound tokens
    Case(
        "mTLS-bound, matching thumbprint",
        lambda k: Credentials(_mtls_token(k), client_cert_thumbprint=k.cert.x5t),
        None,
        binding="mtls",
    ),
    Case(
        "mTLS-bound as Bearer, matching",
        lambda k: Credentials("Bearer " + _mtls_token(k), client_cert_thumbprint=k.cert.x5t),
        None,
        binding="mtls",
    ),
    Case(
        "mTLS-bound, PEM certificate",
        lambda k: Credentials(_mtls_token(k), client_cert_thumbprint=k.cert.pem),
        None,
        binding="mtls",
    ),
    Case("mTLS-bound, no certificate", lambda k: _mtls_token(k), POP),
    Case(
        "mTLS-bound, other certificate",
        lambda k: Credentials(_mtls_token(k), client_cert_thumbprint=b64(bytes(32))),
        POP,
    ),
    Case(
        "mTLS-bound, unreadable thumbprint",
        lambda k: Credentials(_mtls_token(k), client_cert_thumbprint="not a thumbprint"),
        POP,
    ),
    Case(
        "unbound token with a client certificate",
        lambda k: Credentials(k.tok(), client_cert_thumbprint=k.cert.x5t),
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reason_matrix(kit: Kit, case: Case) -> None:
    verifier = case.verifier(kit) if case.verifier else kit.env.verifier()
    built = case.build(kit)
    creds = built if isinstance(built, Credentials) else Credentials(built)
    if case.reason is None:
        result = verifier.verify(creds)
        assert result.binding == case.binding
        return
    with pytest.raises(TokenError) as info:
        verifier.verify(creds)
    assert info.value.reason == case.reason, info.value.detail


def test_every_token_reason_is_covered() -> None:
    covered = {c.reason for c in CASES}
    token_reasons = {r for r in Reason if r.value.startswith(("token_", "dpop_", "pop_"))}
    token_reasons.discard(Reason.DPOP_REPLAY)  # replay needs two calls: test_dpop.py
    assert token_reasons <= covered
