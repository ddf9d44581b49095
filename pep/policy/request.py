"""A check in plain data, and the Cedar values and request entities built from it.

The keys pep sets in the context (docs/identity.md, "What Cedar sees") are reserved: a
caller key that collides with one is refused, never merged.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pep.errors import RequestError

RESERVED_CONTEXT_KEYS = frozenset({"on_behalf_of", "delegation", "token", "binding"})
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

# What a caller may send, per check (README, "Limits"). Past a limit the request is refused
# (INVALID_ARGUMENT), so an unauthenticated caller cannot make a log line or a slice large.
MAX_DEPTH = 32  # nesting of context and resource.attributes
MAX_ACTION = 256  # characters
MAX_TYPE = 256  # resource and parent entity types
MAX_ID = 1024  # resource and parent ids
MAX_PARENTS = 64
MAX_REQUEST_ID = 256
MAX_KEY = 256  # characters of one key in context or resource.attributes
MAX_VALUE_BYTES = 64 * 1024  # context, and resource.attributes, each: keys and strings, 8 per other value


@dataclass(frozen=True)
class ResourceRef:
    type: str
    id: str
    attributes: Mapping[str, Any] | None = None
    parents: tuple[tuple[str, str], ...] = ()
    # The transport's own view (an MCP tool's server): when the entity store holds the
    # resource, the store's attributes and parents are used instead of refusing these.
    implied: bool = False


@dataclass(frozen=True)
class Check:
    """One (action, resource, context) question, in plain data."""

    action: str
    resource: ResourceRef
    context: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""
    # The MCP proxy allows tool arguments up to its body limit; every other entry point MAX_VALUE_BYTES.
    max_context_bytes: int = MAX_VALUE_BYTES


def shown(where: str) -> str:
    """A field path as an error names it: at most 256 characters, the end kept."""
    return where if len(where) <= 256 else "…" + where[-255:]


def _bounded(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise RequestError(f"{what} is {len(text)} characters, more than the limit of {limit}")


def value_size(value: Any, where: str, limit: int = MAX_VALUE_BYTES) -> int:
    """The size `MAX_VALUE_BYTES` bounds, counted without recursion; refuses long keys and past the limit."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(key, str) and len(key) > MAX_KEY:
                    raise RequestError(f"{where}: a key of {len(key)} characters, more than the limit of {MAX_KEY}")
                size += len(str(key))
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            size += 8
            stack.extend(item)
        else:
            size += 8
        if size > limit:
            raise RequestError(f"{where} is larger than the limit of {limit} bytes")
    return size


def check_request_shape(check: Check) -> None:
    """Structural checks and size limits that make a request malformed (INVALID_ARGUMENT)."""
    if not check.action:
        raise RequestError("action is required")
    if not check.resource.type or not check.resource.id:
        raise RequestError("resource.type and resource.id are required")
    _bounded(check.action, MAX_ACTION, "action")
    _bounded(check.resource.type, MAX_TYPE, "resource.type")
    _bounded(check.resource.id, MAX_ID, "resource.id")
    _bounded(check.request_id, MAX_REQUEST_ID, "request_id")
    if len(check.resource.parents) > MAX_PARENTS:
        raise RequestError(f"resource has {len(check.resource.parents)} parents, more than the limit of {MAX_PARENTS}")
    for ptype, pid in check.resource.parents:
        if not ptype or not pid:
            raise RequestError("every resource parent needs a type and an id")
        _bounded(ptype, MAX_TYPE, "a resource parent's type")
        _bounded(pid, MAX_ID, "a resource parent's id")
    value_size(check.context, "context", check.max_context_bytes)
    if check.resource.attributes:
        value_size(check.resource.attributes, "resource.attributes")
    clash = RESERVED_CONTEXT_KEYS.intersection(check.context)
    if clash:
        raise RequestError(f"context key {sorted(clash)[0]!r} is reserved: pep sets it")


def cedar_value(value: Any, where: str, depth: int = 0) -> Any:
    """Turn a JSON-ish value from a protobuf Struct into Cedar JSON, or refuse it."""
    if depth > MAX_DEPTH:
        raise RequestError(f"{shown(where)}: nested deeper than {MAX_DEPTH}")
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise RequestError(f"{shown(where)}: {value} is outside Cedar's Long range")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RequestError(f"{shown(where)}: {value!r} is not a finite number")
        if not value.is_integer():
            raise RequestError(
                f"{shown(where)}: {value!r} is not a whole number; send decimals as "
                '{"__extn": {"fn": "decimal", "arg": "..."}}'
            )
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise RequestError(f"{shown(where)}: {value!r} is outside Cedar's Long range")
        return int(value)
    if value is None:
        raise RequestError(f"{shown(where)}: null has no Cedar value; leave the key out instead")
    if isinstance(value, Mapping):
        return {str(k): cedar_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [cedar_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise RequestError(f"{shown(where)}: unsupported value of type {type(value).__name__}")


def _entity(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def resource_entity(resource: ResourceRef, stored: Container[tuple[str, str]]) -> dict[str, Any] | None:
    """The resource as a request entity, or None when the store holds it or nothing is known.

    A resource sent without attributes or parents is left out, as Cedar does with an
    absent entity: `resource has x` is false rather than the request being refused.
    """
    if (resource.type, resource.id) in stored:
        if (resource.attributes or resource.parents) and not resource.implied:
            raise RequestError(
                f'resource {resource.type}::"{resource.id}" is in the entity store; '
                "its attributes and parents come from there"
            )
        return None
    if not resource.attributes and not resource.parents:
        return None
    return {
        "uid": _entity(resource.type, resource.id),
        "attrs": cedar_value(dict(resource.attributes or {}), "resource.attributes"),
        "parents": [_entity(t, i) for t, i in resource.parents],
    }


def entity_delta(entities: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]] | None:
    """The per-request entities, deduplicated by uid, or None if there are none."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for ent in entities:
        if ent is None:
            continue
        key = (ent["uid"]["type"], ent["uid"]["id"])
        if key in seen and seen[key] != ent:
            raise RequestError(f'entity {key[0]}::"{key[1]}" is described twice with different data')
        seen[key] = ent
    return list(seen.values()) if seen else None
