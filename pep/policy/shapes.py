"""Request shapes the schema has accepted, so a request of a known shape skips re-validation.

Cedar validates a request against the schema by types alone: the principal's and resource's
entity types for the action, and the context's record structure, attribute types, entity
types of references and extension functions. Two requests with the same shape pass or fail
alike, so once Cedar has accepted a shape under a snapshot's schema, later requests of that
shape are evaluated without the schema (about 100 us of Cedar's time per request here) and
decide the same. A context that could lean on the schema to be read at all (an object that
is exactly `{"type", "id"}` or `{"fn", "arg"}`, which Cedar reads as an entity or an extension
value only with a schema) has no shape and is always validated. A schema with enumerated entity
types (`entity Color enum [...]`) validates ids too, not only types: under it every request is
validated. The entities a request describes (a resource with its attributes, a user from the
token) are validated by the same rule: by type, attribute shapes and parent types.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from pep.uids import Uid

MAX_SHAPES = 4096  # per snapshot; past it, new shapes are validated every time
ENUM_TYPES = re.compile(r"\benum\s*\[")
_IMPLICIT = ({"type", "id"}, {"fn", "arg"})


def context_shape(value: Any) -> str | None:
    """The JSON types of a Cedar context value, recursively, or None if it has no safe shape."""
    kind = type(value)
    if kind is str:
        return "s"
    if kind is bool:
        return "b"
    if kind is int:
        return "i"
    if kind is dict:
        keys = value.keys()
        if "__expr" in value:
            return None
        if "__entity" in value or "__extn" in value:
            if len(value) != 1:
                return None
            inner = value.get("__entity", value.get("__extn"))
            if not isinstance(inner, dict):
                return None
            if "__entity" in value:
                return f"E{inner.get('type')!r}" if isinstance(inner.get("type"), str) else None
            return f"X{inner.get('fn')!r}" if isinstance(inner.get("fn"), str) else None
        if set(keys) in _IMPLICIT:
            return None
        parts = []
        for k in sorted(keys):
            inner_shape = context_shape(value[k])
            if inner_shape is None:
                return None
            parts.append(f"{k!r}:{inner_shape}")
        return "{" + ",".join(parts) + "}"
    if kind is list:
        shapes = set()
        for item in value:
            inner_shape = context_shape(item)
            if inner_shape is None:
                return None
            shapes.add(inner_shape)
        return "[" + ",".join(sorted(shapes)) + "]"
    return None


def entity_shape(entity: Any) -> tuple[str, ...] | None:
    """A request entity's shape (type, attributes, parent types) the schema validates it by, or
    None when it has no safe one: an entity of a known shape needs no validation against the
    schema when it is added to a slice, as a request of a known shape needs none to be asked."""
    uid, attrs, parents = entity.get("uid"), entity.get("attrs") or {}, entity.get("parents") or ()
    if not isinstance(uid, dict) or not isinstance(uid.get("type"), str) or not isinstance(attrs, dict):
        return None
    shape = context_shape(attrs)
    types = []
    for parent in parents:
        if not isinstance(parent, dict) or not isinstance(parent.get("type"), str):
            return None
        types.append(parent["type"])
    return None if shape is None else ("entity", uid["type"], shape, *sorted(set(types)))


class ValidatedShapes:
    """The shapes one snapshot's schema accepted (thread-safe, bounded)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._known: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()
        self._enabled = enabled

    @staticmethod
    def key(principal: Uid, action: Uid, resource: Uid, context: Any) -> tuple[str, Uid, str, str] | None:
        shape = context_shape(context)
        return None if shape is None else (principal[0], action, resource[0], shape)

    def known(self, key: tuple[Any, ...] | None) -> bool:
        return key is not None and key in self._known

    def learn(self, key: tuple[Any, ...] | None) -> None:
        if self._enabled and key is not None and len(self._known) < MAX_SHAPES:
            with self._lock:
                self._known.add(key)
