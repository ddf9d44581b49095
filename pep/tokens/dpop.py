"""DPoP proof checks for a resource server (RFC 9449 4.3, 7.1, 11.1).

Order: syntax, header (typ, alg, jwk), signature, claims
(jti, htm, htu, iat, ath), then the key binding (thumbprint == cnf.jkt), then the server's
nonce when the token's issuer asks for one (RFC 9449 8, pep/tokens/nonce.py), then the replay
cache last, so a proof that fails any other check never enters the cache.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from pep.algorithms import ALGORITHMS
from pep.config import TokenConfig
from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.cache import ReplayCache, ReplayStore
from pep.tokens.jwk import JWKError, key_fits_alg, public_key_from_jwk
from pep.tokens.jws import MalformedJWS, is_forbidden_alg, parse_compact, verify_signature
from pep.tokens.nonce import Nonces
from pep.tokens.thumbprint import jwk_thumbprint, sha256_b64url

DPOP_TYPES = ("dpop+jwt", "application/dpop+jwt")
MAX_JTI_BYTES = 256
# PyJWT honours crit (b64) and ignores the rest; the proof's key is its `jwk` header, nothing else.
_FORBIDDEN_HEADERS = ("crit", "jku", "x5u", "x5c")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_PORT = re.compile(r"^[0-9]{1,5}$")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _invalid(detail: str) -> TokenError:
    return TokenError(f"DPoP proof invalid: {detail}", Reason.DPOP_PROOF_INVALID)


def access_token_hash(access_token: str) -> str:
    """The `ath` value for a token: base64url SHA-256 of its ASCII octets."""
    return sha256_b64url(access_token.encode("ascii", errors="replace"))


def _normalize_pct(text: str) -> str:
    if _BAD_PCT.search(text):
        raise ValueError("bad percent-encoding")

    def repl(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PCT.sub(repl, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4."""
    out: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./"):
            rest = rest[2:]
        elif rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if out:
                out.pop()
        elif rest == "/..":
            rest = "/"
            if out:
                out.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            end = rest.find("/", 1 if rest.startswith("/") else 0)
            segment = rest if end < 0 else rest[:end]
            out.append(segment)
            rest = "" if end < 0 else rest[end:]
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def normalize_htu(uri: str) -> str | None:
    """RFC 3986 6.2.2 and 6.2.3 normal form of an http(s) URI without query and
    fragment, or None if it is not one."""
    if not uri or len(uri) > 8192 or any(c <= " " or c == "\x7f" for c in uri):
        return None
    uri = uri.split("#", 1)[0].split("?", 1)[0]
    match = _SCHEME.match(uri)
    if match is None:
        return None
    scheme = match.group(1).lower()
    rest = uri[match.end() :]
    if scheme not in _DEFAULT_PORTS or not rest.startswith("//"):
        return None
    rest = rest[2:]
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority or "%" in authority:
        return None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, port_part = authority[: end + 1], authority[end + 1 :]
        if port_part and not port_part.startswith(":"):
            return None
        port = port_part[1:]
    else:
        host, _, port = authority.partition(":")
    if not host or (port and not _PORT.match(port)):
        return None
    if port:
        if int(port) > 65535:
            return None
        port = str(int(port))
    if port == _DEFAULT_PORTS[scheme]:
        port = ""
    try:
        path = _remove_dot_segments(_normalize_pct(path)) or "/"
    except ValueError:
        return None
    return f"{scheme}://{host.lower()}{':' + port if port else ''}{path}"


@functools.lru_cache(maxsize=1024)
def _public_key(canonical_jwk: str) -> Any:
    """A client signs every proof with the same key: build (and check) it once.
    A JWKError propagates and nothing is cached."""
    return public_key_from_jwk(json.loads(canonical_jwk))


class DPoPVerifier:
    """Checks DPoP proofs and remembers their `jti`s (thread-safe)."""

    def __init__(self, config: TokenConfig, replay: ReplayStore | None = None) -> None:
        self._config = config
        self._allowed = frozenset(a for a in config.dpop_algorithms if a in ALGORITHMS)
        # This process's cache unless the composition root hands in the fleet's (`use_replay`).
        self.local_replay = ReplayCache(config.dpop_replay_cache_size)
        self._replay: ReplayStore = replay if replay is not None else self.local_replay
        self.nonces = Nonces(config.dpop_nonce_seconds, config.dpop_nonce_grace_seconds)

    def use_replay(self, replay: ReplayStore) -> None:
        """Remember proofs in `replay` from now on (the fleet's, in front of `local_replay`)."""
        self._replay = replay

    @staticmethod
    def _key(jwk: Mapping[str, Any]) -> Any:
        return _public_key(json.dumps(jwk, sort_keys=True, separators=(",", ":")))

    def check(
        self,
        proof: str,
        *,
        access_token: str | None,
        method: str,
        uri: str,
        jkt: str,
        now: float,
        nonce: bool = False,
    ) -> None:
        """Raise `TokenError` unless `proof` is a fresh, valid proof for this request,
        made with the key whose thumbprint is `jkt`. With an `access_token` (always, at
        a resource server) the proof's `ath` must be its hash; None skips that check. With
        `nonce` its `nonce` claim must be the server's (`NonceError` carries the current one)."""
        proof = proof.strip()
        if not proof:
            raise TokenError("DPoP-bound token presented without a DPoP proof", Reason.DPOP_PROOF_MISSING)
        try:
            jws = parse_compact(proof, self._config.max_token_bytes)
        except MalformedJWS as e:
            raise _invalid(str(e)) from None
        header, claims = jws.header, jws.payload
        jwk = self._check_header(header)
        try:
            key = self._key(jwk)
        except JWKError as e:
            raise _invalid(f"jwk {e}") from None
        # Pinned to the proof's alg, which the checks above tie to its jwk.
        if not verify_signature(header["alg"], key, jws.signing_input, jws.signature):
            raise _invalid("signature does not verify with the proof's jwk")
        htu, iat, jti = self._check_claims(claims, access_token=access_token, method=method, uri=uri, now=now)
        try:
            thumbprint = jwk_thumbprint(jwk)
        except ValueError:
            raise _invalid("jwk has no computable thumbprint") from None
        if not hmac.compare_digest(thumbprint.encode("ascii"), jkt.encode("ascii", errors="replace")):
            raise TokenError("DPoP proof key does not match the token's cnf.jkt", Reason.POP_BINDING_MISMATCH)
        if nonce:
            self.nonces.check(claims.get("nonce"), now)
        # One digest of the request URI, key and jti: also the fleet's Redis key (pep/state/shared.py).
        key_id = hashlib.sha256(f"{htu}\n{jkt}\n{jti}".encode()).digest()
        deadline = iat + self._config.dpop_max_age_seconds + 1
        if not self._replay.add(key_id, deadline, now):
            raise TokenError("DPoP proof jti was already used", Reason.DPOP_REPLAY)

    def _check_header(self, header: Mapping[str, Any]) -> Mapping[str, Any]:
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in DPOP_TYPES:
            raise _invalid("typ must be dpop+jwt")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise _invalid(f"header {name} is not allowed")
        alg = header.get("alg")
        # pep's table and config decide, not PyJWT's (which has none, HS* and more).
        if not isinstance(alg, str) or is_forbidden_alg(alg) or alg not in self._allowed:
            raise _invalid("alg is not an accepted asymmetric algorithm")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise _invalid("jwk header missing")
        if not key_fits_alg(jwk, alg):  # named apart: PyJWT would only report a failed signature
            raise _invalid("jwk does not fit alg")
        return jwk

    def _check_claims(
        self, claims: Mapping[str, Any], *, access_token: str | None, method: str, uri: str, now: float
    ) -> tuple[str, float, str]:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti.encode("utf-8")) > MAX_JTI_BYTES:
            raise _invalid(f"jti must be a string of 1 to {MAX_JTI_BYTES} bytes")
        htm = claims.get("htm")
        if not isinstance(htm, str) or not method or htm != method:
            raise _invalid("htm does not match the request method")
        htu = claims.get("htu")
        proof_uri = normalize_htu(htu) if isinstance(htu, str) else None
        request_uri = normalize_htu(uri)
        if proof_uri is None or request_uri is None or proof_uri != request_uri:
            raise _invalid("htu does not match the request URI")
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise _invalid("iat must be a number")
        if iat < now - self._config.dpop_max_age_seconds:
            raise _invalid("proof is too old (iat)")
        if iat > now + self._config.dpop_future_skew_seconds:
            raise _invalid("proof is issued in the future (iat)")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str):
                raise _invalid("ath missing")
            expected = access_token_hash(access_token)
            if not hmac.compare_digest(ath.encode("utf-8"), expected.encode("ascii")):
                raise _invalid("ath does not match the access token")
        return request_uri, float(iat), jti
