"""`killswitch.yaml`: what the policy directory disables, and the kinds of thing a kill switch names.

The runtime side (admin flips, the check per request) is `pep.controls.killswitch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pep.errors import SourceProblem
from pep.policy.revoked_file import Revocations, parse_revoked
from pep.policy.source import line_of


class KillKind(StrEnum):
    """What a kill switch entry disables: the one list of kinds (config file, admin API, CLI, metrics)."""

    AGENT = "agent"
    AGENT_GROUP = "agent_group"
    USER = "user"
    ISSUER = "issuer"
    ALL = "all"


KINDS: tuple[str, ...] = tuple(k.value for k in KillKind)
# The kinds that name ids (all of them but `all`).
ID_KINDS: tuple[KillKind, ...] = tuple(k for k in KillKind if k is not KillKind.ALL)
# killswitch.yaml list key for each kind.
_FILE_KEYS = {f"{k.value}s": k.value for k in ID_KINDS}


@dataclass(frozen=True)
class KillList:
    """What killswitch.yaml disables."""

    all: bool = False
    agents: frozenset[str] = frozenset()
    agent_groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    issuers: frozenset[str] = frozenset()
    # `revoked:`: tokens by jti, and tokens issued before a time (pep.controls.revocation).
    revoked: Revocations = field(default_factory=Revocations)

    def ids(self, kind: str) -> frozenset[str]:
        return {"agent": self.agents, "agent_group": self.agent_groups, "user": self.users, "issuer": self.issuers}.get(
            kind, frozenset()
        )


def parse_killswitch(data: Any, path: str) -> tuple[KillList, list[SourceProblem]]:
    problems: list[SourceProblem] = []
    if data is None:
        return KillList(), problems
    if not isinstance(data, Mapping) or set(data) - {"disabled", "revoked"}:
        return KillList(), [SourceProblem(path, "expected a mapping with keys `disabled` and `revoked`", line_of(data))]
    revoked, problems = parse_revoked(data.get("revoked"), path, line_of(data))
    disabled = data.get("disabled") or {}
    if not isinstance(disabled, Mapping):
        return KillList(), [SourceProblem(path, "`disabled` must be a mapping", line_of(data))]
    line = line_of(disabled, line_of(data))
    unknown = set(disabled) - {"all", *_FILE_KEYS}
    if unknown:
        problems.append(SourceProblem(path, f"unknown key {sorted(unknown)[0]!r} under `disabled`", line))
    everything = disabled.get("all", False)
    if not isinstance(everything, bool):
        problems.append(SourceProblem(path, "`disabled.all` must be true or false", line))
        everything = True  # fail closed while the file is wrong
    lists: dict[str, frozenset[str]] = {}
    for key in _FILE_KEYS:
        value = disabled.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(SourceProblem(path, f"`disabled.{key}` must be a list of ids", line))
            value = []
        lists[key] = frozenset(value)
    return KillList(all=everything, **lists, revoked=revoked), problems
