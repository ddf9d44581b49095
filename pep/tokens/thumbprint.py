"""Thumbprints: RFC 7638 JWK thumbprints and RFC 8705 certificate thumbprints."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from cryptography import x509

from pep.tokens.jws import MalformedJWS, b64url_decode, b64url_encode

# RFC 7638 3.2 (and RFC 8037 2 for OKP): the required members, nothing else.
_REQUIRED_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}
# Characters that would need JSON escaping have no place in a JWK member (RFC 7638 3.3).
_PLAIN = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]+$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
_HEX_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")


def jwk_thumbprint_input(jwk: Mapping[str, Any]) -> str:
    """The canonical JSON that RFC 7638 hashes; ValueError if the key lacks a member."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED_MEMBERS:
        raise ValueError("unsupported or missing kty")
    parts = []
    for name in _REQUIRED_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str) or not _PLAIN.match(value):
            raise ValueError(f"member {name!r} missing or not a plain string")
        parts.append(f'"{name}":"{value}"')
    return "{" + ",".join(parts) + "}"


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """base64url SHA-256 JWK thumbprint (RFC 7638), the form `cnf.jkt` carries."""
    digest = hashlib.sha256(jwk_thumbprint_input(jwk).encode("utf-8")).digest()
    return b64url_encode(digest)


def sha256_b64url(data: bytes) -> str:
    return b64url_encode(hashlib.sha256(data).digest())


def decode_sha256_b64url(value: str) -> bytes:
    """Strictly decode a base64url SHA-256 value (43 characters, no padding)."""
    if len(value) != 43:
        raise ValueError("not a base64url SHA-256 value")
    try:
        digest = b64url_decode(value)
    except MalformedJWS:
        raise ValueError("not a base64url SHA-256 value") from None
    if len(digest) != 32:
        raise ValueError("not a base64url SHA-256 value")
    return digest


def certificate_digest(value: str) -> bytes:
    """SHA-256 digest of the client certificate the service presented.

    Accepts what proxies hand over: base64url SHA-256 of the DER certificate (RFC 8705
    form, trailing '=' tolerated), a hex SHA-256 (Envoy XFCC `Hash=`), or the PEM
    certificate itself, possibly URL-encoded (Envoy `source.certificate`). Raises
    ValueError for anything else.
    """
    text = value.strip()
    if "%" in text:  # no thumbprint or PEM body contains '%': this is URL-encoded
        text = unquote(text).strip()
    if "-----BEGIN" in text:
        match = _PEM_CERT.search(text)
        if match is None:
            raise ValueError("PEM data holds no certificate")
        try:
            der = base64.b64decode("".join(match.group(1).split()), validate=True)
            x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError):
            raise ValueError("PEM certificate is unreadable") from None
        return hashlib.sha256(der).digest()
    if _HEX_SHA256.match(text):
        return bytes.fromhex(text)
    return decode_sha256_b64url(text.rstrip("="))
