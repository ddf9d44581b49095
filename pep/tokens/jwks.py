"""JWK Sets per issuer: parsed once into immutable `KeySet`s, from a file or a URL.

A `KeySource` hands out the current `KeySet` (swapped atomically, so a reader never
sees half a set) and may be asked to refresh when a token names an unknown `kid`.
Keys are bound to one algorithm at load time (see `pep.tokens.jwk`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pep.errors import ConfigError
from pep.tokens.jwk import JWKError, UnsupportedKey, VerificationKey, alg_matches, load_verification_key
from pep.tokens.jws import CompactJWS, MalformedJWS, parse_json_object, verify_signature

log = logging.getLogger("pep.tokens.jwks")

MAX_JWKS_BYTES = 1024 * 1024
MAX_KEYS = 100
# Signature attempts for a JWS without `kid` (bounds the work a garbage token costs).
MAX_KEY_CANDIDATES = 8
# The JWK `use` values whose keys verify tokens: any issuer's, and a spiffe issuer's (SPIFFE bundle).
USE_SIG = ("sig",)
USE_SPIFFE = ("sig", "jwt-svid")
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.I)

# (uri, timeout) -> (body, max-age seconds or None). Raises OSError on failure.
Fetcher = Callable[[str, float], tuple[bytes, float | None]]
# Called with "success" or "failure" after every remote refresh (for metrics).
RefreshHook = Callable[[str], None]


@dataclass(frozen=True)
class KeySet:
    keys: tuple[VerificationKey, ...] = ()
    by_kid: Mapping[str, tuple[VerificationKey, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Collection[VerificationKey]) -> KeySet:
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        return cls(tuple(keys), {k: tuple(v) for k, v in by_kid.items()})


def parse_jwks(data: bytes, allowed_algs: Collection[str], uses: Collection[str] = USE_SIG) -> tuple[KeySet, list[str]]:
    """Parse a JWK Set document. Returns the usable keys and one problem per bad key.

    Keys not meant for signing (`use` not in `uses`, encryption algorithms, key
    types pep does not verify with) are skipped silently; malformed keys are problems.
    A SPIFFE bundle is a JWK Set too: its `spiffe_sequence` and `spiffe_refresh_hint`
    members are ignored, its `x509-svid` keys skipped, its `jwt-svid` keys count when
    `uses` holds `jwt-svid` (USE_SPIFFE, spiffe issuers only).
    Raises ValueError when the document itself is unusable.
    """
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"JWK Set larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = parse_json_object(data, "JWK Set")
    except MalformedJWS as e:
        raise ValueError(str(e)) from None
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise ValueError("must be a JWK Set: an object with a 'keys' list")
    if len(entries) > MAX_KEYS:
        raise ValueError(f"more than {MAX_KEYS} keys")
    keys: list[VerificationKey] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        try:
            key = load_verification_key(entry, allowed_algs, uses)
        except UnsupportedKey:
            continue
        except JWKError as e:
            problems.append(f"keys[{i}]: {e}")
            continue
        if key is not None:
            keys.append(key)
    return KeySet.of(keys), problems


class KeySource(Protocol):
    def current(self) -> KeySet: ...

    def refresh_for_unknown_kid(self) -> KeySet:
        """Maybe refetch (rate limited) and return the key set to retry with."""
        ...

    def close(self) -> None: ...


class StaticKeySource:
    """Keys from a `jwks_file`, read once at start-up."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    @classmethod
    def from_file(
        cls, path: str, allowed_algs: Collection[str], config_key: str, uses: Collection[str] = USE_SIG
    ) -> StaticKeySource:
        """Load `path`; any problem is a `ConfigError` on `config_key`."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        except OSError as e:
            raise ConfigError(config_key, f"cannot read {path}: {e.strerror or e}") from None
        try:
            keys, problems = parse_jwks(data, allowed_algs, uses)
        except ValueError as e:
            raise ConfigError(config_key, f"{path}: {e}") from None
        if problems:
            raise ConfigError(config_key, f"{path}: {problems[0]}")
        if not keys.keys:
            raise ConfigError(config_key, f"{path}: no usable signing keys for {', '.join(allowed_algs)}")
        return cls(keys)

    def current(self) -> KeySet:
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        return self._keys

    def close(self) -> None:
        pass


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise urllib.error.HTTPError(newurl, code, "redirect from https to http refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngradeRedirect)


def http_get(uri: str, timeout: float, *, accept: str, agent: str, limit: int) -> tuple[bytes, str]:
    """GET over http(s): at most `limit + 1` bytes of the body and its Cache-Control; https is
    never redirected to http. Raises OSError (urllib's errors) or http.client.HTTPException."""
    headers = {"Accept": accept, "User-Agent": agent}
    request = urllib.request.Request(uri, headers=headers)  # noqa: S310 - callers check the scheme
    with _OPENER.open(request, timeout=timeout) as response:
        return response.read(limit + 1), response.headers.get("Cache-Control", "") or ""


def http_fetch(uri: str, timeout: float) -> tuple[bytes, float | None]:
    """GET a JWK Set over HTTP(S). Returns the body and the Cache-Control max-age."""
    if not uri.startswith(("https://", "http://")):
        raise ValueError("jwks_uri must be an http(s) URL")
    accept = "application/jwk-set+json, application/json"
    body, cache_control = http_get(uri, timeout, accept=accept, agent="pep-jwks", limit=MAX_JWKS_BYTES)
    match = _MAX_AGE.search(cache_control)
    return body, float(match.group(1)) if match else None


# Why `verifying_keys` found no key that verifies a JWS ("" when one does).
NO_KEY_FOR_KID, NO_KEYS, ALG_MISMATCH, BAD_SIGNATURE = "no key for kid", "no keys", "alg mismatch", "bad signature"


def verifying_keys(source: KeySource, jws: CompactJWS, alg: str, kid: str | None) -> tuple[KeySet, str]:
    """The key set one of whose keys (by `kid`, else any) verifies `jws` with `alg`, and "" or
    why none does. An unknown `kid`, or an empty set, refreshes the source once."""
    keys = source.current()
    if kid is not None:
        candidates = keys.by_kid.get(kid)
        if not candidates:
            keys = source.refresh_for_unknown_kid()
            candidates = keys.by_kid.get(kid)
        if not candidates:
            return keys, NO_KEY_FOR_KID
    else:
        if not keys.keys:
            keys = source.refresh_for_unknown_kid()
        if not keys.keys:
            return keys, NO_KEYS
        candidates = keys.keys
    matching = [k for k in candidates if alg_matches(k, alg)]
    if not matching:
        return keys, ALG_MISMATCH
    for key in matching[:MAX_KEY_CANDIDATES]:
        # Pinned to the key's bound algorithm (the header may only name its Ed25519 alias).
        if verify_signature(key.alg, key.key, jws.signing_input, jws.signature):
            return keys, ""
    return keys, BAD_SIGNATURE


class RemoteKeySource:
    """Keys from a `jwks_uri`: fetched at start, refreshed in the background.

    - refreshed every cache lifetime (the response's max-age, clamped to
      [min_refetch_seconds, 1 day], else `cache_seconds`);
    - refetched on an unknown `kid` at most once per `min_refetch_seconds`;
    - a failed refresh keeps the last good set (and retries with backoff);
    - no keys yet (first fetch failed) means every token fails closed.
    """

    def __init__(
        self,
        uri: str,
        allowed_algs: Collection[str],
        *,
        cache_seconds: float,
        min_refetch_seconds: float,
        clock: Callable[[], float] = time.time,
        fetch: Fetcher | None = None,
        on_refresh: RefreshHook | None = None,
        timeout_seconds: float = 5.0,
        background: bool = True,
        uses: Collection[str] = USE_SIG,
    ) -> None:
        self._uri = uri
        self._uses = tuple(uses)
        self._allowed = tuple(allowed_algs)
        self._cache_seconds = max(1.0, cache_seconds)
        self._min_refetch = max(0.0, min_refetch_seconds)
        self._clock = clock
        self._fetch = fetch or http_fetch
        self._on_refresh = on_refresh
        self._timeout = timeout_seconds
        self._keys = KeySet()
        self._fetch_lock = threading.Lock()
        self._last_attempt: float | None = None
        self._failures = 0
        self._stop = threading.Event()
        with self._fetch_lock:
            delay = self._refresh()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, args=(delay,), name="pep-jwks", daemon=True)
            self._thread.start()

    def current(self) -> KeySet:
        return self._keys

    def refresh_for_unknown_kid(self) -> KeySet:
        with self._fetch_lock:
            last = self._last_attempt
            if last is None or self._clock() - last >= self._min_refetch:
                self._refresh()
        return self._keys

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._timeout + 1)

    def _run(self, delay: float) -> None:
        while not self._stop.wait(delay):
            with self._fetch_lock:
                delay = self._refresh()

    def _refresh(self) -> float:
        """Fetch once (caller holds the fetch lock); return the delay to the next one."""
        self._last_attempt = self._clock()
        try:
            body, max_age = self._fetch(self._uri, self._timeout)
            keys, problems = parse_jwks(body, self._allowed, self._uses)
            for problem in problems:
                log.warning("JWKS %s: skipped key: %s", self._uri, problem)
            if not keys.keys:
                raise ValueError("no usable signing keys")
        except Exception as e:  # any failure keeps the last good set
            self._failures += 1
            log.warning("JWKS %s: refresh failed (%s); keeping the last good keys", self._uri, _describe(e))
            self._notify("failure")
            backoff = max(1.0, self._min_refetch) * 2 ** min(self._failures - 1, 10)
            return min(backoff, self._cache_seconds)
        self._failures = 0
        self._keys = keys
        self._notify("success")
        lifetime = self._cache_seconds if max_age is None else max_age
        return min(max(lifetime, self._min_refetch, 1.0), 86400.0)

    def _notify(self, result: str) -> None:
        notify(self._on_refresh, result)


def notify(hook: RefreshHook | None, result: str) -> None:
    """Tell a refresh hook "success" or "failure"; a failing hook (metrics) never breaks key refresh."""
    if hook is not None:
        try:
            hook(result)
        except Exception:
            log.exception("JWKS refresh hook failed")


def key_uses(profile: str) -> tuple[str, ...]:
    """The JWK `use` values that count for an issuer of `profile` (a SPIFFE bundle's say `jwt-svid`)."""
    return USE_SPIFFE if profile == "spiffe" else USE_SIG


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable: {error.reason}"
    return f"{type(error).__name__}: {error}"[:200]
