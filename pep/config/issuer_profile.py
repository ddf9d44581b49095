"""`issuers[].profile`, `claims`, `required_claims`, `accept_typ`: checked here, applied in pep/tokens/profiles.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pep.config.sections import PROFILES, IssuerClaims
from pep.errors import ConfigError
from pep.uids import TRUST_DOMAIN

CLAIM_KEYS = ("agent", "user", "scopes", "groups")
# typ is typing, not proof: a profile may accept at+jwt, JWT or no typ, never dpop+jwt or an ID token's.
ACCEPTABLE_TYPS = ("at+jwt", "jwt", "")


def profile_fields(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The profile keys of one `issuers[i]` mapping, checked, as IssuerConfig keyword arguments."""
    out: dict[str, Any] = {}
    if "profile" in item:
        name = item["profile"]
        if not isinstance(name, str) or name not in PROFILES:
            raise ConfigError(f"{key}.profile", f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        out["profile"] = name
    if "claims" in item:
        out["claims"] = _claims(item["claims"], f"{key}.claims")
    if "required_claims" in item:
        out["required_claims"] = _names(item["required_claims"], f"{key}.required_claims", allow_empty=True)
        for name in out["required_claims"]:
            if any(not part for part in name.split("|")):
                raise ConfigError(f"{key}.required_claims", f"{name!r}: 'a|b' needs a claim on each side")
    if "accept_typ" in item:
        if out.get("profile") == "txntoken":
            raise ConfigError(f"{key}.accept_typ", "a txntoken issuer's tokens are typ txntoken+jwt, always")
        out["accept_typ"] = _typs(item["accept_typ"], f"{key}.accept_typ")
    spiffe = out.get("profile") == "spiffe"
    if "trust_domain" in item:
        if not spiffe:
            raise ConfigError(f"{key}.trust_domain", "is for profile: spiffe only")
        out["trust_domain"] = _trust_domain(item["trust_domain"], f"{key}.trust_domain")
    elif spiffe:
        raise ConfigError(f"{key}.trust_domain", "is required for profile: spiffe (e.g. example.org)")
    return out


def _trust_domain(value: Any, key: str) -> str:
    """A SPIFFE trust domain name (SPIFFE-ID 2.1): lower-case letters, digits, '.', '-', '_'; at most 255."""
    if isinstance(value, str) and value.startswith("spiffe://"):
        value = value[len("spiffe://") :].rstrip("/")
    if not isinstance(value, str) or not TRUST_DOMAIN.fullmatch(value):
        raise ConfigError(
            key, f"must be a SPIFFE trust domain name (lower-case letters, digits, '.', '-', '_'), got {value!r}"
        )
    return value


def _claims(value: Any, key: str) -> IssuerClaims:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping with {', '.join(CLAIM_KEYS)}, got {value!r}")
    for name in value:
        if name not in CLAIM_KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key (known: {', '.join(CLAIM_KEYS)})")
    kw = {}
    for name in CLAIM_KEYS:
        if name in value:
            # `user: []` means "this issuer's tokens name no user"; an empty agent list finds no agent.
            kw[name] = _names(value[name], f"{key}.{name}", allow_empty=name in ("user", "groups", "scopes"))
    return IssuerClaims(**kw)


def _names(value: Any, key: str, *, allow_empty: bool) -> tuple[str, ...]:
    """A claim name or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(key, f"must be a claim name or a list of claim names, got {value!r}")
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(key, f"must hold non-empty claim names, got {item!r}")
    if not items and not allow_empty:
        raise ConfigError(key, "must name at least one claim")
    return tuple(dict.fromkeys(items))


def _typs(value: Any, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(key, f'must be a non-empty list of typ values ("" for no typ), got {value!r}')
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(key, f'must hold strings ("" for no typ), got {item!r}')
        typ = item.lower()
        typ = typ[len("application/") :] if typ.startswith("application/") else typ
        if typ not in ACCEPTABLE_TYPS:
            raise ConfigError(
                key,
                f'{item!r} is not an access token type (allowed: at+jwt, JWT, "" for none; dpop+jwt and ID '
                "token types are never accepted)",
            )
        out.append(typ)
    return tuple(dict.fromkeys(out))
