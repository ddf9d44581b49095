"""Shared helpers for the ext_authz tests: CheckRequests, certificates, a pep to ask."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pep._proto.envoy.service.auth.v3 import external_auth_pb2 as ea
from pep._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from pep.tokens.jws import b64url_encode
from tests.grpc.conftest import Harness, harness_factory, pep  # noqa: F401 - fixtures

HOST = "api.example.com"


def check_request(
    method: str = "GET",
    path: str = "/docs/plan",
    *,
    headers: dict[str, str] | None = None,
    host: str = HOST,
    scheme: str = "https",
    certificate: str = "",
    extensions: dict[str, str] | None = None,
    request_id: str = "req-1",
) -> ea.CheckRequest:
    req = ea.CheckRequest()
    http = req.attributes.request.http
    http.id, http.method, http.path, http.host, http.scheme = request_id, method, path, host, scheme
    http.protocol = "HTTP/1.1"
    for k, v in (headers or {}).items():
        http.headers[k] = v
    req.attributes.source.certificate = certificate
    for k, v in (extensions or {}).items():
        req.attributes.context_extensions[k] = v
    return req


def mapped_headers(headers: dict[str, str] | None = None, action: str = "read", resource: str = 'Doc::"plan"'):
    return {"x-pep-action": action, "x-pep-resource": resource, **(headers or {})}


def header_values(options: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for option in options:
        out.setdefault(option.header.key, []).append(option.header.value)
    return out


@dataclass
class Ext:
    h: Harness
    stub: ea_grpc.AuthorizationStub

    def check(self, req: ea.CheckRequest) -> ea.CheckResponse:
        return self.stub.Check(req, timeout=10)


@pytest.fixture
def ext_factory(harness_factory: Callable[..., Harness]) -> Callable[..., Ext]:  # noqa: F811
    def make(**overrides: Any) -> Ext:
        h = harness_factory(**overrides)
        return Ext(h, ea_grpc.AuthorizationStub(h.channel))

    return make


@pytest.fixture
def ext(ext_factory: Callable[..., Ext]) -> Ext:
    return ext_factory()


@dataclass(frozen=True)
class Cert:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem: str
    x5t: str  # base64url SHA-256 of the DER (RFC 8705)
    hex: str  # hex SHA-256 of the DER (Envoy XFCC Hash=)

    def write(self, directory: Path, name: str) -> tuple[str, str]:
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_text(self.pem)
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return str(cert_path), str(key_path)


def make_cert(
    cn: str,
    *,
    issuer: Cert | None = None,
    ca: bool = False,
    server: bool = False,
) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://test/{cn}")]), False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    digest = hashlib.sha256(der).digest()
    return Cert(key, cert, pem, b64url_encode(digest), digest.hex())
