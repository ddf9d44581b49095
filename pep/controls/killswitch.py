"""The kill switch: `killswitch.yaml` (git, reloaded with the policies) plus immediate
flips through the admin API, which survive reloads until lifted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pep.errors import ControlError
from pep.policy.killswitch_file import ID_KINDS, KINDS, KillKind, KillList, parse_killswitch
from pep.reasons import Reason

# The file's types and parser live with the policy directory; these names stay importable from here.
__all__ = [
    "ID_KINDS",
    "KINDS",
    "KillEntry",
    "KillKind",
    "KillList",
    "RuntimeKills",
    "check_kill",
    "parse_killswitch",
]


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
