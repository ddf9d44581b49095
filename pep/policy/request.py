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
_MAX_DEPTH = 32


@dataclass(frozen=True)
class ResourceRef:
    type: str
    id: str
    attributes: Mapping[str, Any] | None = None
    parents: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Check:
    """One (action, resource, context) question, in plain data."""

    action: str
    resource: ResourceRef
    context: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""


def check_request_shape(check: Check) -> None:
    """Structural checks that make a request malformed (INVALID_ARGUMENT)."""
    if not check.action:
        raise RequestError("action is required")
    if not check.resource.type or not check.resource.id:
        raise RequestError("resource.type and resource.id are required")
    for ptype, pid in check.resource.parents:
        if not ptype or not pid:
            raise RequestError("every resource parent needs a type and an id")
    clash = RESERVED_CONTEXT_KEYS.intersection(check.context)
    if clash:
        raise RequestError(f"context key {sorted(clash)[0]!r} is reserved: pep sets it")


def cedar_value(value: Any, where: str, depth: int = 0) -> Any:
    """Turn a JSON-ish value from a protobuf Struct into Cedar JSON, or refuse it."""
    if depth > _MAX_DEPTH:
        raise RequestError(f"{where}: nested deeper than {_MAX_DEPTH}")
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise RequestError(f"{where}: {value} is outside Cedar's Long range")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise RequestError(
                f"{where}: {value!r} is not a whole number; send decimals as "
                '{"__extn": {"fn": "decimal", "arg": "..."}}'
            )
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise RequestError(f"{where}: {value!r} is outside Cedar's Long range")
        return int(value)
    if value is None:
        raise RequestError(f"{where}: null has no Cedar value; leave the key out instead")
    if isinstance(value, Mapping):
        return {str(k): cedar_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [cedar_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise RequestError(f"{where}: unsupported value of type {type(value).__name__}")


def _entity(type_: str, id_: str) -> dict[str, str]:
    return {"type": type_, "id": id_}


def resource_entity(resource: ResourceRef, stored: Container[tuple[str, str]]) -> dict[str, Any] | None:
    """The resource as a request entity, or None when the store holds it or nothing is known.

    A resource sent without attributes or parents is left out, as Cedar does with an
    absent entity: `resource has x` is false rather than the request being refused.
    """
    if (resource.type, resource.id) in stored:
        if resource.attributes or resource.parents:
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
