"""`limits.yaml`: the rate limits the policy directory sets. The buckets are `pep.controls.ratelimit`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pep.errors import SourceProblem
from pep.policy.source import line_of

# The largest `rate` or `burst` accepted: far above any real limit, and finite.
MAX_RATE = 1_000_000_000


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
        return Limits(), [SourceProblem(path, "expected a mapping: default, agents, groups, actions", line_of(data))]
    unknown = set(data) - {"default", "agents", "groups", "actions"}
    if unknown:
        problems.append(SourceProblem(path, f"unknown key {sorted(unknown)[0]!r}", line_of(data)))

    def rate(value: Any, where: str, line: int) -> Rate | None:
        if not isinstance(value, Mapping) or set(value) - {"rate", "burst"} or "rate" not in value:
            problems.append(SourceProblem(path, f"{where}: expected {{rate, burst}}", line))
            return None
        r, b = value["rate"], value.get("burst", value["rate"])
        for name, v in (("rate", r), ("burst", b)):
            # `not 0 <= v <= MAX_RATE` also refuses NaN and infinities, and compares a huge
            # int without converting it to float (which would raise OverflowError).
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_RATE:
                problems.append(SourceProblem(path, f"{where}.{name} must be a number from 0 to {MAX_RATE:,}", line))
                return None
        if b < 1 and r > 0:
            problems.append(SourceProblem(path, f"{where}.burst must be at least 1", line))
            return None
        return Rate(float(r), float(b))

    default = data.get("default")
    default = rate(default, "default", line_of(default, line_of(data))) if default is not None else None
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
