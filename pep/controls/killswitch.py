"""The kill switch: `killswitch.yaml` (git, reloaded with the policies) plus immediate
flips through the admin API, which survive reloads until lifted, and restarts too when a
`pep.state` store keeps them (`state.file`, or Redis for the whole fleet)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pep.errors import ControlError
from pep.policy.killswitch_file import KINDS, KillList
from pep.policy.revoked_file import STORED_KINDS
from pep.reasons import Reason
from pep.state import KillStore, StoredKill

log = logging.getLogger(__name__)
# Where an admin entry holds: this process only, or every replica sharing the Redis.
SCOPES = ("local", "fleet")
# Who made a runtime entry: the admin API (or `pep admin --state`), or anomaly containment.
SOURCES = ("admin", "anomaly")
# Runtime entries live in memory: bounded, so a runaway script cannot grow pep without limit.
MAX_ENTRIES = 10_000
# Stored kinds: the kill switch's and the revocations' (`revoked_token`, ...; pep.controls.revocation).
_KNOWN = (*KINDS, *STORED_KINDS)
# (action "disable" or "enable", the entry), whether it came from elsewhere (another replica, `pep admin --state`).
OnChange = Callable[[list[tuple[str, "KillEntry"]], bool], None]


@dataclass(frozen=True)
class KillEntry:
    kind: str
    id: str
    reason: str
    since: float
    actor: str = ""
    source: str = "admin"
    # A revocation (kind `revoked_*`): tokens issued before this time (Unix seconds).
    before: float | None = None

    @property
    def cutoff(self) -> float:
        """A revocation's time; an entry written without one (none pep writes) revokes up to when it was made."""
        return self.before if self.before is not None else self.since


@dataclass
class RuntimeKills:
    """Disables made at run time (admin API, anomaly containment). Thread-safe; readers take a frozen view.

    `on_change` hears every change, after the view has it.
    """

    clock: Callable[[], float] = time.time
    _entries: dict[tuple[str, str], KillEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _view: Mapping[tuple[str, str], KillEntry] = field(default_factory=dict)
    scope: str = "local"
    on_change: OnChange | None = None
    # Some revocation was ever held: set before the view that holds it, never cleared, so the
    # request path may skip the revocation checks while it is False without missing one.
    revoking: bool = False
    # Entries per (kind, source), kept as they change so the gauges cost O(1) per change, not a pass
    # over up to MAX_ENTRIES entries each time.
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def _bump(self, entry: KillEntry | None, by: int) -> None:
        if entry is not None:
            key = (entry.kind, entry.source)
            self._counts[key] = self._counts.get(key, 0) + by

    def counts(self) -> dict[tuple[str, str], int]:
        """How many entries there are of each (kind, source)."""
        with self._lock:
            return {k: n for k, n in self._counts.items() if n}

    def disable(self, kind: str, id_: str, reason: str, actor: str = "", source: str = "admin") -> bool:
        key = (kind, "" if kind == "all" else id_)
        with self._lock:
            if key in self._entries:
                return False
            entry = self._entries[key] = KillEntry(kind, key[1], reason, self.clock(), actor, source)
            self._bump(entry, 1)
            self._view = dict(self._entries)
        self._tell([("disable", entry)])
        return True

    def revoke(self, kind: str, id_: str, before: float, reason: str, actor: str = "") -> bool:
        """Revoke (kind `revoked_*`) what was issued before `before`; a later time replaces an earlier one."""
        key = (kind, id_)
        with self._lock:
            if _covered(self._entries.get(key), kind, before):
                return False
            self._bump(self._entries.get(key), -1)
            entry = self._entries[key] = KillEntry(kind, id_, reason, self.clock(), actor, "admin", before)
            self._bump(entry, 1)
            self.revoking = True
            self._view = dict(self._entries)
        self._tell([("disable", entry)])
        return True

    def enable(self, kind: str, id_: str) -> bool:
        key = (kind, "" if kind == "all" else id_)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._bump(entry, -1)
            self._view = dict(self._entries)
        self._tell([("enable", entry)])
        return True

    def _tell(self, changes: list[tuple[str, KillEntry]], remote: bool = False) -> None:
        if self.on_change is not None:
            self.on_change(changes, remote)

    def entries(self) -> list[KillEntry]:
        return sorted(self._view.values(), key=lambda e: (e.kind, e.id))

    def view(self) -> Mapping[tuple[str, str], KillEntry]:
        return self._view


class StoredKills(RuntimeKills):
    """Admin entries kept by a `pep.state` store; the request path still reads the frozen view.

    `on_change` hears every change the store applies, with whether it came from elsewhere
    (another replica, or `pep admin --state`).
    """

    def __init__(self, store: KillStore, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock, scope=store.scope)
        self.store = store
        store.listen(self._apply)

    def disable(self, kind: str, id_: str, reason: str, actor: str = "", source: str = "admin") -> bool:
        id_ = "" if kind == "all" else id_
        return self.store.put(StoredKill(kind, id_, reason, self.clock(), actor, source))

    def revoke(self, kind: str, id_: str, before: float, reason: str, actor: str = "") -> bool:
        if _covered(self._view.get((kind, id_)), kind, before):
            return False
        entry = StoredKill(kind, id_, reason, self.clock(), actor, "admin", before)
        return self.store.put(entry, replace=kind != "revoked_token")  # a later time replaces an earlier one

    def enable(self, kind: str, id_: str) -> bool:
        return self.store.delete(kind, "" if kind == "all" else id_)

    def _apply(
        self, entries: Mapping[tuple[str, str], StoredKill], changes: list[tuple[str, StoredKill]], remote: bool
    ) -> None:
        # A kind this pep does not know (a newer writer, a stray hand edit) is left out, said once per change.
        view = {k: _entry(e) for k, e in entries.items() if e.kind in _KNOWN}
        with self._lock:
            self._entries = view
            self._counts = {}
            for entry in view.values():
                self._bump(entry, 1)
            if any(kind in STORED_KINDS for kind, _ in view):
                self.revoking = True
            self._view = dict(view)
        known = [(action, _entry(e)) for action, e in changes if e.kind in _KNOWN]
        if len(known) < len(changes):
            log.warning("kill switch: ignoring stored entries of unknown kinds (known: %s)", ", ".join(_KNOWN))
        if known:
            self._tell(known, remote)


def _covered(held: KillEntry | None, kind: str, before: float) -> bool:
    """Whether the revocation held already revokes all that one up to `before` would (a jti: held at all)."""
    if held is None:
        return False
    return kind == "revoked_token" or held.cutoff >= before


def _entry(e: StoredKill) -> KillEntry:
    return KillEntry(e.kind, e.id, e.reason, e.since, e.actor, e.source, e.before)


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
