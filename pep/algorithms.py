"""The one table of JWS algorithms pep accepts: asymmetric signatures only.

HMAC and `none` have no entry on purpose: a shared secret or no signature can never
prove who issued a token. Config checks `algorithms` lists against this table (README,
Configuration) and the token verifier binds keys with it. Pure data: imports nothing from pep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class AlgSpec:
    """What a JWS `alg` means: key type, signature family, hash and the curves it allows."""

    kty: str  # JWK key type: "RSA", "EC", "OKP"
    family: str  # "RS" (PKCS#1 v1.5), "PS" (PSS), "ES" (ECDSA), "EdDSA"
    hash_name: str | None = None  # "SHA256" / "SHA384" / "SHA512"; None for EdDSA
    curves: tuple[str, ...] = ()  # JWK `crv` values; empty for RSA


ALGORITHMS: Mapping[str, AlgSpec] = MappingProxyType(
    {
        "RS256": AlgSpec("RSA", "RS", "SHA256"),
        "RS384": AlgSpec("RSA", "RS", "SHA384"),
        "RS512": AlgSpec("RSA", "RS", "SHA512"),
        "PS256": AlgSpec("RSA", "PS", "SHA256"),
        "PS384": AlgSpec("RSA", "PS", "SHA384"),
        "PS512": AlgSpec("RSA", "PS", "SHA512"),
        "ES256": AlgSpec("EC", "ES", "SHA256", ("P-256",)),
        "ES384": AlgSpec("EC", "ES", "SHA384", ("P-384",)),
        "ES512": AlgSpec("EC", "ES", "SHA512", ("P-521",)),
        # RFC 8037's polymorphic name, and RFC 9864's fully specified name for Ed25519.
        "EdDSA": AlgSpec("OKP", "EdDSA", None, ("Ed25519", "Ed448")),
        "Ed25519": AlgSpec("OKP", "EdDSA", None, ("Ed25519",)),
    }
)

SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(ALGORITHMS)
