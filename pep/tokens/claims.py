"""Checks on a signature-verified claim set (RFC 9068 section 2.2 and 4, RFC 7519 4.1).

Each check raises `TokenError` with the reason the verifier reports; the detail names
the claim, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.profiles import ID_TOKEN_CLAIMS, Profile
from pep.tokens.thumbprint import decode_sha256_b64url

_NUMBER_CLAIMS = ("exp", "iat", "nbf", "auth_time")
_STRING_CLAIMS = ("iss", "sub", "client_id", "azp", "jti")
_OBJECT_CLAIMS = ("act", "cnf", "may_act")
CNF_JKT = "jkt"
CNF_X5T = "x5t#S256"


def _claims_error(detail: str) -> TokenError:
    return TokenError(detail, Reason.TOKEN_CLAIMS_MISSING)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_types(claims: Mapping[str, Any]) -> None:
    """Registered claims, when present, must have their JSON type."""
    for name in _NUMBER_CLAIMS:
        if name in claims and not is_number(claims[name]):
            raise _claims_error(f"claim {name} must be a number")
    for name in _STRING_CLAIMS:
        if name in claims:
            value = claims[name]
            if not isinstance(value, str) or not value:
                raise _claims_error(f"claim {name} must be a non-empty string")
    for name in _OBJECT_CLAIMS:
        if name in claims and not isinstance(claims[name], dict):
            raise _claims_error(f"claim {name} must be an object")
    if "aud" in claims:
        aud = claims["aud"]
        if isinstance(aud, list):
            if not all(isinstance(a, str) for a in aud):
                raise _claims_error("claim aud must be a string or a list of strings")
        elif not isinstance(aud, str):
            raise _claims_error("claim aud must be a string or a list of strings")
    if "scope" in claims and not isinstance(claims["scope"], str):
        raise _claims_error("claim scope must be a space-separated string")
    if "scp" in claims:
        scp = claims["scp"]
        ok = isinstance(scp, str) or (isinstance(scp, list) and all(isinstance(s, str) for s in scp))
        if not ok:
            raise _claims_error("claim scp must be a string or a list of strings")


def check_required(claims: Mapping[str, Any], required: Sequence[str]) -> None:
    """Each name present; `client_id` is also satisfied by `azp`, and "a|b" by either."""
    for name in required:
        if name in claims:
            continue
        if name == "client_id" and "azp" in claims:
            continue
        if "|" in name and any(part in claims for part in name.split("|")):
            continue
        shown = " or ".join(name.split("|"))
        raise _claims_error(f"required claim {shown} is missing")


def check_profile(claims: Mapping[str, Any], profile: Profile) -> None:
    """What the issuer's profile says an access token of its IdP looks like (pep/tokens/profiles.py)."""
    for name, value in profile.expect:
        if claims.get(name) != value:
            raise TokenError(f"claim {name} must be {value!r} in an access token", Reason.TOKEN_TYPE_INVALID)
    if profile.refuse_id_tokens:
        for name in ID_TOKEN_CLAIMS:
            if name in claims:
                raise TokenError(f"an ID token ({name}) is not an access token", Reason.TOKEN_TYPE_INVALID)
    for name in (*profile.agent, *profile.user):
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            raise _claims_error(f"claim {name} must be a non-empty string")
    for name in profile.scopes:
        found = claims.get(name)
        if found is None or isinstance(found, (str, dict)):
            continue
        if not isinstance(found, list) or not all(isinstance(s, str) for s in found):
            raise _claims_error(f"claim {name} must be a string or a list of strings")


def first_string(claims: Mapping[str, Any], names: Sequence[str]) -> str:
    """The first of `names` present as a non-empty string, else "" (a dotted name may be a path: `rctx.req_wl`)."""
    for name in names:
        value = claim_value(claims, name)
        if isinstance(value, str) and value:
            return value
    return ""


def is_app_only(claims: Mapping[str, Any], profile: Profile, agent: str) -> bool:
    """Whether the profile says this token is the agent acting alone (client credentials)."""
    if not profile.users:
        return True
    for rule in profile.app_only:
        if rule.value is None:
            if rule.claim not in claims:
                return True
        elif agent and claims.get(rule.claim) == rule.value.format(agent=agent.lower() if rule.lower else agent):
            return True
    return False


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name not present as such is a path (Keycloak's `realm_access.roles`)."""
    if name in claims or "." not in name:
        return claims.get(name)
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def names_of(value: Any, sep: str | None = None) -> tuple[str, ...]:
    """Names from a `sep`-separated string (None: any whitespace), a list of strings, or an object's keys."""
    if isinstance(value, str):
        return tuple(v for v in value.split(sep) if v)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str) and v)
    if isinstance(value, Mapping):
        return tuple(k for k in value if isinstance(k, str) and k)
    return ()


def check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """exp, then nbf and iat. Also re-run on every cache hit."""
    exp = claims.get("exp")
    if exp is not None and now >= exp + leeway:
        raise TokenError("token has expired", Reason.TOKEN_EXPIRED)
    nbf = claims.get("nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenError("token is not valid yet (nbf)", Reason.TOKEN_NOT_YET_VALID)
    iat = claims.get("iat")
    if iat is not None and iat > now + leeway:
        raise TokenError("token issued in the future (iat)", Reason.TOKEN_NOT_YET_VALID)


def check_audience(claims: Mapping[str, Any], audiences: Sequence[str], claim: str = "aud") -> None:
    """`aud` (or, for an IdP without it, the profile's claim naming the intended client) names this service."""
    aud = claims.get(claim)
    values = [aud] if isinstance(aud, str) else list(aud or ())
    if not any(a in audiences for a in values):
        raise TokenError("audience does not name this service", Reason.TOKEN_AUDIENCE_INVALID)


def check_lifetime(claims: Mapping[str, Any], now: float, max_lifetime: float) -> None:
    """exp - iat bounded; without iat, the time left is bounded instead."""
    exp = claims.get("exp")
    if exp is None:
        return
    start = claims.get("iat", now)
    if exp - start > max_lifetime:
        raise _claims_error(f"token lifetime exceeds {int(max_lifetime)} seconds")


@dataclass(frozen=True)
class Binding:
    kind: str  # "dpop" | "mtls" | "bearer"
    jkt: str = ""
    x5t_digest: bytes = b""


BEARER = Binding("bearer")


def binding_of(claims: Mapping[str, Any]) -> Binding:
    """The token's proof-of-possession binding from `cnf` (RFC 9449 6.1, RFC 8705 3.1)."""
    cnf = claims.get("cnf")
    if cnf is None:
        return BEARER
    if not isinstance(cnf, dict):
        raise _claims_error("claim cnf must be an object")
    members = set(cnf)
    if members == {CNF_JKT}:
        jkt = cnf[CNF_JKT]
        try:
            decode_sha256_b64url(jkt if isinstance(jkt, str) else "")
        except ValueError:
            raise _claims_error("cnf.jkt is not a base64url SHA-256 thumbprint") from None
        return Binding("dpop", jkt=jkt)
    if members == {CNF_X5T}:
        x5t = cnf[CNF_X5T]
        try:
            digest = decode_sha256_b64url(x5t if isinstance(x5t, str) else "")
        except ValueError:
            raise _claims_error("cnf.x5t#S256 is not a base64url SHA-256 thumbprint") from None
        return Binding("mtls", x5t_digest=digest)
    if {CNF_JKT, CNF_X5T} <= members:
        raise _claims_error("cnf binds the token to both a DPoP key and a certificate")
    raise _claims_error("cnf holds no supported confirmation method (jkt or x5t#S256 only)")


def scopes_of(claims: Mapping[str, Any], names: Sequence[str] = ("scope", "scp")) -> frozenset[str]:
    """The first of `names` present: `scope` (space-separated, RFC 8693 4.2), `scp` (string or list), ..."""
    for name in names:
        raw = claim_value(claims, name)
        if raw is not None:
            return frozenset(names_of(raw, " "))
    return frozenset()
