"""Token-bucket rate limits from `limits.yaml`.

Limits are per pep process: with an agent behind N replicas, each replica's pep allows
the configured rate, so the agent's total can reach N times it. Size limits per replica.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pep.errors import ControlError, SourceProblem
from pep.policy.source import line_of
from pep.reasons import Reason

# Buckets kept at most; the least recently used is dropped first. Dropping a full
# bucket loses nothing (a new one starts full); see `_evict`.
DEFAULT_MAX_BUCKETS = 200_000


@dataclass(frozen=True)
class Rate:
    rate: float  # tokens per second
    burst: float  # bucket size


@dataclass(frozen=True)
class Limits:
    default: Rate | None = None
    agents: Mapping[str, Rate] = field(default_factory=dict)
    groups: Mapping[str, Rate] = field(default_factory=dict)
    actions: Mapping[str, Rate] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.default is None and not self.agents and not self.groups and not self.actions


def parse_limits(data: Any, path: str) -> tuple[Limits, list[SourceProblem]]:
    problems: list[SourceProblem] = []
    if data is None:
        return Limits(), problems
    if not isinstance(data, Mapping):
        return Limits(), [SourceProblem(path, "expected a mapping: default, agents, groups, actions")]
    unknown = set(data) - {"default", "agents", "groups", "actions"}
    if unknown:
        problems.append(SourceProblem(path, f"unknown key {sorted(unknown)[0]!r}", line_of(data)))

    def rate(value: Any, where: str, line: int) -> Rate | None:
        if not isinstance(value, Mapping) or set(value) - {"rate", "burst"} or "rate" not in value:
            problems.append(SourceProblem(path, f"{where}: expected {{rate, burst}}", line))
            return None
        r, b = value["rate"], value.get("burst", value["rate"])
        for name, v in (("rate", r), ("burst", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                problems.append(SourceProblem(path, f"{where}.{name} must be a number >= 0", line))
                return None
        if b < 1 and r > 0:
            problems.append(SourceProblem(path, f"{where}.burst must be at least 1", line))
            return None
        return Rate(float(r), float(b))

    default = rate(data["default"], "default", line_of(data)) if data.get("default") is not None else None
    sections: dict[str, dict[str, Rate]] = {}
    for key in ("agents", "groups", "actions"):
        section = data.get(key) or {}
        sections[key] = {}
        if not isinstance(section, Mapping):
            problems.append(SourceProblem(path, f"`{key}` must be a mapping of id to {{rate, burst}}", line_of(data)))
            continue
        for id_, value in section.items():
            parsed = rate(value, f"{key}.{id_}", line_of(value, line_of(section, line_of(data))))
            if parsed is not None:
                sections[key][str(id_)] = parsed
    return Limits(default, sections["agents"], sections["groups"], sections["actions"]), problems


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate, self.burst = rate.rate, rate.burst
        self.tokens, self.stamp = rate.burst, now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


class RateLimiter:
    """Buckets per agent (its own limit, else its groups', else the default), per agent group
    (shared by the group's members) and per agent and action. Thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        self._clock = clock
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
