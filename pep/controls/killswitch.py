"""The kill switch: `killswitch.yaml` (git, reloaded with the policies) plus immediate
flips through the admin API, which survive reloads until lifted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pep.errors import ControlError, SourceProblem
from pep.policy.source import line_of
from pep.reasons import Reason


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

    def ids(self, kind: str) -> frozenset[str]:
        return {"agent": self.agents, "agent_group": self.agent_groups, "user": self.users, "issuer": self.issuers}.get(
            kind, frozenset()
        )


def parse_killswitch(data: Any, path: str) -> tuple[KillList, list[SourceProblem]]:
    problems: list[SourceProblem] = []
    if data is None:
        return KillList(), problems
    if not isinstance(data, Mapping) or set(data) - {"disabled"}:
        return KillList(), [SourceProblem(path, "expected a mapping with one key, `disabled`", line_of(data))]
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
    return KillList(all=everything, **lists), problems


@dataclass(frozen=True)
class KillEntry:
    kind: str
    id: str
    reason: str
    since: float
    actor: str = ""


@dataclass
class RuntimeKills:
    """Disables made through the admin API. Thread-safe; readers take a frozen view."""

    clock: Callable[[], float] = time.time
    _entries: dict[tuple[str, str], KillEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _view: Mapping[tuple[str, str], KillEntry] = field(default_factory=dict)

    def disable(self, kind: str, id_: str, reason: str, actor: str = "") -> bool:
        key = (kind, "" if kind == "all" else id_)
        with self._lock:
            if key in self._entries:
                return False
            self._entries[key] = KillEntry(kind, key[1], reason, self.clock(), actor)
            self._view = dict(self._entries)
            return True

    def enable(self, kind: str, id_: str) -> bool:
        key = (kind, "" if kind == "all" else id_)
        with self._lock:
            if self._entries.pop(key, None) is None:
                return False
            self._view = dict(self._entries)
            return True

    def entries(self) -> list[KillEntry]:
        return sorted(self._view.values(), key=lambda e: (e.kind, e.id))

    def view(self) -> Mapping[tuple[str, str], KillEntry]:
        return self._view


def check_kill(
    file: KillList,
    runtime: Mapping[tuple[str, str], KillEntry],
    *,
    chain: Sequence[str] = (),
    groups_of: Callable[[str], Iterable[str]] = lambda _a: (),
    user: str | None = None,
    issuer: str | None = None,
) -> None:
    """Raise `agent_disabled` if anything in the request is disabled, by file or by admin."""
    if file.all or ("all", "") in runtime:
        raise ControlError("everything is disabled by the kill switch", Reason.AGENT_DISABLED)
    if issuer is not None and (issuer in file.issuers or ("issuer", issuer) in runtime):
        raise ControlError(f"issuer {issuer!r} is disabled by the kill switch", Reason.AGENT_DISABLED)
    if user is not None and (user in file.users or ("user", user) in runtime):
        raise ControlError(f"user {user!r} is disabled by the kill switch", Reason.AGENT_DISABLED)
    for agent in chain:
        if agent in file.agents or ("agent", agent) in runtime:
            raise ControlError(f"agent {agent!r} is disabled by the kill switch", Reason.AGENT_DISABLED)
        for group in groups_of(agent):
            if group in file.agent_groups or ("agent_group", group) in runtime:
                raise ControlError(f"agent {agent!r} is in disabled group {group!r}", Reason.AGENT_DISABLED)
