"""Bounded, thread-safe caches: verified tokens (LRU) and DPoP proof `jti`s (replay)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class ExpiringLRU(Generic[V]):
    """LRU map whose entries also die at a deadline (seconds, same clock as callers).

    Used for verified tokens, keyed on the whole token string: a key on the signature
    alone would let a different header or payload ride on a cached verdict.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max(0, max_entries)
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> V | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            deadline, value = item
            if now >= deadline:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: V, deadline: float, now: float) -> None:
        if self._max == 0 or now >= deadline:
            return
        with self._lock:
            self._entries[key] = (deadline, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class ReplayStore(Protocol):
    """Where DPoP proof keys are remembered: this process (`ReplayCache`) or the fleet's
    (pep.state, handed in by the composition root). `add` may raise a `PepError` (its reason
    is the decision's) when the store cannot tell."""

    def add(self, key: Hashable, deadline: float, now: float) -> bool: ...


class ReplayCache:
    """Remembers keys until their deadline; `add` is an atomic check-and-insert.

    Bounded: when full of live entries the oldest insertion is dropped. Entries are
    inserted at roughly their proof's creation time, so the oldest is also the one
    whose acceptance window closes first; a bound is what keeps a flood of proofs
    from growing memory without limit.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max(1, max_entries)
        self._entries: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: Hashable, deadline: float, now: float) -> bool:
        """Insert `key`; False if it is already present and not yet expired."""
        with self._lock:
            seen = self._entries.get(key)
            if seen is not None and now < seen:
                return False
            self._entries.pop(key, None)
            self._purge(now)
            self._entries[key] = deadline
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return True

    def _purge(self, now: float) -> None:
        # Amortised: drop expired entries from the old end, stop at the first live one.
        while self._entries:
            key, deadline = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
