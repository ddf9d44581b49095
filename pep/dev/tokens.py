"""Development tokens: a local signing key, its JWKS, and tokens and DPoP proofs it signs.

For `pep token`, `make run` and tests only. Production tokens come from a real issuer.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pep.tokens.dpop import access_token_hash
from pep.tokens.jws import MAX_JSON_DEPTH, b64url_encode
from pep.tokens.thumbprint import jwk_thumbprint
from pep.tokens.verifier import split_scheme

__all__ = [
    "MAX_ACT_CHAIN",
    "PrivateKey",
    "alg_for_key",
    "ensure_dev_keys",
    "jwk_thumbprint",
    "load_private_key",
    "mint_dpop_proof",
    "mint_token",
    "new_dpop_key",
    "public_jwk",
    "sign_jws",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# The most agents a development token nests as `act` claims: the deepest chain pep reads in a
# token (its JSON nests at most MAX_JSON_DEPTH levels, the claims object being the first).
MAX_ACT_CHAIN = MAX_JSON_DEPTH - 1
KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"
_EC = {"secp256r1": ("P-256", 32, "ES256"), "secp384r1": ("P-384", 48, "ES384"), "secp521r1": ("P-521", 66, "ES512")}
_HASH: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def _int_b64(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


def public_jwk(key: Any) -> dict[str, str]:
    """The public JWK (no kid/alg/use) of a private or public EC, RSA or Ed25519 key."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        key = key.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv, size, _ = _EC[key.curve.name]
        numbers = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _int_b64(numbers.x, size), "y": _int_b64(numbers.y, size)}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": _int_b64(rsa_numbers.n), "e": _int_b64(rsa_numbers.e)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    raise TypeError(f"unsupported key type {type(key).__name__}")


def alg_for_key(key: PrivateKey) -> str:
    """The natural JWS algorithm of a key: ES256/384/512, RS256 or EdDSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC[key.curve.name][2]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "EdDSA"


def sign_jws(key: PrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any] | bytes) -> str:
    """Compact JWS of `payload` signed with `key` using `header["alg"]`."""
    alg = str(header["alg"])
    try:
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    except RecursionError:
        raise ValueError("the claims nest too deeply to encode") from None
    signing_input = (
        b64url_encode(json.dumps(dict(header), separators=(",", ":")).encode()) + "." + b64url_encode(body)
    ).encode("ascii")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _, size, _ = _EC[key.curve.name]
        der = key.sign(signing_input, ec.ECDSA(_HASH[alg[2:]]()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        digest = _HASH[alg[2:]]()
        pad: padding.AsymmetricPadding
        if alg.startswith("PS"):
            pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        else:
            pad = padding.PKCS1v15()
        signature = key.sign(signing_input, pad, digest)
    else:
        signature = key.sign(signing_input)
    return signing_input.decode("ascii") + "." + b64url_encode(signature)


def load_private_key(path: str) -> PrivateKey:
    with open(path, "rb") as f:
        pem = f.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        first = str(e).split(".")[0] or type(e).__name__
        raise ValueError(f"{path}: not an unencrypted PEM private key ({first})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _write_private(path: str, key: PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL with mode 0600: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _key_jwk(key: PrivateKey) -> dict[str, str]:
    jwk = public_jwk(key)
    return {**jwk, "kid": jwk_thumbprint(jwk), "alg": alg_for_key(key), "use": "sig"}


def ensure_dev_keys(directory: str) -> tuple[str, str]:
    """Create (if missing) an EC P-256 signing key and its `jwks.json` in `directory`."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key_path = os.path.join(directory, KEY_FILE)
    jwks_path = os.path.join(directory, JWKS_FILE)
    if not os.path.exists(key_path):
        try:
            _write_private(key_path, ec.generate_private_key(ec.SECP256R1()))
        except FileExistsError:
            pass  # created concurrently: use that one
    jwk = _key_jwk(load_private_key(key_path))
    try:
        with open(jwks_path, encoding="utf-8") as f:
            current = json.load(f)
        if jwk in current.get("keys", []):
            return key_path, jwks_path
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        pass  # missing or not ours: rewritten below
    tmp = f"{jwks_path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"keys": [jwk]}, f, indent=2)
        f.write("\n")
    os.replace(tmp, jwks_path)
    return key_path, jwks_path


def _names(value: Sequence[str], what: str, limit: int | None = None) -> Sequence[str]:
    """A sequence of non-empty strings; a lone string is refused rather than read as its characters."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list of strings, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what} has {len(value)} agents, more than the {limit} a development token nests")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{what} must hold non-empty strings, got {item!r:.80}")
    return value


def _nested_act(chain: Sequence[str]) -> dict[str, Any] | None:
    """The `act` claim of `chain`, built from the innermost out (no recursion)."""
    act: dict[str, Any] | None = None
    for actor in reversed(chain):
        act = {"sub": actor} if act is None else {"sub": actor, "act": act}
    return act


def mint_token(
    key_path: str,
    *,
    issuer: str,
    audience: str | list[str],
    sub: str,
    act_chain: Sequence[str] = (),
    client_id: str | None = None,
    scopes: Sequence[str] = (),
    ttl_seconds: int = 300,
    extra_claims: Mapping[str, Any] | None = None,
    dpop_jkt: str | None = None,
    x5t_s256: str | None = None,
    now: float | None = None,
    typ: str = "at+jwt",
) -> str:
    """A signed RFC 9068 access token. `act_chain` is current actor first, at most MAX_ACT_CHAIN
    agents; `act_chain` and `scopes` must be lists of non-empty strings (ValueError otherwise)."""
    _names(act_chain, "act_chain", MAX_ACT_CHAIN)
    _names(scopes, "scopes")
    key = load_private_key(key_path)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": sub,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": str(uuid.uuid4()),
        "client_id": client_id or (act_chain[0] if act_chain else sub),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    act = _nested_act(act_chain)
    if act is not None:
        claims["act"] = act
    cnf: dict[str, str] = {}
    if dpop_jkt is not None:
        cnf["jkt"] = dpop_jkt
    if x5t_s256 is not None:
        cnf["x5t#S256"] = x5t_s256
    if cnf:
        claims["cnf"] = cnf
    claims.update(extra_claims or {})
    jwk = _key_jwk(key)
    header = {"typ": typ, "alg": jwk["alg"], "kid": jwk["kid"]}
    return sign_jws(key, header, claims)


def new_dpop_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    """A fresh EC P-256 DPoP key and its public JWK."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, public_jwk(key)


def mint_dpop_proof(
    private_key: PrivateKey,
    public_jwk: Mapping[str, Any],
    *,
    htm: str,
    htu: str,
    access_token: str | None,
    now: float | None = None,
    jti: str | None = None,
    alg: str = "ES256",
    nonce: str | None = None,
) -> str:
    """A DPoP proof (RFC 9449 4.2) for one request; `ath` binds it to `access_token`; `nonce` is the
    server's (RFC 9449 8), when it asks for one."""
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": dict(public_jwk)}
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_urlsafe(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time() if now is None else now),
    }
    if access_token:
        claims["ath"] = access_token_hash(split_scheme(access_token)[1])
    if nonce:
        claims["nonce"] = nonce
    return sign_jws(private_key, header, claims)
