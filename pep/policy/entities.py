"""The entity store a snapshot is built from: entities.json plus the registry's agents and groups."""

from __future__ import annotations

import json
from typing import Any

import cedarpy

from pep.errors import SourceProblem
from pep.policy.files import AGENTS_FILE, ENTITIES_FILE
from pep.policy.registry import AgentRecord, Registry, agent_entity, group_entities
from pep.policy.source import LineDict, SourceProblemError, key_col, key_line, load_json
from pep.uids import AGENT, format_uid, parse_json_uid


def build_entities(
    entities_text: str | None,
    registry: Registry,
    schema: cedarpy.Schema | None,
    problems: list[SourceProblem],
) -> list[dict[str, Any]] | None:
    """Stored entities plus the registry's agents and groups, checked against the schema.

    entities.json is parsed whole by Cedar. Agents are checked one per distinct attribute
    shape: parsing 100,000 agents through Cedar would take seconds, and agents of one
    shape pass or fail alike.
    """
    stored: list[Any] = []
    if entities_text is not None:
        try:
            stored = load_json(entities_text, ENTITIES_FILE)
        except SourceProblemError as e:
            problems.append(e.problem)
            return None
        if not isinstance(stored, list):
            problems.append(SourceProblem(ENTITIES_FILE, "expected a JSON list of Cedar entities"))
            return None
    uids = set()
    lines = _element_lines(entities_text or "[]", len(stored))
    for i, ent in enumerate(stored):
        uid = parse_json_uid(ent.get("uid") if isinstance(ent, dict) else None)
        if uid is None:
            problems.append(SourceProblem(ENTITIES_FILE, f"entity [{i}] needs a uid with a type and an id", lines[i]))
            continue
        uids.add(uid)
    clashes = [a for a in registry.agents if (AGENT, a) in uids]
    for a in clashes:
        problems.append(SourceProblem(ENTITIES_FILE, f"{format_uid((AGENT, a))} is defined here and in {AGENTS_FILE}"))
    groups = group_entities(registry, uids)
    try:
        cedarpy.Entities.from_json_str(json.dumps(stored), schema, release_gil=True)
    except (ValueError, TypeError) as e:
        problems.extend(_locate(stored, schema, lines) or [SourceProblem(ENTITIES_FILE, f"invalid entities: {e}")])
        return None
    shapes: dict[str, AgentRecord] = {}
    for rec in registry.agents.values():
        shapes.setdefault(_shape(rec.attributes or {}) + ("+parents" if rec.groups else ""), rec)
    for ent in [*(agent_entity(rec) for rec in shapes.values()), *groups]:
        try:
            cedarpy.Entities.from_json_str(json.dumps([ent]), schema)
        except (ValueError, TypeError) as e:
            what = format_uid((ent["uid"]["type"], ent["uid"]["id"]))
            found = registry.get(ent["uid"]["id"]) if ent["uid"]["type"] == AGENT else None
            located = _agent_problems(found, ent, schema) if found is not None else []
            where = found.line if found is not None else 1
            problems.extend(located or [SourceProblem(AGENTS_FILE, f"{what} does not fit the schema: {e}", where)])
    return [*stored, *groups]


def _agent_problems(rec: AgentRecord, ent: dict[str, Any], schema: cedarpy.Schema | None) -> list[SourceProblem]:
    """The attributes (or groups) of an agent entry that do not fit the schema, each at its key.

    Cedar says only "entity does not conform to the schema": each attribute is tried alone."""
    attrs, parents = ent["attrs"], ent["parents"]
    what = format_uid((AGENT, rec.id))

    def refusal(some: dict[str, Any], with_parents: list[Any]) -> str | None:
        try:
            cedarpy.Entities.from_json_str(json.dumps([{**ent, "attrs": some, "parents": with_parents}]), schema)
        except (ValueError, TypeError) as e:
            return str(e)
        return None

    found = []
    if refusal(attrs, []) is None and refusal(attrs, parents) is not None:
        found.append(SourceProblem(AGENTS_FILE, f"{what}: groups: an agent's parents must be AgentGroups", rec.line))
    if refusal({}, []) is None:
        bad = {k: refusal({k: attrs[k]}, []) for k in attrs}
    else:
        bad = {k: "" for k in attrs if refusal({j: v for j, v in attrs.items() if j != k}, []) is None}
        if not bad:
            found.append(
                SourceProblem(AGENTS_FILE, f"{what}: a required attribute (declared without `?`) is missing", rec.line)
            )
    for k, why in bad.items():
        if why is None:
            continue
        value = json.dumps(attrs[k])
        shown = value if len(value) <= 60 else value[:57] + "..."
        if "does not conform" in why:
            text = f"{shown} is not of the type schema.cedarschema declares for Agent.{k}"
        elif "deserialization" in why:
            text = f"Agent declares no attribute `{k}` in schema.cedarschema"
        else:
            text = f"{shown} is not declared for Agent, or not of its declared type"
        line, col = key_line(rec.attributes, k, rec.line), key_col(rec.attributes, k)
        found.append(SourceProblem(AGENTS_FILE, f"{what}: attributes.{k}: {text}", line, col))
    return found


def _locate(stored: list[Any], schema: cedarpy.Schema | None, lines: list[int]) -> list[SourceProblem]:
    """The entities Cedar refuses one by one, each at its line (the first few: the rest alike)."""
    found: list[SourceProblem] = []
    for i, ent in enumerate(stored):
        try:
            cedarpy.Entities.from_json_str(json.dumps([ent]), schema)
        except (ValueError, TypeError) as e:
            uid = parse_json_uid(ent.get("uid") if isinstance(ent, dict) else None)
            what = format_uid(uid) if uid is not None else f"entity [{i}]"
            found.append(SourceProblem(ENTITIES_FILE, f"invalid entity {what}: {e}", lines[i]))
            if len(found) >= 20:
                break
    return found


def _element_lines(text: str, count: int) -> list[int]:
    """The line each element of a top-level JSON list starts on (1 where it cannot be told)."""
    lines = [1] * count
    decoder = json.JSONDecoder()
    i = text.find("[") + 1
    line, counted = 1, 0
    try:
        for n in range(count):
            while text[i] in " \t\r\n,":
                i += 1
            line += text.count("\n", counted, i)
            lines[n], counted = line, i
            _, i = decoder.raw_decode(text, i)
    except (ValueError, IndexError, RecursionError):
        pass
    return lines


_SCALAR_NAMES = {str: "str", bool: "bool", int: "int", float: "float"}


def _shape(value: Any) -> str:
    """The JSON types of a value, recursively: what schema validation depends on."""
    if type(value) in (dict, LineDict) and not ("__entity" in value or "__extn" in value):
        # The common agent: a flat record of scalars, named without a call per attribute.
        parts = []
        for k, v in sorted(value.items()):
            name = _SCALAR_NAMES.get(type(v))
            parts.append(f"{k}:{name if name is not None else _shape(v)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, dict):
        if "__entity" in value or "__extn" in value:
            return json.dumps(value, sort_keys=True)
        return "{" + ",".join(f"{k}:{_shape(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(sorted({_shape(v) for v in value})) + "]"
    return type(value).__name__
