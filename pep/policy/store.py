"""The policy store: holds the current snapshot and swaps in new ones atomically.

Readers call `current()` once per request; replacing one attribute reference is atomic
in CPython, so a reader sees the old set or the new one, never half of each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pep.errors import PolicyLoadError
from pep.metrics import Metrics
from pep.policy.files import content_version
from pep.policy.loader import load_snapshot
from pep.policy.snapshot import Snapshot

log = logging.getLogger(__name__)


class PolicyStore:
    def __init__(self, directory: str, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._metrics = metrics
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.last_error: PolicyLoadError | None = None
        # The content version last rejected: not retried until the files change again.
        self._failed_version: str | None = None
        # Parses of unchanged policy files, reused by the next reload.
        self._parse_cache: dict[Any, Any] = {}

    def current(self) -> Snapshot | None:
        return self._snapshot

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def reload_if_changed(self) -> bool | None:
        """Reload when the content differs from what is served (or last failed); None if unchanged."""
        version = content_version(self.directory)
        current = self._snapshot.version if self._snapshot is not None else None
        if version is None and current is None and self.last_error is not None:
            return None  # still missing; already reported
        if version is not None and version in (current, self._failed_version):
            return None
        return self.load()

    def load(self) -> bool:
        """Build and swap in a new snapshot; on failure keep the last good one."""
        with self._lock:
            now = self._clock()
            try:
                snapshot = load_snapshot(self.directory, loaded_at=now, cache=self._parse_cache)
            except PolicyLoadError as e:
                self.last_error = e
                self._failed_version = e.version
                self._metrics.policy_failed()
                for problem in e.problems:
                    log.error("policy load rejected: %s", problem)
                if self._snapshot is not None:
                    log.error("still serving policy version %s", self._snapshot.version)
                return False
            if self._snapshot is not None and snapshot.version == self._snapshot.version:
                return True
            self._snapshot = snapshot
            self.last_error = None
            self._failed_version = None
            self._metrics.set_actions(snapshot.actions)
            self._metrics.policy_loaded(snapshot.version, snapshot.policy_count, len(snapshot.registry), now)
            log.info(
                "serving policy version %s: %d policies, %d agents",
                snapshot.version,
                snapshot.policy_count,
                len(snapshot.registry),
            )
            for listener in self._listeners:
                listener(snapshot)
            return True
