"""Fixtures for the token tests: one development issuer key (session-wide), extra keys,
a settable clock and an `Env` that builds verifiers and tokens for that issuer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pep.config import IssuerConfig, TokenConfig
from pep.dev import tokens as devtoken
from pep.dev.tokens import PrivateKey
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken
from tests.tokens import forge


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


@pytest.fixture(scope="session")
def issuer_keys(tmp_path_factory: pytest.TempPathFactory) -> IssuerKeys:
    directory = tmp_path_factory.mktemp("issuer")
    key_path, jwks_path = devtoken.ensure_dev_keys(str(directory))
    return IssuerKeys(devtoken.load_private_key(key_path), key_path, jwks_path)


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def env(issuer_keys: IssuerKeys, tmp_path: Path) -> Any:
    e = Env(issuer_keys.key, issuer_keys.jwks_path, Clock(), tmp_path)
    yield e
    for v in e.verifiers:
        v.close()


@dataclass(frozen=True)
class ClientCert:
    pem: str
    der: bytes
    x5t: str  # base64url SHA-256 of the DER


@pytest.fixture(scope="session")
def client_cert(other_ec_key: ec.EllipticCurvePrivateKey) -> ClientCert:
    import datetime
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-bot")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other_ec_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(other_ec_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return ClientCert(pem, der, forge.b64(hashlib.sha256(der).digest()))


@pytest.fixture(scope="session")
def dpop_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    return devtoken.new_dpop_key()
