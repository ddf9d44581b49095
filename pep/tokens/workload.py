"""What the `spiffe` and `txntoken` profiles need beyond the profile table (pep/tokens/profiles.py).

SPIFFE JWT-SVIDs (spiffe/spiffe standards/JWT-SVID.md): `sub` is the workload's SPIFFE ID,
`spiffe://<trust domain>/<path>` (standards/SPIFFE-ID.md); `iss` is optional, so an SVID without
one is matched to the spiffe issuer whose `trust_domain` is its `sub`'s; an SVID whose `sub` is
outside its issuer's trust domain is `token_issuer_untrusted`.

Transaction tokens (draft-ietf-oauth-transaction-tokens): typ `txntoken+jwt`; `iss` is optional
too (a Txn-Token is bound to the trust domain its `aud` names), so one without `iss` is matched
to the one txntoken issuer whose `audiences` name its `aud`. `tctx`, `rctx` (objects) and `purp`
(a string, from earlier drafts) reach policies as `context.token.transaction`; a value Cedar has
no value for is `token_claims_missing`, naming the claim path, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pep.config import IssuerConfig
from pep.errors import ConfigError, TokenError
from pep.reasons import Reason
from pep.tokens.profile_model import Profile
from pep.uids import spiffe_trust_domain

SPIFFE = "spiffe"
TXNTOKEN = "txntoken"
TXNTOKEN_TYP = "txntoken+jwt"
# Cedar JSON escapes: a claim that holds one would make Cedar read an entity or an extension call.
_ESCAPES = frozenset({"__entity", "__extn", "__expr"})
_LONG = (-(2**63), 2**63 - 1)
MAX_DEPTH = 32


class WorkloadIssuers:
    """The spiffe issuers by trust domain and the txntoken issuers, to place a token without `iss`."""

    def __init__(self, issuers: Sequence[IssuerConfig]) -> None:
        self._by_domain: dict[str, str] = {}
        self._txn: list[IssuerConfig] = []
        for i, issuer in enumerate(issuers):
            if issuer.profile == SPIFFE:
                if issuer.trust_domain in self._by_domain:
                    other = self._by_domain[issuer.trust_domain]
                    problem = f"{issuer.trust_domain!r} is already the trust domain of {other}"
                    raise ConfigError(f"issuers[{i}].trust_domain", problem)
                self._by_domain[issuer.trust_domain] = issuer.issuer
            elif issuer.profile == TXNTOKEN:
                self._txn.append(issuer)

    def issuer_for(self, payload: Mapping[str, Any], typ: str) -> str | None:
        """The configured issuer of an SVID or a Txn-Token without `iss` (unverified: only picks the keys).

        None when the token is neither (the caller reports the missing `iss`); raises when it is one
        that no configured issuer matches.
        """
        if typ == TXNTOKEN_TYP and self._txn:
            aud = payload.get("aud")
            values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            found = [t.issuer for t in self._txn if any(a in t.audiences for a in values if isinstance(a, str))]
            if len(found) != 1:
                why = "no" if not found else "more than one"
                raise TokenError(f"transaction token without iss: {why} txntoken issuer names its aud", _UNTRUSTED)
            return found[0]
        if self._by_domain and typ != TXNTOKEN_TYP:
            sub = payload.get("sub")
            domain = spiffe_trust_domain(sub)
            if domain is not None:
                issuer = self._by_domain.get(domain)
                if issuer is None:
                    raise TokenError("no spiffe issuer is configured for the SVID's trust domain", _UNTRUSTED)
                return issuer
        return None


_UNTRUSTED = Reason.TOKEN_ISSUER_UNTRUSTED


def _claims_error(detail: str) -> TokenError:
    return TokenError(detail, Reason.TOKEN_CLAIMS_MISSING)


def check_workload_claims(claims: Mapping[str, Any], issuer: IssuerConfig, profile: Profile) -> None:
    """The spiffe and txntoken profiles' own claim rules, on a signature-verified claim set."""
    if profile.name == SPIFFE:
        domain = spiffe_trust_domain(claims.get("sub"))
        if domain is None:
            raise _claims_error("claim sub must be a SPIFFE ID (spiffe://<trust domain>/<path>)")
        if domain != issuer.trust_domain:
            raise TokenError("the SVID's SPIFFE ID is outside the issuer's trust domain", _UNTRUSTED)
    elif profile.name == TXNTOKEN:
        for name in ("txn", "req_wl", "purp"):
            if name in claims and (not isinstance(claims[name], str) or not claims[name]):
                raise _claims_error(f"claim {name} must be a non-empty string")
        for name in ("tctx", "rctx"):
            if name in claims:
                if not isinstance(claims[name], dict):
                    raise _claims_error(f"claim {name} must be an object")
                cedar_claim(claims[name], name)


def transaction_context(claims: Mapping[str, Any], profile: Profile) -> dict[str, Any] | None:
    """`context.token.transaction` of a transaction token (None for any other): always all three keys."""
    if profile.name != TXNTOKEN:
        return None
    return {
        "tctx": cedar_claim(claims.get("tctx", {}), "tctx"),
        "rctx": cedar_claim(claims.get("rctx", {}), "rctx"),
        "purp": claims.get("purp", ""),
    }


def cedar_claim(value: Any, where: str, depth: int = 0) -> Any:
    """A claim's JSON value as a Cedar value (a copy), or `token_claims_missing` naming the path."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _LONG[0] <= value <= _LONG[1]:
            raise _claims_error(f"claim {where} is outside Cedar's Long range")
        return value
    if isinstance(value, float):
        if value.is_integer() and _LONG[0] <= value <= _LONG[1]:
            return int(value)
        raise _claims_error(f"claim {where} is not a whole number (Cedar has no floating-point numbers)")
    if depth >= MAX_DEPTH:
        raise _claims_error(f"claim {where} nests deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _ESCAPES:
                raise _claims_error(f"claim {where}.{k} is a Cedar escape, not a value")
            out[k] = cedar_claim(v, f"{where}.{k}", depth + 1)
        return out
    if isinstance(value, list):
        return [cedar_claim(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _claims_error(f"claim {where} is null, which has no Cedar value")
