"""Certificates for the mTLS tests: a CA, servers and clients, with their RFC 8705 and XFCC digests."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.forge import b64


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
    return Cert(key, cert, pem, b64(digest), digest.hex())
