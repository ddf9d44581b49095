"""Compact JWS: pep's strict parse on top, PyJWT's signature verification underneath.

PyJWT (`jwt.PyJWS`, `jwt.algorithms`) does the cryptography, pinned to one algorithm per
call. Its parser is laxer than an access token or DPoP proof may be, so pep parses first:
three non-empty base64url segments (RFC 8725bis 3.14), canonical unpadded base64url,
UTF-8 JSON objects with no duplicate member names, no NaN/Infinity, bounded nesting.
Everything else is `MalformedJWS`, which callers map to their own reason code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import Algorithm, OKPAlgorithm

from pep.algorithms import ALGORITHMS, SUPPORTED_ALGORITHMS
from pep.errors import PepError
from pep.reasons import Reason

COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
UNSECURED_JWS = re.compile(r"^([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_JSON_DEPTH = 32

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
# Below this, PyJWT only warns; pep refuses (its JWK loader already does).
MIN_RSA_BITS = 2048
_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class MalformedJWS(PepError, ValueError):
    """The input is not a well-formed compact JWS. The message is safe to log."""

    reason = Reason.TOKEN_MALFORMED


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
    # PyJWT's decoder also takes '=' padding; a JWS segment never has it.
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
    """Strict UTF-8 JSON object: duplicate names, NaN and deep nesting are errors.

    PyJWT reads JSON with plain `json.loads` (last duplicate wins, NaN accepted), so two
    readers could see different claims in one token: pep reads it once, strictly."""
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
    if len(token) > max_bytes:  # PyJWT has no size limit
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


class _Ed25519Algorithm(OKPAlgorithm):
    """RFC 9864's `Ed25519`: PyJWT's EdDSA, restricted to Ed25519 keys (PyJWT has no such name)."""

    def prepare_key(self, key: Any) -> Any:
        prepared = super().prepare_key(key)
        if not isinstance(prepared, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
            raise jwt.InvalidKeyError("Ed25519 needs an Ed25519 key")
        return prepared


def _pyjws() -> jwt.PyJWS:
    """A PyJWS that knows pep's table and nothing else (PyJWT also ships none, HS*, ES256K, ES521)."""
    jws = jwt.PyJWS(algorithms=sorted(SUPPORTED_ALGORITHMS))
    known = set()
    for name in SUPPORTED_ALGORITHMS:
        try:
            jws.get_algorithm_by_name(name)
            known.add(name)
        except NotImplementedError:
            pass
    if "Ed25519" not in known:
        jws.register_algorithm("Ed25519", _Ed25519Algorithm())
        known.add("Ed25519")
    if known != SUPPORTED_ALGORITHMS:  # fail at import, not by refusing every token later
        raise RuntimeError(f"PyJWT cannot verify {', '.join(sorted(SUPPORTED_ALGORITHMS - known))}")
    return jws


_JWS = _pyjws()


def pyjwt_algorithm(alg: str) -> Algorithm | None:
    """PyJWT's implementation of `alg`, or None when `alg` is not in pep's table."""
    if alg not in ALGORITHMS:
        return None
    return _JWS.get_algorithm_by_name(alg)


def _key_fits(alg: str, key: Any) -> bool:
    """Whether `key` is a public key of the type (and EC/OKP curve) `alg` signs with."""
    spec = ALGORITHMS.get(alg)
    if spec is None:
        return False
    if spec.kty == "RSA":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    if spec.kty == "EC":
        return isinstance(key, ec.EllipticCurvePublicKey) and _EC_CURVES.get(key.curve.name) in spec.curves
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519" in spec.curves
    return isinstance(key, ed448.Ed448PublicKey) and "Ed448" in spec.curves


def verify_signature(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """True only if `signature` is a valid `alg` signature by `key` over `signing_input`.

    Pinned: PyJWT verifies with exactly one algorithm, `alg`. A key that does not fit
    `alg` is a failed verification, never a fallback to another algorithm.
    """
    algorithm = pyjwt_algorithm(alg)
    # pep's table decides the fit: PyJWT checks key type and EC curve only from 2.11, and loads PEM text.
    if algorithm is None or not _key_fits(alg, key):
        return False
    # OpenSSL's PSS verify accepts a signature shorter than the modulus; JWS fixes its length.
    if isinstance(key, rsa.RSAPublicKey) and len(signature) != (key.key_size + 7) // 8:
        return False
    try:
        return bool(algorithm.verify(signing_input, algorithm.prepare_key(key), signature))
    except (jwt.PyJWTError, TypeError, ValueError):
        return False
