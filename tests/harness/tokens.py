"""Building verifiers and tokens for one test issuer: a settable clock, JWKS files and `Env`."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.dev.tokens import PrivateKey
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from tests.harness import forge


class Clock:
    def __init__(self, now: float = forge.NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class IssuerKeys:
    key: PrivateKey
    key_path: str
    jwks_path: str


def write_jwks(directory: Path, name: str, keys: Sequence[PrivateKey | dict[str, Any]], **extra: Any) -> str:
    """A JWKS file of the public halves of `keys` (kid = thumbprint, alg = natural alg)."""
    entries = []
    for key in keys:
        if isinstance(key, dict):
            entries.append(key)
            continue
        jwk = devtoken.public_jwk(key)
        entries.append({**jwk, "kid": forge.kid_of(key), "alg": devtoken.alg_for_key(key), **extra})
    path = directory / name
    path.write_text(json.dumps({"keys": entries}))
    return str(path)


@dataclass
class Env:
    key: PrivateKey
    jwks_path: str
    clock: Clock
    tmp: Path
    verifiers: list[TokenVerifier] = field(default_factory=list)

    def verifier(
        self,
        *,
        algorithms: Sequence[str] = ("ES256",),
        audiences: Sequence[str] = (forge.AUDIENCE,),
        jwks_path: str | None = None,
        issuer: str = forge.ISSUER,
        cache_size: int = 1000,
        **config: Any,
    ) -> TokenVerifier:
        cfg = replace(TokenConfig(), **config)
        issuers = [IssuerConfig(issuer, tuple(audiences), tuple(algorithms), jwks_file=jwks_path or self.jwks_path)]
        v = TokenVerifier(issuers, cfg, clock=self.clock, cache_size=cache_size)
        self.verifiers.append(v)
        return v

    def claims(self, **changes: Any) -> dict[str, Any]:
        return forge.good_claims(self.clock.now, **changes)

    def token(self, claims: dict[str, Any] | None = None, **header: Any) -> str:
        return forge.token(self.key, claims if claims is not None else self.claims(), **header)

    def verify(self, token: str, verifier: TokenVerifier | None = None, **creds: Any) -> VerifiedToken:
        return (verifier or self.verifier()).verify(Credentials(token, **creds))


@dataclass(frozen=True)
class ClientCert:
    pem: str
    der: bytes
    x5t: str  # base64url SHA-256 of the DER


def make_client_cert(key: ec.EllipticCurvePrivateKey) -> ClientCert:
    """A self-signed client certificate for `key` (CN billing-bot, the forge's client_id)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-bot")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return ClientCert(pem, der, forge.b64(hashlib.sha256(der).digest()))
