"""Token-bucket rate limits from `limits.yaml`.

Without `shared`, limits are per pep process: with an agent behind N replicas, each replica's
pep allows the configured rate, so the agent's total can reach N times it. With `shared` (Redis,
`state.redis_url`, handed in by the composition root) the buckets are the fleet's; when it does
not answer, `on_unavailable` says: `local` falls back to this process's buckets, `deny` refuses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pep.errors import ControlError
from pep.policy.limits_file import Limits, Rate
from pep.reasons import Reason

# Buckets kept at most; the least recently used is dropped first. Dropping a full
# bucket loses nothing (a new one starts full); see `_evict`.
DEFAULT_MAX_BUCKETS = 200_000


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate, self.burst = rate.rate, rate.burst
        self.tokens, self.stamp = rate.burst, now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


class SharedBuckets(Protocol):
    def take(self, wanted: Sequence[tuple[tuple[Any, ...], float, float]]) -> int | None:
        """Spend one token from every (key, rate, burst) or none: the index of the first empty
        bucket, None when all were spent; ConnectionError when the store does not answer."""
        ...


class RateLimiter:
    """Buckets per agent (its own limit, else its groups', else the default), per agent group
    (shared by the group's members) and per agent and action. Thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        shared: SharedBuckets | None = None,
        on_unavailable: str = "local",
    ) -> None:
        self._clock = clock
        self._shared = shared
        self._deny_unavailable = on_unavailable == "deny"
        self._max = max_buckets
        self._buckets: OrderedDict[tuple[Any, ...], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, limits: Limits, agent: str, groups: Sequence[str], action: str) -> None:
        """Spend one token from every bucket that applies, or raise `rate_limited` and spend none."""
        if limits.empty:
            return
        wanted: list[tuple[tuple[Any, ...], Rate]] = []
        own = limits.agents.get(agent)
        if own is None:
            group_rates = [limits.groups[g] for g in groups if g in limits.groups]
            own = min(group_rates, key=lambda r: r.rate) if group_rates else limits.default
        if own is not None:
            wanted.append((("agent", agent, own), own))
        for g in groups:
            if g in limits.groups:
                wanted.append((("group", g, limits.groups[g]), limits.groups[g]))
        per_action = limits.actions.get(action)
        if per_action is not None:
            wanted.append((("action", agent, action, per_action), per_action))
        if not wanted:
            return
        if self._shared is not None:
            try:
                empty = self._shared.take([(key[:-1], rate.rate, rate.burst) for key, rate in wanted])
            except ConnectionError as e:
                if self._deny_unavailable:
                    raise ControlError(f"rate limits: {e}", Reason.INTERNAL_ERROR) from None
            else:
                if empty is not None:
                    key, rate = wanted[empty]
                    raise ControlError(_describe(key, _Bucket(rate, 0.0)), Reason.RATE_LIMITED)
                return
        now = self._clock()
        with self._lock:
            buckets = []
            for key, rate in wanted:
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = _Bucket(rate, now)
                    self._buckets[key] = bucket
                    self._evict(now)
                else:
                    self._buckets.move_to_end(key)
                bucket.refill(now)
                buckets.append((key, bucket))
            for key, bucket in buckets:
                if bucket.tokens < 1:
                    raise ControlError(_describe(key, bucket), Reason.RATE_LIMITED)
            for _, bucket in buckets:
                bucket.tokens -= 1

    def _evict(self, now: float) -> None:
        while len(self._buckets) > self._max:
            key, bucket = next(iter(self._buckets.items()))
            del self._buckets[key]
            bucket.refill(now)


def _describe(key: tuple[Any, ...], bucket: _Bucket) -> str:
    limit = f"{bucket.rate:g}/s, burst {bucket.burst:g}"
    if key[0] == "agent":
        return f"agent {key[1]!r} is over its rate limit ({limit})"
    if key[0] == "group":
        return f"agent group {key[1]!r} is over its shared rate limit ({limit})"
    return f"agent {key[1]!r} is over its rate limit for {key[2]!r} ({limit})"
