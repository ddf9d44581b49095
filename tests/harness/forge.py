"""Forging good and bad tokens and proofs, for the token tests and the golden cases.

Everything here signs or assembles JWS by hand so a test can break exactly one thing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pep.dev.tokens import PrivateKey, alg_for_key, public_jwk, sign_jws
from pep.tokens.thumbprint import jwk_thumbprint

ISSUER = "https://issuer.test"
AUDIENCE = "https://pep.test"
NOW = 1_800_000_000


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()
"""Claim or header value meaning "leave this member out"."""


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")))


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is OMIT:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def kid_of(key: PrivateKey) -> str:
    return jwk_thumbprint(public_jwk(key))


def good_claims(now: float = NOW, **changes: Any) -> dict[str, Any]:
    """A claim set the test issuer's verifier accepts at `now`."""
    base = {
        "iss": ISSUER,
        "sub": "alice@example.com",
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": "jti-0001",
        "client_id": "billing-bot",
        "scope": "read write",
        "act": {"sub": "billing-bot"},
    }
    return merge(base, changes)


def good_header(key: PrivateKey, **changes: Any) -> dict[str, Any]:
    return merge({"typ": "at+jwt", "alg": alg_for_key(key), "kid": kid_of(key)}, changes)


def token(key: PrivateKey, claims: Mapping[str, Any] | None = None, **header_changes: Any) -> str:
    """A properly signed token; `header_changes` edit the header (OMIT removes)."""
    header = good_header(key, **header_changes)
    return sign_jws(key, header, dict(claims if claims is not None else good_claims()))


def sign_raw(key: PrivateKey, header_json: str, payload_json: str) -> str:
    """Sign arbitrary header/payload text (duplicate names, odd spacing, ...).

    The signature is made with the key's natural algorithm whatever the header says.
    """
    return sign_segments(key, b64(header_json), b64(payload_json))


def sign_segments(key: PrivateKey, h64: str, p64: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    """Sign already-encoded segments (RS256 for RSA keys)."""
    data = f"{h64}.{p64}".encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_hash_for_curve(key))))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(data)
    return f"{h64}.{p64}.{b64(sig)}"


def _hash_for_curve(key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]


def alg_none(claims: Mapping[str, Any], alg: str = "none", signature: str = "") -> str:
    """An unsecured JWS (RFC 7515 A.5); `signature` may be non-empty to pass the shape check."""
    return f"{b64json({'typ': 'at+jwt', 'alg': alg})}.{b64json(dict(claims))}.{signature}"


def hmac_with_public_key(claims: Mapping[str, Any], public_pem: bytes, kid: str, alg: str = "HS256") -> str:
    """The RFC 8725 2.1 confusion attack: HMAC keyed with the issuer's public key."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg.upper()]
    h, p = b64json({"typ": "at+jwt", "alg": alg, "kid": kid}), b64json(dict(claims))
    mac = hmac.new(public_pem, f"{h}.{p}".encode(), digest).digest()
    return f"{h}.{p}.{b64(mac)}"


def unknown_kid(key: PrivateKey, claims: Mapping[str, Any] | None = None) -> str:
    return token(key, claims, kid="no-such-key")


def segments(tok: str) -> list[str]:
    return tok.split(".")


def tamper_payload(tok: str, **changes: Any) -> str:
    """Replace claims but keep the original signature."""
    h, p, s = segments(tok)
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    return f"{h}.{b64json(merge(claims, changes))}.{s}"


def tamper_header(tok: str, **changes: Any) -> str:
    h, p, s = segments(tok)
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    return f"{b64json(merge(header, changes))}.{p}.{s}"


def tamper_signature(tok: str) -> str:
    """Flip one bit in the middle of the signature (keeps canonical base64url)."""
    h, p, s = segments(tok)
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{h}.{p}.{b64(bytes(raw))}"


def truncate_signature(tok: str, drop_bytes: int) -> str:
    h, p, s = segments(tok)
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    return f"{h}.{p}.{b64(raw[:-drop_bytes])}"


def oversize(key: PrivateKey, size: int) -> str:
    """A validly signed token of at least `size` characters."""
    return token(key, good_claims(padding="x" * size))


def decode_segment(seg: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
