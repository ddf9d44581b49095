"""Watch the policy directory and reload on change.

Handles the three real update styles: files edited in place, git-sync's symlink swap of
the whole tree, and a ConfigMap's `..data` symlink swap. Events are debounced (one
reload per burst of writes). A periodic content-hash check backs the watcher up, so a
missed event can only delay a reload, never lose it.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from pep.config import ReloadConfig
from pep.policy.store import PolicyStore

log = logging.getLogger(__name__)
MAX_SETTLE_FACTOR = 5
# The kernel delivers only these. The parent folder is watched for the directory's own entry
# (a symlink swap is a create or a move), so writes beside it, such as a decision log in the
# same folder, wake nothing; nor do reads of the tree, our own periodic check's included.
ENTRY_EVENTS = [DirCreatedEvent, FileCreatedEvent, DirDeletedEvent, FileDeletedEvent, DirMovedEvent, FileMovedEvent]
TREE_EVENTS = [*ENTRY_EVENTS, DirModifiedEvent, FileModifiedEvent, FileClosedEvent]


class _Nudge(FileSystemEventHandler):
    def __init__(self, watcher: PolicyWatcher, only: str | None = None) -> None:
        self._watcher = watcher
        self._only = only

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (our own included) change nothing
        if self._only is not None:
            paths = {_text(event.src_path), _text(getattr(event, "dest_path", ""))}
            if self._only not in paths:
                return  # another entry of the parent folder
        self._watcher.nudge()


def _text(path: str | bytes) -> str:
    return os.fsdecode(path) if path else ""


class PolicyWatcher:
    def __init__(self, store: PolicyStore, config: ReloadConfig) -> None:
        self._store = store
        self._config = config
        self._directory = os.path.abspath(store.directory)
        self._event = threading.Event()
        self._stop = threading.Event()
        self._last_event = 0.0
        self._observer: BaseObserver | None = None
        self._tree_watch: ObservedWatch | None = None
        self._watched_real: str | None = None
        self._thread = threading.Thread(target=self._run, name="pep-policy-watcher", daemon=True)

    def start(self) -> None:
        if self._config.watch:
            self._observer = Observer()
            parent = os.path.dirname(self._directory)
            if os.path.isdir(parent):
                # The parent sees a swap of the directory's own symlink (git-sync).
                self._observer.schedule(
                    _Nudge(self, only=self._directory), parent, recursive=False, event_filter=ENTRY_EVENTS
                )
            self._rewatch_tree()
            self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._event.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
        self._thread.join(timeout=2)

    def nudge(self) -> None:
        self._last_event = time.monotonic()
        self._event.set()

    def _rewatch_tree(self) -> None:
        """Watch the directory's current real target; git-sync moves it on each sync."""
        if self._observer is None:
            return
        real = os.path.realpath(self._directory)
        if real == self._watched_real or not os.path.isdir(real):
            return
        if self._tree_watch is not None:
            try:
                self._observer.unschedule(self._tree_watch)
            except (KeyError, ValueError):
                pass
        try:
            self._tree_watch = self._observer.schedule(_Nudge(self), real, recursive=True, event_filter=TREE_EVENTS)
            self._watched_real = real
        except OSError as e:
            log.warning("cannot watch %s (%s); relying on the periodic check", real, e)

    def _run(self) -> None:
        settle = self._config.settle_seconds
        while not self._stop.is_set():
            woke = self._event.wait(self._config.poll_seconds)
            if self._stop.is_set():
                return
            if woke:
                # Wait until writes have been quiet for `settle` seconds, but never more
                # than MAX_SETTLE_FACTOR times that: a writer that never stops cannot
                # hold a reload back forever.
                give_up = time.monotonic() + settle * MAX_SETTLE_FACTOR
                while True:
                    now = time.monotonic()
                    quiet_for = now - self._last_event
                    if quiet_for >= settle or now >= give_up:
                        break
                    time.sleep(min(settle - quiet_for, give_up - now))
                self._event.clear()
            try:
                self._store.reload_if_changed()
            except Exception:
                log.exception("policy reload check failed")
            self._rewatch_tree()
