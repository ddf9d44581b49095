"""Admin kill-switch flips as plain records, and the stores that keep them beyond the process."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pep.errors import ConfigError
from pep.metrics import Metrics

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class StoredKill:
    kind: str
    id: str
    reason: str
    since: float
    actor: str = ""
    # Who made it: `admin` (the admin API, `pep admin --state`) or `anomaly` (anomaly containment).
    source: str = "admin"
    # Revocations (kinds `revoked_*`): tokens issued before this time (Unix seconds) are revoked.
    before: float | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.id)

    @classmethod
    def from_fields(cls, kind: str, id_: str, data: Mapping[str, Any]) -> StoredKill:
        """From stored JSON fields; ValueError when they are not what pep writes. Entries written
        before `source` existed are the admin API's."""
        reason, since, actor = data.get("reason"), data.get("since"), data.get("actor", "")
        source = data.get("source", "admin")
        if not isinstance(reason, str) or not isinstance(actor, str) or not isinstance(since, (int, float)):
            raise ValueError("reason, since and actor must be a string, a number and a string")
        if not isinstance(source, str) or not source:
            raise ValueError("source must be a non-empty string")
        before = data.get("before")
        if before is not None and (isinstance(before, bool) or not isinstance(before, (int, float))):
            raise ValueError("before must be a number")
        return cls(kind, id_, reason, float(since), actor, source, None if before is None else float(before))

    def fields(self) -> dict[str, Any]:
        """What a store keeps besides the key (the JSON `from_fields` reads back); `before` only when set,
        so entries without it read as they always did."""
        out: dict[str, Any] = {"reason": self.reason, "since": self.since, "actor": self.actor, "source": self.source}
        if self.before is not None:
            out["before"] = self.before
        return out


# (entries now, changes as (action, entry), whether they came from outside this process)
Listener = Callable[[Mapping[Key, StoredKill], list[tuple[str, StoredKill]], bool], None]


class KillStore:
    """Entries in memory; subclasses keep them somewhere that outlives the process.

    Every change reaches the one listener under the store's lock, so the view it builds
    follows the store's order.
    """

    scope = "local"

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.RLock()
        self._entries: dict[Key, StoredKill] = {}
        self._listener: Listener | None = None

    def listen(self, listener: Listener) -> None:
        with self._lock:
            self._listener = listener
            listener(dict(self._entries), [], False)

    def entries(self) -> dict[Key, StoredKill]:
        with self._lock:
            return dict(self._entries)

    def put(self, entry: StoredKill, replace: bool = False) -> bool:
        """Add `entry` (True) unless one with its key is held; `replace`: overwrite that one."""
        with self._lock:
            if entry.key in self._entries and not replace:
                return False
            self._set({**self._entries, entry.key: entry}, remote=False)
            self._persist()
            return True

    def delete(self, kind: str, id_: str) -> bool:
        with self._lock:
            if (kind, id_) not in self._entries:
                return False
            self._set({k: e for k, e in self._entries.items() if k != (kind, id_)}, remote=False)
            self._persist()
            return True

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _set(self, entries: dict[Key, StoredKill], *, remote: bool) -> None:
        """Replace the entries; the listener hears what changed (call with the lock held)."""
        old = self._entries
        changes = [("disable", e) for k, e in entries.items() if old.get(k) != e]  # new, or replaced
        changes += [("enable", e) for k, e in old.items() if k not in entries]
        self._entries = entries
        if changes and self._listener is not None:
            self._listener(dict(entries), changes, remote)

    def _persist(self) -> None:
        pass


class FileKills(KillStore):
    """`state.file`: flips written through (temporary file, then rename) and read back at start-up."""

    def __init__(self, path: str, metrics: Metrics) -> None:
        super().__init__(metrics)
        self.path = path

    def start(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise ConfigError("state.file", f"cannot read {self.path}: {e}") from None
        try:
            if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("entries"), list):
                raise ValueError('expected {"schema": 1, "entries": [...]}')
            entries = {}
            for item in data["entries"]:
                if (
                    not isinstance(item, dict)
                    or not isinstance(item.get("kind"), str)
                    or not isinstance(item.get("id"), str)
                ):
                    raise ValueError("every entry needs a kind and an id")
                entry = StoredKill.from_fields(item["kind"], item["id"], item)
                entries[entry.key] = entry
        except ValueError as e:
            raise ConfigError("state.file", f"{self.path} is not a pep state file: {e}") from None
        with self._lock:
            self._set(entries, remote=False)
        log.info("state: %d admin kill-switch entries from %s", len(entries), self.path)

    def _persist(self) -> None:
        entries = [{"kind": e.kind, "id": e.id, **e.fields()} for e in self._entries.values()]
        body = json.dumps({"schema": 1, "entries": entries}, indent=1)
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".pep-state-", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            # The flip holds in memory; only its survival across a restart is lost, and said so.
            self._metrics.state_errors.labels("file").inc()
            log.error("state: cannot write %s (%s): this flip is lost on restart", self.path, e.strerror or e)
