"""Entities described by the caller: properties merged over what the entity store holds."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import cedarpy

from pep.errors import RequestError
from pep.policy.evaluate import Query, roots_of
from pep.policy.request import cedar_value
from pep.policy.slicing import entity_refs
from pep.policy.snapshot import Snapshot
from pep.uids import Uid


def _stored_entity(snapshot: Snapshot, uid: Uid) -> dict[str, Any]:
    for ent in json.loads(str(snapshot.entities_for([uid]))):
        if (ent["uid"]["type"], ent["uid"]["id"]) == uid:
            return dict(ent)
    raise ValueError(f'{uid[0]}::"{uid[1]}" is not in the entity store')  # pragma: no cover - checked by caller


def entities_with_properties(
    snapshot: Snapshot,
    query: Query,
    described: Sequence[tuple[Uid, Mapping[str, Any] | None, Sequence[Uid]]],
) -> cedarpy.Entities:
    """The query's entity slice, each described entity carrying its properties as attributes.

    An entity the store lacks is added with those attributes and parents (given neither, it
    stays absent, as Cedar leaves it). One the store holds keeps its parents and the
    attributes not given; the given ones win. Cedar only adds to an entity set, so
    replacing a stored entity rebuilds the slice without it.
    """
    added: dict[Uid, dict[str, Any]] = {}
    for uid, properties, parents in described:
        if not properties and not parents:
            continue
        attrs = cedar_value(dict(properties or {}), f'{uid[0]}::"{uid[1]}" properties')
        if uid in snapshot.entity_index:
            if parents:
                raise RequestError(f'{uid[0]}::"{uid[1]}" is in the entity store; its parents come from there')
            ent = _stored_entity(snapshot, uid)
            ent["attrs"] = {**(ent.get("attrs") or {}), **attrs}
        else:
            ent = {"uid": {"type": uid[0], "id": uid[1]}, "attrs": attrs, "parents": [_ref(p) for p in parents]}
        if uid in added and added[uid] != ent:
            raise RequestError(f'{uid[0]}::"{uid[1]}" is described twice with different properties')
        added[uid] = ent
    if not any(uid in snapshot.entity_index for uid in added):
        return snapshot.entities_for(roots_of([query]), list(added.values()) or None)
    roots = roots_of([query])
    for ent in added.values():
        roots.update(entity_refs(ent.get("attrs") or {}))
        roots.update((p["type"], p["id"]) for p in ent.get("parents") or ())
    rest = [e for e in json.loads(str(snapshot.entities_for(roots))) if (e["uid"]["type"], e["uid"]["id"]) not in added]
    return cedarpy.Entities.from_json_str(json.dumps([*rest, *added.values()]), snapshot.entity_index.schema)


def _ref(uid: Uid) -> dict[str, str]:
    return {"type": uid[0], "id": uid[1]}
