"""Rate-limit buckets and DPoP proof `jti`s shared by the fleet in Redis (the request path).

One Redis round trip per decision, bounded by `state.timeout_ms` (socket timeouts, no retries),
on a client of its own (the kill-switch thread keeps its own). Keys under `state.key_prefix` (P):
`P rl:<bucket>`, a hash {t: tokens, s: stamp} spent by one Lua script per decision on Redis's
clock, expiring once it would be full again; `P dpop:<sha256>`, SET NX PX for the proof's lifetime.

When Redis fails: `pep_state_errors_total{op}` counts it and `pep_state_up` goes to 0 (1 again
at the next answer); the caller falls back to per-process state or refuses (`on_unavailable`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pep.errors import TokenError
from pep.metrics import Metrics
from pep.reasons import Reason
from pep.state.redis_kills import ERRORS, connect

log = logging.getLogger(__name__)

# A bucket with rate 0 never refills: kept this long after its last use, then it starts full again.
NO_REFILL_TTL_MS = 86_400_000

# KEYS: the buckets; ARGV: rate and burst of each, in order. Returns 0 when one token was spent from
# every bucket, else the 1-based index of the first empty one (and nothing is spent).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 't', 's')
  local tk, st = tonumber(v[1]), tonumber(v[2])
  if tk == nil or st == nil then tk, st = burst, now end
  if now > st then tk = math.min(burst, tk + (now - st) * rate) end
  if tk < 1 then return i end
  tokens[i] = tk
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 't', tostring(tokens[i] - 1), 's', tostring(now))
  local ttl = tonumber(ARGV[#ARGV])
  if rate > 0 then ttl = math.ceil(burst / rate * 1000) + 1000 end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 0
"""


class LocalReplay(Protocol):
    def add(self, key: Hashable, deadline: float, now: float) -> bool: ...


# After a failed call the request path leaves Redis alone this long, so one request (a batch,
# or a DPoP proof and rate limits) waits at most one `timeout_ms` on a Redis that hangs.
BREAK_SECONDS = 1.0


class _Broken(Exception):
    """Redis is being left alone after a recent failure."""


class Health:
    """`pep_state_up` and `pep_state_errors_total` for the request path; logs on each change only."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._up = True
        self._lock = threading.Lock()
        self._broken_until = 0.0

    def broken(self, op: str) -> bool:
        """True (and counted as a failure) while a recent failure keeps Redis off the request path."""
        if time.monotonic() >= self._broken_until:
            return False
        self._metrics.state_errors.labels(op).inc()
        return True

    def ok(self) -> None:
        if not self._up:
            with self._lock:
                self._up = True
            self._metrics.state_up.set(1)
            log.warning("state: Redis answers the request path again")

    def failed(self, op: str, error: BaseException) -> None:
        self._broken_until = time.monotonic() + BREAK_SECONDS
        self._metrics.state_errors.labels(op).inc()
        self._metrics.state_up.set(0)
        if self._up:
            with self._lock:
                self._up = False
            log.error("state: Redis %s failed (%s): shared state unavailable", op, type(error).__name__)


def request_client(url: str, timeout_ms: int) -> redis.Redis:
    """A client whose every call (connect included) gives up after `timeout_ms`, never retried."""
    return connect(url, timeout=timeout_ms / 1000, retry=Retry(NoBackoff(), 0))


class SharedBuckets:
    """Token buckets in Redis, spent all-or-nothing by one script call (EVALSHA, else EVAL)."""

    def __init__(self, client: redis.Redis, prefix: str, health: Health) -> None:
        self._client = client
        self._prefix = prefix
        self._health = health
        self._sha = hashlib.sha1(_TAKE.encode(), usedforsecurity=False).hexdigest()

    def take(self, wanted: Sequence[tuple[tuple[Any, ...], float, float]]) -> int | None:
        """Spend one token from each (key, rate, burst) or none: the index of the first empty
        bucket, or None when all were spent. Raises ConnectionError when Redis does not answer."""
        keys = [f"{self._prefix}rl:" + json.dumps(list(key), separators=(",", ":")) for key, _, _ in wanted]
        args: list[float] = [x for _, rate, burst in wanted for x in (rate, burst)]
        args.append(NO_REFILL_TTL_MS)
        if self._health.broken("ratelimit"):
            raise ConnectionError("shared state unavailable (Redis failed within the last second)")
        try:
            result = self._run(keys, args)
        except ERRORS as e:
            self._health.failed("ratelimit", e)
            raise ConnectionError(f"shared state unavailable (Redis: {type(e).__name__})") from None
        self._health.ok()
        return int(result) - 1 if int(result) else None

    def _run(self, keys: list[str], args: list[float]) -> Any:
        try:
            return self._client.evalsha(self._sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # First call, or Redis restarted: EVAL runs it and caches it for the next EVALSHA.
            return self._client.eval(_TAKE, len(keys), *keys, *args)


class SharedReplay:
    """Proof keys seen by any replica (SET NX PX), in front of this process's own cache.

    The local cache is asked first and always fed, so a Redis outage in `local` mode still
    refuses what this replica saw. In `deny` mode a proof Redis cannot check is refused.
    """

    def __init__(self, client: redis.Redis, prefix: str, local: LocalReplay, health: Health, *, deny: bool) -> None:
        self._client = client
        self._prefix = prefix
        self._local = local
        self._health = health
        self._deny = deny

    def add(self, key: Hashable, deadline: float, now: float) -> bool:
        if not self._local.add(key, deadline, now):
            return False
        digest = key.hex() if isinstance(key, bytes) else hashlib.sha256(repr(key).encode()).hexdigest()
        ttl_ms = max(1, int((deadline - now) * 1000))
        try:
            if self._health.broken("replay"):
                raise _Broken("Redis failed within the last second")
            fresh = self._client.set(f"{self._prefix}dpop:{digest}", "1", nx=True, px=ttl_ms)
        except _Broken as e:
            if self._deny:
                raise TokenError(f"shared state unavailable: {e}", Reason.INTERNAL_ERROR) from None
            return True
        except ERRORS as e:
            self._health.failed("replay", e)
            if self._deny:
                raise TokenError(
                    f"shared state unavailable: the DPoP replay cache did not answer ({type(e).__name__})",
                    Reason.INTERNAL_ERROR,
                ) from None
            return True  # local mode: this replica's cache decided
        self._health.ok()
        return bool(fresh)
