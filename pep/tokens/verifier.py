"""Access-token verification: RFC 9068 / RFC 8725 checks plus proof of possession.

Pipeline (first failure wins, one reason code each):

1. scheme prefix (`Bearer ` / `DPoP `, any case), emptiness, size;
2. verified-token cache, keyed on the whole token (time claims re-checked on a hit);
3. strict compact JWS parse (pep's, stricter than PyJWT's); forbidden headers (`crit`,
   `cty`, `jku`, `x5u`, `x5c`, `jwk`);
4. `alg` never `none` or HMAC; `typ` one some issuer accepts (`at+jwt` by default);
5. unverified `iss` -> configured issuer (only to pick the key set); `typ` one its profile
   accepts; `alg` on that issuer's list; key by `kid` (one rate-limited refresh when
   unknown); header `alg` equals the key's bound algorithm; signature (PyJWT, pinned to
   that one algorithm);
6. claims: JSON types, the profile's shape (pep/tokens/profiles.py), required claims, exp,
   nbf/iat, aud (or the profile's audience claim), lifetime, `cnf`;
7. proof of possession, on every call: DPoP (`cnf.jkt`) or mTLS (`cnf["x5t#S256"]`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pep.algorithms import ALGORITHMS
from pep.config import IssuerConfig, TokenConfig
from pep.errors import ConfigError, TokenError
from pep.reasons import Reason
from pep.tokens.cache import ExpiringLRU, ReplayStore
from pep.tokens.claims import (
    Binding,
    binding_of,
    check_audience,
    check_lifetime,
    check_profile,
    check_required,
    check_times,
    check_types,
    first_string,
    is_app_only,
    scopes_of,
)
from pep.tokens.dpop import DPoPVerifier
from pep.tokens.jwks import (
    ALG_MISMATCH,
    BAD_SIGNATURE,
    NO_KEY_FOR_KID,
    NO_KEYS,
    Fetcher,
    KeySet,
    KeySource,
    RefreshHook,
    RemoteKeySource,
    key_uses,
    verifying_keys,
)
from pep.tokens.jwks_file import FileKeySource
from pep.tokens.jws import (
    CompactJWS,
    MalformedJWS,
    is_forbidden_alg,
    parse_compact,
    unsecured_alg,
)
from pep.tokens.mtls import check_certificate_binding
from pep.tokens.nonce import Nonces
from pep.tokens.profiles import PROFILES, Profile, normalise_typ, resolve
from pep.tokens.status_list import StatusLists
from pep.tokens.workload import WorkloadIssuers, check_workload_claims

log = logging.getLogger("pep.tokens")

_SCHEME = re.compile(r"^(bearer|dpop)(?:[ \t]+|$)", re.I)
# PyJWT ignores these; a key the token points to or carries itself proves nothing.
_FORBIDDEN_HEADERS = ("jku", "x5u", "x5c", "jwk")
MAX_KID_LENGTH = 256
# Tokens without `exp` (only possible if `exp` is dropped from required_claims).
NO_EXP_CACHE_SECONDS = 60.0
DEFAULT_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Credentials:
    token: str
    dpop_proof: str = ""
    http_method: str = ""
    http_uri: str = ""
    client_cert_thumbprint: str = ""
    # The one audience this entry point accepts (the MCP proxy's resource), over the issuer's `audiences`.
    audience: str = ""


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    claims: Mapping[str, Any]
    header: Mapping[str, Any]
    binding: str
    scopes: frozenset[str]
    client_id: str
    jti: str
    issued_at: int
    expires_at: int
    # The user claim's value per the issuer's profile ("" when it names none).
    user: str = ""
    # The profile says this is the agent acting alone (client credentials), whatever `sub` is.
    app_only: bool = False
    profile: Profile = PROFILES["rfc9068"]
    dpop_nonce: str = ""  # the server's current DPoP nonce for the answer (a `dpop_nonce` issuer's DPoP token)


@dataclass(frozen=True)
class _Issuer:
    config: IssuerConfig
    source: KeySource
    profile: Profile


@dataclass(frozen=True)
class _Entry:
    """A cached verdict: private copies of the claims, the binding and the key set used."""

    issuer: str
    claims: dict[str, Any]
    header: dict[str, Any]
    binding: Binding
    keys: KeySet


def _json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


def _error(detail: str, reason: Reason) -> TokenError:
    return TokenError(detail, reason)


def split_scheme(raw: str) -> tuple[str, str]:
    """("bearer" | "dpop" | "", token) from an Authorization-style value."""
    text = raw.strip()
    match = _SCHEME.match(text)
    if match is None:
        return "", text
    return match.group(1).lower(), text[match.end() :].strip()


class TokenVerifier:
    """Verifies access tokens for the configured issuers. Thread-safe.

    `jwks_fetch` and `on_jwks_refresh` serve `jwks_uri` issuers: a custom fetcher
    (tests) and a hook told "success"/"failure" after each refresh (metrics).
    """

    @property
    def local_replay(self) -> ReplayStore:
        """This process's DPoP replay cache (the fallback when a shared one is unavailable)."""
        return self._dpop.local_replay

    def use_replay(self, replay: ReplayStore) -> None:
        """Remember DPoP proofs in `replay` from now on (a fleet's, in front of `local_replay`)."""
        self._dpop.use_replay(replay)

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        config: TokenConfig,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
        jwks_fetch: Fetcher | None = None,
        on_jwks_refresh: RefreshHook | None = None,
        jwks_background_refresh: bool = True,
    ) -> None:
        self._config = config
        self._clock = clock
        self._cache: ExpiringLRU[_Entry] = ExpiringLRU(cache_size)
        self._dpop = DPoPVerifier(config)
        self.nonces: Nonces = self._dpop.nonces  # DPoP server nonces; `share` them with a fleet's secret store
        self._status = StatusLists(config.status_list_cache_seconds, config.leeway_seconds, clock=clock)
        self._issuers: dict[str, _Issuer] = {}
        self._workloads = WorkloadIssuers(issuers)
        profiles = []
        for i, issuer in enumerate(issuers):
            try:
                profiles.append(resolve(issuer, config))  # once per issuer, never per token
            except ConfigError as e:
                raise ConfigError(f"issuers[{i}].{e.key}", e.problem) from None
        # Checked before the issuer is known, so a typ no issuer accepts is refused as before.
        self._types = frozenset(t for p in profiles for t in p.accept_typ or ()) if profiles else frozenset({"at+jwt"})
        try:
            for i, (issuer, profile) in enumerate(zip(issuers, profiles, strict=True)):
                source: KeySource
                if issuer.jwks_file:  # reloaded when it changes
                    source = FileKeySource.of(issuer, i, config, on_jwks_refresh, jwks_background_refresh)
                elif issuer.jwks_uri:
                    source = RemoteKeySource(
                        issuer.jwks_uri,
                        issuer.algorithms,
                        cache_seconds=config.jwks_cache_seconds,
                        min_refetch_seconds=config.jwks_min_refetch_seconds,
                        clock=clock,
                        fetch=jwks_fetch,
                        on_refresh=on_jwks_refresh,
                        background=jwks_background_refresh,
                        uses=key_uses(issuer.profile),  # SPIFFE bundles: jwt-svid
                    )
                else:
                    raise ConfigError(f"issuers[{i}]", "needs exactly one of jwks_file or jwks_uri")
                self._issuers[issuer.issuer] = _Issuer(issuer, source, profile)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._dpop.nonces.close()
        for issuer in self._issuers.values():
            issuer.source.close()

    def verify(self, creds: Credentials) -> VerifiedToken:
        """The verified token, or `TokenError` with the reason it was refused."""
        try:
            return self._verify(creds)
        except TokenError:
            raise
        except Exception as e:  # fail closed, never leak other errors
            log.warning("unexpected %s while verifying a token", type(e).__name__, exc_info=True)
            raise _error("token could not be verified", Reason.TOKEN_MALFORMED) from None

    def _verify(self, creds: Credentials) -> VerifiedToken:
        limit = self._config.max_token_bytes
        if len(creds.token) > limit + 64:
            raise _error(f"token longer than {limit} bytes", Reason.TOKEN_MALFORMED)
        scheme, token = split_scheme(creds.token)
        if not token:
            raise _error("no access token", Reason.TOKEN_MISSING)
        if len(token) > limit:
            raise _error(f"token longer than {limit} bytes", Reason.TOKEN_MALFORMED)
        now = self._clock()
        entry = self._cache.get(token, now)
        if entry is not None and entry.keys is not self._issuers[entry.issuer].source.current():
            entry = None  # the key set changed since: verify against the new one
        if entry is not None:
            check_times(entry.claims, now, self._config.leeway_seconds)
            claims, header = _json_copy(entry.claims), _json_copy(entry.header)
        else:
            entry = self._verify_signed(token, now)
            claims, header = entry.claims, entry.header
            exp = claims.get("exp")
            deadline = float(exp) if exp is not None else now + NO_EXP_CACHE_SECONDS
            cached = _Entry(entry.issuer, _json_copy(claims), _json_copy(header), entry.binding, entry.keys)
            self._cache.put(token, cached, deadline, now)
        found = self._issuers[entry.issuer]
        profile = found.profile
        # Checked on cache hits too: one token may reach entry points that expect different audiences.
        check_audience(claims, (creds.audience,) if creds.audience else found.config.audiences, profile.audience_claim)
        nonce = found.config.dpop_nonce and entry.binding.kind == "dpop"
        self._check_binding(scheme, token, entry.binding, creds, now, nonce)
        # On cache hits too: a list that says revoked (or cannot be read) denies from the next call.
        self._status.check(claims, entry.issuer, found.source, found.config.algorithms)
        client_id = first_string(claims, profile.agent)
        return VerifiedToken(
            issuer=entry.issuer,
            claims=MappingProxyType(claims),
            header=MappingProxyType(header),
            binding=entry.binding.kind,
            scopes=scopes_of(claims, profile.scopes),
            client_id=client_id,
            jti=claims.get(profile.jti_claim) or "",
            issued_at=int(claims.get("iat", 0)),
            expires_at=int(claims.get("exp", 0)),
            user=first_string(claims, profile.user) if profile.users else "",
            app_only=is_app_only(claims, profile, client_id),
            profile=profile,
            dpop_nonce=self._dpop.nonces.current(now) if nonce else "",
        )

    def _verify_signed(self, token: str, now: float) -> _Entry:
        try:
            jws = parse_compact(token, self._config.max_token_bytes)
        except MalformedJWS as e:
            unsecured = unsecured_alg(token) if len(token) <= self._config.max_token_bytes else None
            if unsecured is not None and unsecured.lower() == "none":
                raise _error("unsecured token (alg none) is never accepted", Reason.TOKEN_ALGORITHM_REJECTED) from None
            raise _error(f"token malformed: {e}", Reason.TOKEN_MALFORMED) from None
        alg, kid = self._check_header(jws.header)
        iss = jws.payload.get("iss")  # unverified: used only to choose the key set
        if iss is None:  # SVIDs and transaction tokens may leave it out (pep/tokens/workload.py)
            iss = self._workloads.issuer_for(jws.payload, normalise_typ(str(jws.header.get("typ", ""))))
        if iss is None:
            raise _error("required claim iss is missing", Reason.TOKEN_CLAIMS_MISSING)
        if not isinstance(iss, str) or not iss:
            raise _error("claim iss must be a non-empty string", Reason.TOKEN_CLAIMS_MISSING)
        found = self._issuers.get(iss)
        if found is None:
            raise _error("issuer is not trusted", Reason.TOKEN_ISSUER_UNTRUSTED)
        issuer, source, profile = found.config, found.source, found.profile
        typ = normalise_typ(jws.header.get("typ", ""))
        if typ not in (profile.accept_typ or ()):
            raise _error(f"typ must be {_typ_list(profile)} for this issuer", Reason.TOKEN_TYPE_INVALID)
        if alg not in issuer.algorithms:
            # Name the alg only when it is one pep knows: header text is attacker-chosen.
            named = f"alg {alg}" if alg in ALGORITHMS else "alg"
            raise _error(f"{named} is not allowed for this issuer", Reason.TOKEN_ALGORITHM_REJECTED)
        keys = self._check_signature(jws, alg, kid, source)
        claims = jws.payload
        cfg = self._config
        check_types(claims)
        check_profile(claims, profile)
        check_required(claims, profile.required_claims or ())
        check_workload_claims(claims, issuer, profile)
        check_times(claims, now, cfg.leeway_seconds)
        check_lifetime(claims, now, cfg.max_lifetime_seconds)
        binding = binding_of(claims)
        return _Entry(iss, claims, jws.header, binding, keys)

    def _check_header(self, header: Mapping[str, Any]) -> tuple[str, str | None]:
        if "crit" in header:  # PyJWT honours crit: b64; pep implements no JWS extension
            raise _error("crit header is not supported", Reason.TOKEN_MALFORMED)
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise _error(f"header {name} is not allowed in an access token", Reason.TOKEN_MALFORMED)
        if "cty" in header:  # PyJWT ignores cty; pep verifies no nested or typed content
            raise _error("nested or typed content (cty) is not supported", Reason.TOKEN_MALFORMED)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _error("alg header missing", Reason.TOKEN_MALFORMED)
        if is_forbidden_alg(alg):  # PyJWT implements none and HS*: refused by name, any case
            raise _error("alg none and HMAC algorithms are never accepted", Reason.TOKEN_ALGORITHM_REJECTED)
        typ = header.get("typ", "")
        if not isinstance(typ, str) or (typ == "" and "typ" in header) or normalise_typ(typ) not in self._types:
            named = "at+jwt" if self._types == {"at+jwt"} else ", ".join(sorted(t or '""' for t in self._types))
            raise _error(f"typ must be {named}", Reason.TOKEN_TYPE_INVALID)
        kid = header.get("kid")
        # PyJWT only checks that kid is a string; pep also bounds what a lookup key may cost.
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
            raise _error("kid must be a short non-empty string", Reason.TOKEN_MALFORMED)
        return alg, kid

    def _check_signature(self, jws: CompactJWS, alg: str, kid: str | None, source: KeySource) -> KeySet:
        """Verify with the issuer's key; return the key set that verified it."""
        keys, problem = verifying_keys(source, jws, alg, kid)
        if problem:
            raise _error(*_SIGNATURE_PROBLEMS[problem])
        return keys

    def _check_binding(
        self, scheme: str, token: str, binding: Binding, creds: Credentials, now: float, nonce: bool = False
    ) -> None:
        if binding.kind == "dpop":
            if scheme == "bearer":
                raise _error("DPoP-bound token presented as a Bearer token", Reason.POP_BINDING_MISMATCH)
            self._dpop.check(
                creds.dpop_proof,
                access_token=token,
                method=creds.http_method,
                uri=creds.http_uri,
                jkt=binding.jkt,
                now=now,
                nonce=nonce,
            )
            return
        if scheme == "dpop":
            raise _error("token presented with the DPoP scheme is not DPoP-bound", Reason.POP_BINDING_MISMATCH)
        if binding.kind == "mtls":
            check_certificate_binding(binding.x5t_digest, creds.client_cert_thumbprint)


_SIGNATURE_PROBLEMS = {
    NO_KEY_FOR_KID: ("no key of this issuer has the token's kid", Reason.TOKEN_SIGNATURE_INVALID),
    NO_KEYS: ("no keys available for this issuer", Reason.TOKEN_SIGNATURE_INVALID),
    ALG_MISMATCH: ("alg does not match the key's algorithm", Reason.TOKEN_ALGORITHM_REJECTED),
    BAD_SIGNATURE: ("signature does not verify", Reason.TOKEN_SIGNATURE_INVALID),
}


def _typ_list(profile: Profile) -> str:
    return " or ".join(t or "absent" for t in profile.accept_typ or ())
