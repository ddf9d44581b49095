"""Fixtures for the token tests: one development issuer key (session-wide), extra keys,
a client certificate and an `Env` that builds verifiers and tokens for that issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pep.dev import tokens as devtoken
from tests.harness.tokens import ClientCert, Clock, Env, IssuerKeys, make_client_cert


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
def env(issuer_keys: IssuerKeys, tmp_path: Path) -> Iterator[Env]:
    e = Env(issuer_keys.key, issuer_keys.jwks_path, Clock(), tmp_path)
    yield e
    for v in e.verifiers:
        v.close()


@pytest.fixture(scope="session")
def client_cert(other_ec_key: ec.EllipticCurvePrivateKey) -> ClientCert:
    return make_client_cert(other_ec_key)


@pytest.fixture(scope="session")
def dpop_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    return devtoken.new_dpop_key()
