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

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pep.algorithms import ALGORITHMS
from pep.errors import PepError
from pep.tokens.jws import MIN_RSA_BITS, MalformedJWS, PublicKey, b64url_decode

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_EC_SIZES = {"P-256": 32, "P-384": 48, "P-521": 66}
_OKP_SIZES = {"Ed25519": 32, "Ed448": 57}
_EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class JWKError(PepError, ValueError):
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
    """Build a public key from a JWK, refusing private members and invalid points.

    PyJWT's `from_jwk` builds the key; the checks before it are pep's, because PyJWT
    accepts private keys, padded or non-canonical base64url, short RSA moduli and any
    exponent.
    """
    if jwk.get("kty") == "oct":
        raise UnsupportedKey("symmetric keys are never used")  # HMAC is refused outright
    private = PRIVATE_MEMBERS.intersection(jwk)
    if private:  # PyJWT would build a private key from these
        raise JWKError("contains private key members")
    kty = jwk.get("kty")
    if kty == "EC":
        crv = _member(jwk, "crv")
        if crv not in _EC_SIZES:  # PyJWT also takes secp256k1
            raise UnsupportedKey("unsupported EC curve")
        x, y = _b64(jwk, "x"), _b64(jwk, "y")  # canonical base64url: PyJWT's decoder is lenient
        if len(x) != _EC_SIZES[crv] or len(y) != _EC_SIZES[crv]:
            raise JWKError("EC coordinates have the wrong length")
        return _from_jwk(ECAlgorithm, jwk, "EC point is not on the curve")
    if kty == "RSA":
        n = int.from_bytes(_b64(jwk, "n"), "big")
        e = int.from_bytes(_b64(jwk, "e"), "big")
        if n.bit_length() < MIN_RSA_BITS:  # PyJWT only warns, and only when verifying
            raise JWKError(f"RSA modulus shorter than {MIN_RSA_BITS} bits")
        if e < 3 or e % 2 == 0:  # PyJWT does not check the exponent
            raise JWKError("RSA exponent is invalid")
        return _from_jwk(RSAAlgorithm, jwk, "RSA key is invalid")
    if kty == "OKP":
        crv = _member(jwk, "crv")
        if crv not in _OKP_SIZES:
            raise UnsupportedKey("unsupported OKP curve")
        if len(_b64(jwk, "x")) != _OKP_SIZES[crv]:
            raise JWKError("OKP key has the wrong length")
        return _from_jwk(OKPAlgorithm, jwk, "OKP key is invalid")
    if isinstance(kty, str):
        raise UnsupportedKey("unsupported key type")
    raise JWKError("member 'kty' missing or not a string")


def _from_jwk(algorithm: type[ECAlgorithm | RSAAlgorithm | OKPAlgorithm], jwk: Mapping[str, Any], problem: str) -> Any:
    """PyJWT's JWK -> public key (cryptography checks an EC point is on its curve); errors become `problem`."""
    try:
        return algorithm.from_jwk(dict(jwk))
    except (jwt.PyJWTError, ValueError, TypeError):
        raise JWKError(problem) from None


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


def load_verification_key(
    jwk: Any, allowed: Collection[str], uses: Collection[str] = ("sig",)
) -> VerificationKey | None:
    """A JWKS entry as a verification key; None for keys not meant for signatures.

    `uses`: the `use` values that count (a SPIFFE bundle's JWT signing keys say `jwt-svid`).
    """
    if not isinstance(jwk, Mapping):
        raise JWKError("is not a JSON object")
    use = jwk.get("use")
    if use is not None and use not in uses:
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
