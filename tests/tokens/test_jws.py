"""Strict compact JWS parsing, and the published negative vectors (RFC 7515, 8693, 9449)."""

from __future__ import annotations

from typing import Any

import pytest

from pep.algorithms import SUPPORTED_ALGORITHMS
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.jws import (
    MAX_JSON_DEPTH,
    MalformedJWS,
    b64url_decode,
    b64url_encode,
    parse_compact,
    parse_json_object,
    pyjwt_algorithm,
    verify_signature,
)
from pep.tokens.verifier import Credentials
from tests.harness.tokens import Env

# RFC 7515 Appendix A.1 (HS256, valid MAC) and A.5 (unsecured).
RFC7515_A1 = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
RFC7515_A5 = (
    "eyJhbGciOiJub25lIn0"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
)
# RFC 8693 A.2.4 delegated token (no typ) and RFC 9449 6.1 DPoP-bound token (no typ).
RFC8693_DELEGATED = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IjcyIn0.eyJhdWQiOiJ1cm46ZXhhbXBsZTpjb29wZXJhdGlvbi1jb250ZXh0IiwiaXNzIjoiaHR0cHM6Ly9h"
    "cy5leGFtcGxlLmNvbSIsImV4cCI6MTQ0MTkxMzYxMCwic2NvcGUiOiJzdGF0dXMgZmVlZCIsInN1YiI6InVzZXJAZXhhbXBsZS5uZXQiLCJhY3Qi"
    "Onsic3ViIjoiYWRtaW5AZXhhbXBsZS5uZXQifX0.3paKl9UySKYB5ng6_cUtQ2qlO8Rc_y7Mea7IwEXTcYbNdwG9-G1EKCFe5fW3H0hwX-MSZ49W"
    "pcb1SiAZaOQBtw"
)
RFC9449_BOUND = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IkJlQUxrYiJ9.eyJzdWIiOiJzb21lb25lQGV4YW1wbGUuY29tIiwiaXNzIjoiaHR0cHM6Ly9zZXJ2ZXIuZXhh"
    "bXBsZS5jb20iLCJuYmYiOjE1NjIyNjI2MTEsImV4cCI6MTU2MjI2NjIxNiwiY25mIjp7ImprdCI6IjBaY09DT1JaTll5LURXcHFxMzBqWnlKR0hU"
    "TjBkMkhnbEJWM3VpZ3VBNEkifX0.3Tyo8VTcn6u_PboUmAOYUY1kfAavomW_YwYMkmRNizLJoQzWy2fCo79Zi5yObpIzjWb5xW4OGld7ESZrh0fsrA"
)


def _reason(env: Env, token: str, **config: Any) -> Reason:
    with pytest.raises(TokenError) as info:
        env.verifier(**config).verify(Credentials(token))
    return info.value.reason


def test_rfc7515_a1_hs256_is_rejected_even_with_a_valid_mac(env: Env) -> None:
    parsed = parse_compact(RFC7515_A1, 8192)
    assert parsed.header == {"typ": "JWT", "alg": "HS256"}  # CRLF whitespace is valid JSON
    assert _reason(env, RFC7515_A1) == Reason.TOKEN_ALGORITHM_REJECTED
    assert _reason(env, RFC7515_A1, accept_jwt_typ=True) == Reason.TOKEN_ALGORITHM_REJECTED


def test_rfc7515_a5_unsecured_is_rejected(env: Env) -> None:
    assert _reason(env, RFC7515_A5) == Reason.TOKEN_ALGORITHM_REJECTED
    mixed_case = "eyJhbGciOiJub05FIn0" + RFC7515_A5[len("eyJhbGciOiJub25lIn0") :]  # {"alg":"noNE"}
    assert _reason(env, mixed_case) == Reason.TOKEN_ALGORITHM_REJECTED


def test_rfc8693_delegated_token_has_no_typ(env: Env) -> None:
    assert _reason(env, RFC8693_DELEGATED) == Reason.TOKEN_TYPE_INVALID


def test_rfc9449_bound_token_has_no_typ(env: Env) -> None:
    assert _reason(env, RFC9449_BOUND) == Reason.TOKEN_TYPE_INVALID
    assert _reason(env, RFC9449_BOUND, accept_jwt_typ=True) == Reason.TOKEN_TYPE_INVALID


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\x00\xff\xfe", bytes(range(256))])
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize("text", ["Zg==", "Zg=", "Z", "Zh", "a+b/", "ab cd", "é", "AAA=", "Zm9vYg=="])
def test_b64url_rejects(text: str) -> None:
    with pytest.raises(MalformedJWS):
        b64url_decode(text)


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b"1",
        b"null",
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',
        b'{"a":"\\udc00"}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xc3"}',
        b'{"a":1}{}',
        b"{'a':1}",
        b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}",
    ],
)
def test_parse_json_object_rejects(data: bytes) -> None:
    with pytest.raises(MalformedJWS):
        parse_json_object(data, "payload")


def test_json_depth_limit() -> None:
    def nested(depth: int) -> bytes:
        return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)

    assert parse_json_object(nested(MAX_JSON_DEPTH), "x")
    with pytest.raises(MalformedJWS):
        parse_json_object(nested(MAX_JSON_DEPTH + 1), "x")


def test_parse_compact_limits() -> None:
    with pytest.raises(MalformedJWS, match="longer"):
        parse_compact("a.b.c" + "A" * 100, 50)
    with pytest.raises(MalformedJWS, match="JWE"):
        parse_compact("a.b.c.d.e", 8192)


# --- verify_signature: the key must fit the algorithm, signatures must be exact -------


def _es_parts(alg: str, curve: Any, data: bytes) -> tuple[Any, bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(curve)
    size = (key.curve.key_size + 7) // 8
    digest = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[alg]
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    return key.public_key(), r.to_bytes(size, "big") + s.to_bytes(size, "big")


def test_verify_signature_exact_ecdsa_encoding() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    data = b"header.payload"
    public, sig = _es_parts("ES256", ec.SECP256R1(), data)
    assert verify_signature("ES256", public, data, sig)
    assert not verify_signature("ES256", public, data + b"x", sig)
    # Same r and s, but s zero-padded to 33 bytes: the same integers, not the JWS encoding.
    assert not verify_signature("ES256", public, data, sig[:32] + b"\x00" + sig[32:])
    assert not verify_signature("ES256", public, data, sig[:-1])
    assert not verify_signature("ES384", public, data, sig)


def test_verify_signature_key_must_fit_alg(rsa_key: Any, ed_key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    data = b"header.payload"
    p384, sig384 = _es_parts("ES256", ec.SECP384R1(), data)  # ES256's hash, P-384 curve
    assert not verify_signature("ES256", p384, data, sig384[:32] + sig384[48:80])
    assert not verify_signature("ES256", p384, data, sig384)
    ed_sig = ed_key.sign(data)
    assert verify_signature("EdDSA", ed_key.public_key(), data, ed_sig)
    assert verify_signature("Ed25519", ed_key.public_key(), data, ed_sig)
    for alg in ("ES256", "RS256", "PS256", "HS256", "none"):
        assert not verify_signature(alg, ed_key.public_key(), data, ed_sig)
    assert not verify_signature("EdDSA", rsa_key.public_key(), data, ed_sig)
    assert not verify_signature("RS256", p384, data, sig384)


# --- PyJWT verifies; pep's table and checks stay on top -------------------------------

# PyJWT implements these; pep never accepts them (ES521 is PyJWT's alias of ES512).
PYJWT_ONLY = ("none", "HS256", "HS384", "HS512", "ES256K", "ES521")


def test_pyjwt_knows_exactly_peps_algorithms() -> None:
    for alg in SUPPORTED_ALGORITHMS:
        assert pyjwt_algorithm(alg) is not None
    for alg in PYJWT_ONLY:
        assert pyjwt_algorithm(alg) is None


def test_algorithms_only_pyjwt_knows_never_verify() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    data = b"header.payload"
    k1 = ec.generate_private_key(ec.SECP256K1())
    es256k = ECAlgorithm(ECAlgorithm.SHA256)
    sig = es256k.sign(data, k1)
    assert es256k.verify(data, k1.public_key(), sig)  # a valid ES256K signature ...
    assert not verify_signature("ES256K", k1.public_key(), data, sig)  # ... that pep refuses
    p521 = ec.generate_private_key(ec.SECP521R1())
    sig = ECAlgorithm(ECAlgorithm.SHA512).sign(data, p521)
    assert verify_signature("ES512", p521.public_key(), data, sig)
    assert not verify_signature("ES521", p521.public_key(), data, sig)


@pytest.mark.parametrize("alg", ["ES256K", "ES521"])
def test_token_with_an_algorithm_only_pyjwt_knows_is_rejected(env: Env, alg: str) -> None:
    import json

    segments = (json.dumps({"typ": "at+jwt", "alg": alg}).encode(), json.dumps(env.claims()).encode(), bytes(64))
    token = ".".join(b64url_encode(part) for part in segments)
    assert _reason(env, token) == Reason.TOKEN_ALGORITHM_REJECTED


def test_ed25519_name_takes_ed25519_keys_only() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed448

    data = b"header.payload"
    key = ed448.Ed448PrivateKey.generate()
    sig = key.sign(data)
    assert verify_signature("EdDSA", key.public_key(), data, sig)
    assert not verify_signature("Ed25519", key.public_key(), data, sig)


def test_only_public_key_objects_verify(ed_key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    data = b"header.payload"
    sig = ed_key.sign(data)
    pem = ed_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert verify_signature("EdDSA", ed_key.public_key(), data, sig)
    for not_a_public_key in (ed_key, pem, pem.decode()):  # PyJWT alone would load PEM text
        assert not verify_signature("EdDSA", not_a_public_key, data, sig)


def test_pss_signature_shorter_than_the_modulus_is_refused(rsa_key: Any) -> None:
    # OpenSSL's PSS verify accepts a signature with its leading zero byte dropped; JWS does not.
    from jwt.algorithms import RSAPSSAlgorithm

    pss = RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256)
    for i in range(5000):
        data = b"header.payload%d" % i
        sig = pss.sign(data, rsa_key)
        if sig[0] == 0:
            break
    else:
        pytest.fail("no PSS signature with a leading zero byte in 5000 tries")
    assert verify_signature("PS256", rsa_key.public_key(), data, sig)
    assert not verify_signature("PS256", rsa_key.public_key(), data, sig[1:])
