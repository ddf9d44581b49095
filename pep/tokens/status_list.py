"""OAuth Token Status List (draft-ietf-oauth-status-list): a token whose claims carry
`status: {status_list: {idx: N, uri: U}}` is valid only while entry N of the status list at U
is 0 (VALID); 1 (INVALID), 2 (SUSPENDED) or any other value is `token_revoked`.

The list is a JWT (`typ` `statuslist+jwt`) with `sub` equal to U, `iat`, optional `exp` and
`ttl`, and `status_list: {bits: 1|2|4|8, lst: base64url(ZLIB-compressed bytes)}`, signed by a key
of the token's own issuer (its JWKS, its `algorithms`). Entry N holds `bits` bits of byte
N*bits//8, the least significant bits first.

Checked on every call (verified-token cache hits too) against a cache: a list is fetched on first
use (single flight per list: concurrent callers wait for the one fetch, at most
FETCH_TIMEOUT_SECONDS), then again once `ttl` or `tokens.status_list_cache_seconds` (the smaller)
has passed, and never used past its own `exp`. Fail closed: a list that cannot be fetched or
verified denies its tokens (`token status list unavailable: ...`), and the failed fetch is not
retried for RETRY_SECONDS (each caller in that time is denied at once). Bounds: MAX_LISTS lists
cached (least recently used dropped), MAX_LIST_BYTES downloaded, MAX_DECOMPRESSED_BYTES inflated.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.error
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.jwks import KeySource, verifying_keys
from pep.tokens.jwks import http_get as get_over_http
from pep.tokens.jws import MalformedJWS, b64url_decode, is_forbidden_alg, parse_compact
from pep.tokens.profiles import normalise_typ

log = logging.getLogger("pep.tokens")

MAX_LISTS = 64
MAX_LIST_BYTES = 1024 * 1024
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024  # 134 million entries at one bit each
FETCH_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 5.0
STATUS_NAMES = {1: "INVALID", 2: "SUSPENDED"}
# uri -> the list token's bytes; raises on any failure (tests may pass their own).
Fetch = Callable[[str, float], bytes]


class StatusListError(ValueError):
    """Why a status list cannot be used (said in the deny's detail; never the list itself)."""


def http_get(uri: str, timeout: float) -> bytes:
    """GET a status list token over http(s), at most MAX_LIST_BYTES (https never redirected to http)."""
    if not uri.startswith(("https://", "http://")):
        raise StatusListError("its uri is not an http(s) URL")
    try:
        body, _ = get_over_http(
            uri, timeout, accept="application/statuslist+jwt", agent="pep-status-list", limit=MAX_LIST_BYTES
        )
    except urllib.error.HTTPError as e:
        raise StatusListError(f"HTTP {e.code}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None)
        raise StatusListError(f"fetch failed ({type(reason or e).__name__})") from None
    if len(body) > MAX_LIST_BYTES:
        raise StatusListError(f"larger than {MAX_LIST_BYTES} bytes")
    return body


@dataclass(frozen=True)
class Reference:
    idx: int
    uri: str


def reference(claims: Mapping[str, Any]) -> Reference | None:
    """The token's status list entry, None without a `status` claim; `token_claims_missing` when malformed."""
    if "status" not in claims:
        return None
    status = claims["status"]
    ref = status.get("status_list") if isinstance(status, Mapping) else None
    if not isinstance(ref, Mapping):
        raise TokenError("claim status must be an object with a status_list object", Reason.TOKEN_CLAIMS_MISSING)
    idx, uri = ref.get("idx"), ref.get("uri")
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise TokenError("claim status.status_list.idx must be a non-negative integer", Reason.TOKEN_CLAIMS_MISSING)
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")) or len(uri) > 2048:
        raise TokenError("claim status.status_list.uri must be an http(s) URL", Reason.TOKEN_CLAIMS_MISSING)
    return Reference(idx, uri)


@dataclass(frozen=True)
class StatusList:
    bits: int
    data: bytes
    refresh_at: float
    expires_at: float | None

    def status(self, idx: int) -> int:
        byte, offset = divmod(idx * self.bits, 8)
        if byte >= len(self.data):
            raise StatusListError(f"it has no entry {idx} (it holds {len(self.data) * 8 // self.bits})")
        return (self.data[byte] >> offset) & ((1 << self.bits) - 1)


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: StatusList | None = None
    failed_until: float = 0.0
    error: str = ""


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StatusListError(f"its {name} is not a number")
    return float(value)


def parse_list(
    body: bytes, uri: str, source: KeySource, algorithms: Collection[str], now: float, leeway: float, cache: float
) -> StatusList:
    """Verify a status list token (signature by a key of `source`, claims) and inflate its list."""
    try:
        jws = parse_compact(body.decode("ascii").strip(), MAX_LIST_BYTES)
    except (UnicodeDecodeError, MalformedJWS) as e:
        raise StatusListError(f"not a compact JWS ({e})") from None
    header = jws.header
    if not isinstance(header.get("typ"), str) or normalise_typ(header["typ"]) != "statuslist+jwt":
        raise StatusListError("its typ is not statuslist+jwt")
    if "crit" in header:
        raise StatusListError("crit header is not supported")
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or is_forbidden_alg(alg) or alg not in algorithms:
        raise StatusListError("its alg is not one the issuer allows")
    if kid is not None and not isinstance(kid, str):
        raise StatusListError("its kid is not a string")
    if verifying_keys(source, jws, alg, kid)[1]:
        raise StatusListError("its signature does not verify with the issuer's keys")
    claims = jws.payload
    if claims.get("sub") != uri:
        raise StatusListError("its sub is not the uri it was fetched from")
    if _number(claims, "iat") is None:
        raise StatusListError("it has no iat")
    exp, ttl = _number(claims, "exp"), _number(claims, "ttl")
    if exp is not None and now > exp + leeway:
        raise StatusListError("it has expired")
    if ttl is not None and ttl <= 0:
        raise StatusListError("its ttl is not positive")
    lst = claims.get("status_list")
    if not isinstance(lst, Mapping) or lst.get("bits") not in (1, 2, 4, 8) or isinstance(lst.get("bits"), bool):
        raise StatusListError("its status_list needs bits 1, 2, 4 or 8")
    if not isinstance(lst.get("lst"), str):
        raise StatusListError("its status_list.lst is not a string")
    try:
        packed = b64url_decode(lst["lst"].rstrip("="))
        inflater = zlib.decompressobj()
        data = inflater.decompress(packed, MAX_DECOMPRESSED_BYTES)
    except (MalformedJWS, zlib.error):
        raise StatusListError("its status_list.lst is not base64url ZLIB data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise StatusListError(f"its list is truncated or inflates past {MAX_DECOMPRESSED_BYTES} bytes")
    refresh = now + max(1.0, min(cache, ttl if ttl is not None else cache))
    return StatusList(int(lst["bits"]), data, refresh, exp)


class StatusLists:
    """The status lists of the tokens pep sees, cached per (issuer, uri). Thread-safe."""

    def __init__(
        self,
        cache_seconds: float,
        leeway_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
        fetch: Fetch = http_get,
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self._cache, self._leeway, self._clock, self._fetch = cache_seconds, leeway_seconds, clock, fetch
        self._timeout = timeout_seconds
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, claims: Mapping[str, Any], issuer: str, source: KeySource, algorithms: Collection[str]) -> None:
        """Raise `token_revoked` unless the token has no status list entry or its entry is 0 (VALID)."""
        ref = reference(claims)
        if ref is None:
            return
        try:
            status = self._list(issuer, ref.uri, source, algorithms).status(ref.idx)
        except StatusListError as e:
            raise TokenError(f"token status list unavailable: {e}", Reason.TOKEN_REVOKED) from None
        if status != 0:
            name = STATUS_NAMES.get(status, f"status {status:#04x}")
            raise TokenError(f"token is {name} in its issuer's status list", Reason.TOKEN_REVOKED)

    def _slot(self, key: tuple[str, str]) -> _Slot:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
                while len(self._slots) > MAX_LISTS:
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(key)
            return slot

    def _usable(self, current: StatusList | None, now: float) -> bool:
        return (
            current is not None
            and now < current.refresh_at
            and (current.expires_at is None or now <= current.expires_at + self._leeway)
        )

    def _list(self, issuer: str, uri: str, source: KeySource, algorithms: Collection[str]) -> StatusList:
        slot = self._slot((issuer, uri))
        current = slot.current
        if current is not None and self._usable(current, self._clock()):
            return current
        # Single flight: one fetch per list; the others wait for it (bounded by the fetch timeout).
        if not slot.lock.acquire(timeout=self._timeout * 2):
            raise StatusListError("the fetch in progress did not finish")
        try:
            now = self._clock()
            if slot.current is not None and self._usable(slot.current, now):
                return slot.current
            if now < slot.failed_until:
                raise StatusListError(slot.error)
            try:
                body = self._fetch(uri, self._timeout)
                fresh = parse_list(body, uri, source, algorithms, now, self._leeway, self._cache)
            except StatusListError as e:
                slot.failed_until, slot.error, slot.current = now + RETRY_SECONDS, str(e), None
                log.warning("token status list %s from issuer %s unusable: %s", uri[:200], issuer, e)
                raise
            slot.current, slot.failed_until = fresh, 0.0
            return fresh
        finally:
            slot.lock.release()
