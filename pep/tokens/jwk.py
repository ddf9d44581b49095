"""One JSON Web Key: public key construction and the algorithm it is bound to.

RFC 8725 3.1: "each key MUST be used with exactly one algorithm". A key's algorithm is
decided once, when the key is loaded, by `bind_algorithm`:

- the JWK `alg` member when present (it must fit the key type and curve);
- else EC keys take the one algorithm their curve allows (P-256 -> ES256,
  P-384 -> ES384, P-521 -> ES512);
- else OKP keys: Ed448 -> EdDSA; Ed25519 -> EdDSA when the issuer allows EdDSA,
  otherwise Ed25519. `EdDSA` over an Ed25519 key and `Ed25519` are one and the same
  signature algorithm (RFC 9864 only renames it), so a token may use either name
  for such a key when the issuer allows that name (`alg_matches`);
- else RSA keys: the issuer's allowed RS*/PS* algorithms. Exactly one -> bound to it.
  Several (say RS256 and PS256) -> ambiguous: the key is refused, because guessing
  would let one RSA key verify under two algorithms. Publish `alg` on the key or
  narrow the issuer's `algorithms` list.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from pep.tokens.jws import ALGORITHMS, MalformedJWS, PublicKey, b64url_decode

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
_EC_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_OKP_SIZES = {"Ed25519": 32, "Ed448": 57}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class JWKError(ValueError):
    """A JWK that cannot be used. The message names the problem, never key material."""


class UnsupportedKey(JWKError):
    """A well-formed key pep does not verify with (encryption key, other kty or curve)."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    alg: str
    kty: str
    crv: str | None
    key: PublicKey


def _member(jwk: Mapping[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise JWKError(f"member {name!r} missing or not a string")
    return value


def _b64(jwk: Mapping[str, Any], name: str) -> bytes:
    try:
        return b64url_decode(_member(jwk, name))
    except MalformedJWS:
        raise JWKError(f"member {name!r} is not base64url") from None


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Build a public key from a JWK, refusing private members and invalid points."""
    if jwk.get("kty") == "oct":
        raise UnsupportedKey("symmetric keys are never used")  # HMAC is refused outright
    private = PRIVATE_MEMBERS.intersection(jwk)
    if private:
        raise JWKError("contains private key members")
    kty = jwk.get("kty")
    if kty == "EC":
        crv = _member(jwk, "crv")
        if crv not in _EC_CURVES:
            raise UnsupportedKey("unsupported EC curve")
        curve, size = _EC_CURVES[crv]
        x, y = _b64(jwk, "x"), _b64(jwk, "y")
        if len(x) != size or len(y) != size:
            raise JWKError("EC coordinates have the wrong length")
        try:
            # from_encoded_point checks the point is on the curve.
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        except ValueError:
            raise JWKError("EC point is not on the curve") from None
    if kty == "RSA":
        n = int.from_bytes(_b64(jwk, "n"), "big")
        e = int.from_bytes(_b64(jwk, "e"), "big")
        if n.bit_length() < MIN_RSA_BITS:
            raise JWKError(f"RSA modulus shorter than {MIN_RSA_BITS} bits")
        if e < 3 or e % 2 == 0:
            raise JWKError("RSA exponent is invalid")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise JWKError("RSA key is invalid") from None
    if kty == "OKP":
        crv = _member(jwk, "crv")
        if crv not in _OKP_SIZES:
            raise UnsupportedKey("unsupported OKP curve")
        x = _b64(jwk, "x")
        if len(x) != _OKP_SIZES[crv]:
            raise JWKError("OKP key has the wrong length")
        if crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
        return ed448.Ed448PublicKey.from_public_bytes(x)
    if isinstance(kty, str):
        raise UnsupportedKey("unsupported key type")
    raise JWKError("member 'kty' missing or not a string")


def key_fits_alg(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a key of this kty/crv can produce `alg` signatures at all."""
    spec = ALGORITHMS.get(alg)
    if spec is None or jwk.get("kty") != spec.kty:
        return False
    return not spec.curves or jwk.get("crv") in spec.curves


def bind_algorithm(jwk: Mapping[str, Any], allowed: Collection[str]) -> str:
    """The one algorithm this key verifies (see the module docstring)."""
    alg = jwk.get("alg")
    if alg is not None:
        if not isinstance(alg, str):
            raise JWKError("member 'alg' is not a string")
        if alg not in ALGORITHMS:
            raise UnsupportedKey("alg is not an asymmetric signature algorithm pep supports")
        if not key_fits_alg(jwk, alg):
            raise JWKError("alg does not fit the key type or curve")
        return alg
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and isinstance(crv, str) and crv in _EC_ALG:
        return _EC_ALG[crv]
    if kty == "OKP":
        if crv == "Ed448":
            return "EdDSA"
        if crv == "Ed25519":
            return "EdDSA" if "EdDSA" in allowed or "Ed25519" not in allowed else "Ed25519"
    if kty == "RSA":
        candidates = sorted(a for a in allowed if ALGORITHMS.get(a) and ALGORITHMS[a].kty == "RSA")
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise UnsupportedKey("RSA key without alg and the issuer allows no RSA algorithm")
        raise JWKError(
            f"RSA key without alg is ambiguous (issuer allows {', '.join(candidates)}); "
            "set alg on the key or narrow the issuer's algorithms"
        )
    raise UnsupportedKey("no algorithm can be derived for this key")


def alg_matches(key: VerificationKey, header_alg: str) -> bool:
    """Header `alg` equals the key's bound algorithm (EdDSA/Ed25519 alias on Ed25519)."""
    if header_alg == key.alg:
        return True
    return key.crv == "Ed25519" and {header_alg, key.alg} == {"EdDSA", "Ed25519"}


def load_verification_key(jwk: Any, allowed: Collection[str]) -> VerificationKey | None:
    """A JWKS entry as a verification key; None for keys not meant for signatures."""
    if not isinstance(jwk, Mapping):
        raise JWKError("is not a JSON object")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JWKError("member 'kid' is not a string")
    key = public_key_from_jwk(jwk)
    alg = bind_algorithm(jwk, allowed)
    crv = jwk.get("crv")
    return VerificationKey(kid, alg, str(jwk["kty"]), crv if isinstance(crv, str) else None, key)
