"""Strict JWS compact serialization: parsing and signature verification.

Only what an access token or a DPoP proof may legally be: three non-empty base64url
segments (RFC 8725bis 3.14), canonical unpadded base64url, UTF-8 JSON objects with no
duplicate member names, no NaN/Infinity, bounded nesting. Everything else is
`MalformedJWS`, which callers map to their own reason code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
UNSECURED_JWS = re.compile(r"^([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_JSON_DEPTH = 32

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


class MalformedJWS(ValueError):
    """The input is not a well-formed compact JWS. The message is safe to log."""


@dataclass(frozen=True)
class AlgSpec:
    """What a JWS `alg` means: key type, curve (EC/OKP) and hash."""

    kty: str
    family: str  # "RS", "PS", "ES", "EdDSA"
    hash_name: str | None = None
    curves: tuple[str, ...] = ()


# Asymmetric signature algorithms only. HMAC and `none` have no entry on purpose.
ALGORITHMS: Mapping[str, AlgSpec] = {
    "RS256": AlgSpec("RSA", "RS", "SHA256"),
    "RS384": AlgSpec("RSA", "RS", "SHA384"),
    "RS512": AlgSpec("RSA", "RS", "SHA512"),
    "PS256": AlgSpec("RSA", "PS", "SHA256"),
    "PS384": AlgSpec("RSA", "PS", "SHA384"),
    "PS512": AlgSpec("RSA", "PS", "SHA512"),
    "ES256": AlgSpec("EC", "ES", "SHA256", ("P-256",)),
    "ES384": AlgSpec("EC", "ES", "SHA384", ("P-384",)),
    "ES512": AlgSpec("EC", "ES", "SHA512", ("P-521",)),
    # RFC 8037 polymorphic name, and the fully specified RFC 9864 name.
    "EdDSA": AlgSpec("OKP", "EdDSA", None, ("Ed25519", "Ed448")),
    "Ed25519": AlgSpec("OKP", "EdDSA", None, ("Ed25519",)),
}

_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
_EC_SIZES = {"P-256": 32, "P-384": 48, "P-521": 66}


def is_forbidden_alg(alg: str) -> bool:
    """`none` in any case, or any HMAC algorithm: never acceptable for pep."""
    lowered = alg.lower()
    return lowered == "none" or lowered.startswith("hs")


@dataclass(frozen=True)
class CompactJWS:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode canonical unpadded base64url; raise `MalformedJWS` on anything else.

    Canonical means the unused low bits of the last character are zero, so one byte
    string has exactly one encoding (no signature malleability through re-encoding).
    """
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise MalformedJWS("invalid base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedJWS("invalid base64url") from None
    if b64url_encode(data) != text:
        raise MalformedJWS("non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJWS("duplicate JSON member name")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise MalformedJWS(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJWS("JSON number out of range")
    return value


def _check_tree(value: Any) -> None:
    """Bounded depth and no lone surrogates, walked iteratively."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise MalformedJWS("JSON string is not valid Unicode")
        elif isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise MalformedJWS("JSON nested too deeply")
            if isinstance(node, dict):
                for k, v in node.items():
                    stack.append((k, depth))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in node)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict UTF-8 JSON object: duplicate names, NaN and deep nesting are errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJWS(f"{what} is not UTF-8") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except MalformedJWS as e:
        raise MalformedJWS(f"{what}: {e}") from None
    except (ValueError, RecursionError):
        raise MalformedJWS(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedJWS(f"{what} is not a JSON object")
    try:
        _check_tree(value)
    except MalformedJWS as e:
        raise MalformedJWS(f"{what}: {e}") from None
    return value


def parse_compact(token: str, max_bytes: int) -> CompactJWS:
    """Split and decode a compact JWS without verifying anything."""
    if len(token) > max_bytes:
        raise MalformedJWS(f"longer than {max_bytes} bytes")
    if token.count(".") == 4:
        raise MalformedJWS("encrypted JWT (JWE) is not supported")
    if not COMPACT_JWS.match(token):
        raise MalformedJWS("not a compact JWS (three base64url segments)")
    h64, p64, s64 = token.split(".")
    header = parse_json_object(b64url_decode(h64), "header")
    payload = parse_json_object(b64url_decode(p64), "payload")
    signature = b64url_decode(s64)
    return CompactJWS(header, payload, f"{h64}.{p64}".encode("ascii"), signature)


def unsecured_alg(token: str) -> str | None:
    """The header `alg` of an unsecured JWS (RFC 7515 A.5: empty signature segment),
    so the classic `alg: none` token is reported as such rather than as malformed."""
    match = UNSECURED_JWS.match(token)
    if match is None:
        return None
    try:
        alg = parse_json_object(b64url_decode(match.group(1)), "header").get("alg")
    except MalformedJWS:
        return None
    return alg if isinstance(alg, str) else None


def verify_signature(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """True only if `signature` is a valid `alg` signature by `key` over `signing_input`.

    The key type (and EC curve) must fit `alg`; a mismatch is a failed verification,
    never a fallback to another algorithm.
    """
    spec = ALGORITHMS.get(alg)
    if spec is None:
        return False
    try:
        if spec.family in ("RS", "PS"):
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            if len(signature) != (key.key_size + 7) // 8:
                return False
            digest = _HASHES[spec.hash_name or ""]()
            pad: padding.AsymmetricPadding
            if spec.family == "RS":
                pad = padding.PKCS1v15()
            else:
                pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, signing_input, pad, digest)
            return True
        if spec.family == "ES":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            curve = spec.curves[0]
            if key.curve.name != _CURVE_NAMES[curve]:
                return False
            size = _EC_SIZES[curve]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_HASHES[spec.hash_name or ""]()))
            return True
        if spec.family == "EdDSA":
            if isinstance(key, ed25519.Ed25519PublicKey) and "Ed25519" in spec.curves:
                key.verify(signature, signing_input)
                return True
            if isinstance(key, ed448.Ed448PublicKey) and "Ed448" in spec.curves:
                key.verify(signature, signing_input)
                return True
            return False
    except (InvalidSignature, ValueError):
        return False
    return False


_CURVE_NAMES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
