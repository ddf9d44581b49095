"""RFC 7638 / RFC 8037 JWK thumbprints and RFC 8705 certificate thumbprints."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest

from pep.dev import tokens as devtoken
from pep.tokens.thumbprint import certificate_digest, decode_sha256_b64url, jwk_thumbprint, jwk_thumbprint_input
from tests.harness.tokens import ClientCert

RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjh"
    "Mstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvR"
    "L5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_JWK = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
RFC7638_DIGEST = bytes(
    [55, 54, 203, 177, 120, 124, 184, 48, 156, 119, 238, 140, 55, 5, 197, 225,
     111, 251, 158, 133, 151, 21, 144, 31, 30, 76, 89, 177, 17, 130, 245, 123]
)  # fmt: skip
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def test_rfc7638_rsa_example() -> None:
    assert jwk_thumbprint_input(RFC7638_JWK) == '{"e":"AQAB","kty":"RSA","n":"' + RFC7638_N + '"}'
    assert hashlib.sha256(jwk_thumbprint_input(RFC7638_JWK).encode()).digest() == RFC7638_DIGEST
    assert jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc7638_optional_members_do_not_matter() -> None:
    bare = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}
    decorated = {**bare, "use": "sig", "key_ops": ["verify"], "x5c": ["MIIB"], "alg": "PS256", "kid": "other"}
    assert jwk_thumbprint(bare) == jwk_thumbprint(decorated) == jwk_thumbprint(RFC7638_JWK)


def test_rfc9449_example_key_jkt() -> None:
    assert jwk_thumbprint_input(RFC9449_JWK) == (
        '{"crv":"P-256","kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",'
        '"y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}'
    )
    assert jwk_thumbprint(RFC9449_JWK) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_rfc8037_ed25519_example() -> None:
    assert jwk_thumbprint_input(RFC8037_JWK) == (
        '{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'
    )
    assert jwk_thumbprint(RFC8037_JWK) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_private_jwk_thumbprint_equals_public() -> None:
    _, jwk = devtoken.new_dpop_key()
    private = {**jwk, "d": "AAAA"}
    assert jwk_thumbprint(private) == jwk_thumbprint(jwk)


@pytest.mark.parametrize(
    "jwk",
    [
        {},
        {"kty": "EC", "crv": "P-256", "x": "AAAA"},  # no y
        {"kty": "RSA", "n": "AAAA"},  # no e
        {"kty": "OKP", "x": "AAAA"},  # no crv
        {"kty": "XYZ", "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "x": 5, "y": "AAAA"},
        {"kty": "EC", "crv": 'P-256"', "x": "AAAA", "y": "AAAA"},  # would need escaping
    ],
)
def test_thumbprint_rejects_incomplete_keys(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        jwk_thumbprint(jwk)


def test_rfc8705_example_value_is_not_canonical_base64url() -> None:
    # The RFC's example x5t#S256 is 43 characters but its last character carries
    # non-zero padding bits: no real SHA-256 encodes that way, so pep refuses it.
    with pytest.raises(ValueError):
        decode_sha256_b64url("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2")
    assert len(decode_sha256_b64url("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg0")) == 32


def test_certificate_digest_forms(client_cert: ClientCert) -> None:
    digest = hashlib.sha256(client_cert.der).digest()
    assert certificate_digest(client_cert.x5t) == digest
    assert certificate_digest(client_cert.x5t + "=") == digest
    assert certificate_digest(digest.hex()) == digest
    assert certificate_digest(digest.hex().upper()) == digest
    assert certificate_digest(client_cert.pem) == digest
    assert certificate_digest(quote(client_cert.pem, safe="")) == digest  # Envoy's URL-encoded PEM


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",  # base64, not a certificate
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "g" * 64,
    ],
)
def test_certificate_digest_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        certificate_digest(value)
