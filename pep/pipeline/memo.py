"""The decision memo: Cedar's outcome for a request seen before, under the same policy snapshot.

Exact by construction: the key is everything Cedar's answer depends on besides the snapshot,
which is the memo's scope (a new snapshot empties it). For a token principal that is the token
itself (its claims, with the snapshot's registry and the fixed config, determine the agent, the
chain, the user entity and the base context, the scopes policies see included: the token's
intersected with the registry's), the action, the resource, the caller's context as
Cedar gets it, the resource's own entity, and whether the context is validated. Only evaluation
is skipped: the token is verified, the controls admit (kill switch, lifecycle, rate limits), the
delegation grants hold and the decision is recorded, logged and counted on every call.
Bounded (`decision_memo_size` entries, least recently used first out).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from pep.decision import Outcome
from pep.policy.lru import LRU
from pep.policy.request import Check
from pep.policy.snapshot import Snapshot

Key = tuple[str, str, str, str, bytes, bytes, bool]
_OPTS = orjson.OPT_SORT_KEYS


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTS)


class DecisionMemo:
    def __init__(self, size: int, on_lookup: Callable[[bool], None] = lambda _hit: None) -> None:
        self._size = size
        self._on_lookup = on_lookup
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._entries: LRU[Key, Outcome] = LRU(size)

    def _for(self, snapshot: Snapshot) -> LRU[Key, Outcome]:
        """The entries of this snapshot: a new one starts empty, never sees another's."""
        with self._lock:
            if snapshot is not self._snapshot:
                self._snapshot, self._entries = snapshot, LRU(self._size)
            return self._entries

    def lookup(
        self,
        snapshot: Snapshot,
        token: str,
        checks: Sequence[Check],
        contexts: Sequence[Mapping[str, Any]],
        resources: Sequence[Mapping[str, Any] | None],
        validate: bool,
    ) -> tuple[list[Key], list[Outcome | None]]:
        entries = self._for(snapshot)
        keys: list[Key] = [
            (
                token,
                check.action,
                check.resource.type,
                check.resource.id,
                _canonical(context),
                _canonical(resource) if resource is not None else b"",
                validate,
            )
            for check, context, resource in zip(checks, contexts, resources, strict=True)
        ]
        found = [entries.get(key) for key in keys]
        for outcome in found:
            self._on_lookup(outcome is not None)
        return keys, found

    def store(self, snapshot: Snapshot, keys: Sequence[Key], outcomes: Sequence[Outcome]) -> None:
        entries = self._for(snapshot)
        for key, outcome in zip(keys, outcomes, strict=True):
            entries.put(key, outcome)
