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

from pep.errors import PolicyLoadError, SourceProblem
from pep.metrics import Metrics
from pep.policy.files import content_version
from pep.policy.loader import load_snapshot
from pep.policy.snapshot import Snapshot

log = logging.getLogger(__name__)


# Problems logged per rejected load (all of them are in `last_error` and `pep validate`).
MAX_LOGGED_PROBLEMS = 20
# Distinct unexpected errors whose traceback has been logged (each is logged once).
MAX_TRACEBACKS = 64
# What `reload_if_changed` compares while the directory cannot be opened at all.
_UNREADABLE = "unreadable"


class PolicyStore:
    def __init__(
        self,
        directory: str,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        require_schema: bool = True,
    ) -> None:
        self.directory = directory
        self._metrics = metrics
        self._clock = clock
        # `policies_require_schema`: a set without schema.cedarschema is a failed load.
        self._require_schema = require_schema
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.last_error: PolicyLoadError | None = None
        # The content version last rejected (or _UNREADABLE): not retried until the files change.
        self._failed_version: str | None = None
        # Parses of unchanged policy files, reused by the next reload.
        self._parse_cache: dict[Any, Any] = {}
        self._tracebacks: set[tuple[str, str]] = set()

    def current(self) -> Snapshot | None:
        return self._snapshot

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def reload_if_changed(self) -> bool | None:
        """Reload when the content differs from what is served (or last failed); None if unchanged."""
        try:
            version = content_version(self.directory) or _UNREADABLE
        except Exception:  # a bug: load() reports it
            version = None
        current = self._snapshot.version if self._snapshot is not None else None
        if version is not None and version in (current, self._failed_version):
            return None
        return self.load()

    def load(self) -> bool:
        """Build and swap in a new snapshot; on failure keep the last good one.

        Never raises: any error, expected or not, is a failed load, counted in
        `pep_policy_reloads_total{result="failure"}` and logged at ERROR.
        """
        with self._lock:
            now = self._clock()
            try:
                snapshot = load_snapshot(
                    self.directory, loaded_at=now, cache=self._parse_cache, require_schema=self._require_schema
                )
            except PolicyLoadError as e:
                self._rejected(e, e.__cause__)
                return False
            except Exception as e:  # a bug in pep: still never a reason to stop serving the last good set
                self._parse_cache.clear()
                problem = SourceProblem(self.directory, f"unexpected error while loading: {type(e).__name__}: {e}")
                self._rejected(PolicyLoadError([problem]), e)
                return False
            previous = self._snapshot
            if previous is not None and snapshot.version == previous.version:
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
            if snapshot.schema is None and (previous is None or previous.schema is not None):
                log.warning("policy version %s has no schema: policies are not validated", snapshot.version)
            for listener in self._listeners:
                try:
                    listener(snapshot)
                except Exception as e:  # the set is served; one listener's bug must not stop the others
                    self._unexpected(f"a policy swap listener failed in {self.directory}", e)
            return True

    def _rejected(self, error: PolicyLoadError, cause: BaseException | None) -> None:
        self.last_error = error
        self._failed_version = error.version or _UNREADABLE
        self._metrics.policy_failed()
        if cause is not None and not isinstance(cause, PolicyLoadError):
            self._unexpected(f"policy load of {self.directory} failed", cause)
        else:
            for problem in error.problems[:MAX_LOGGED_PROBLEMS]:
                log.error("policy load rejected: %s", problem)
            if len(error.problems) > MAX_LOGGED_PROBLEMS:
                log.error("policy load rejected: %d more problems", len(error.problems) - MAX_LOGGED_PROBLEMS)
        if self._snapshot is not None:
            log.error("still serving policy version %s", self._snapshot.version)

    def _unexpected(self, what: str, error: BaseException) -> None:
        """One ERROR line; the traceback only the first time this error is seen."""
        key = (type(error).__name__, str(error))
        first = key not in self._tracebacks and len(self._tracebacks) < MAX_TRACEBACKS
        if first:
            self._tracebacks.add(key)
        log.error("%s: unexpected %s: %s", what, key[0], key[1], exc_info=error if first else None)
