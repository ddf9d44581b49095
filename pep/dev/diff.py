"""What changed between two policy directories (`pep diff OLD NEW`, docs/policy-directory.md).

Policies are compared by id as Cedar JSON (formatting and comments are no change), the
schema by declaration (pep.dev.schema_diff), agents by id, links by id; entities.json,
limits.yaml and killswitch.yaml as whole files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pep.dev.schema_diff import schema_diff
from pep.errors import PolicyLoadError, SourceProblem
from pep.policy.files import (
    AGENTS_FILE,
    ENTITIES_FILE,
    KILLSWITCH_FILE,
    LIMITS_FILE,
    LINKS_FILE,
    SCHEMA_FILE,
    read_sources,
)
from pep.policy.loader import parse_policies
from pep.policy.registry import AgentRecord, parse_registry
from pep.policy.slicing import link_value
from pep.policy.source import SourceProblemError, load_yaml

WHOLE_FILES = (ENTITIES_FILE, LIMITS_FILE, KILLSWITCH_FILE)
_AGENT_FIELDS = ("owner", "status", "expires", "groups", "attributes", "scopes")


class DiffError(Exception):
    """A directory that cannot be read for a diff: the message names the file and line."""


@dataclass(frozen=True)
class Side:
    policies: Mapping[str, tuple[str, Any]]  # id -> (file:line, Cedar JSON)
    shadow: Mapping[str, tuple[str, Any]]
    schema: str | None
    agents: Mapping[str, AgentRecord]
    links: Mapping[str, Mapping[str, Any]]  # id -> {template, values}
    files: Mapping[str, str | None]


def read_side(directory: str) -> Side:
    """One directory's policies, schema, agents, links and other files; DiffError if they do not parse."""
    try:
        read = read_sources(directory)
    except PolicyLoadError as e:
        raise DiffError(str(e.problems[0])) from None
    if read.problems:
        raise DiffError(_problems(read.problems))
    policies = _policies(read.live)
    shadow = _policies(read.shadow)
    agents: dict[str, AgentRecord] = {}
    if read.others[AGENTS_FILE] is not None:
        registry, _ = parse_registry(_yaml(read.others[AGENTS_FILE], AGENTS_FILE), AGENTS_FILE)
        agents = dict(registry.agents)
    links: dict[str, Mapping[str, Any]] = {}
    data = _yaml(read.others[LINKS_FILE], LINKS_FILE) if read.others[LINKS_FILE] is not None else None
    entries = data.get("links") if isinstance(data, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            values = entry.get("values")
            norm = {k: link_value(v) for k, v in values.items()} if isinstance(values, Mapping) else values
            links[entry["id"]] = {"template": entry.get("template"), "values": norm}
    return Side(policies, shadow, read.others[SCHEMA_FILE], agents, links, {f: read.others[f] for f in WHOLE_FILES})


def _problems(problems: list[SourceProblem]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def _yaml(text: str | None, path: str) -> Any:
    try:
        return load_yaml(text or "", path)
    except SourceProblemError as e:
        raise DiffError(str(e.problem)) from None


def _policies(sources: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    est, infos, problems = parse_policies(sources)
    if problems:
        raise DiffError(_problems(problems))
    bodies = {**est["staticPolicies"], **est["templates"]}
    return {pid: (f"{info.path}:{info.line}", bodies[pid]) for pid, info in infos.items()}


def _by_id(old: Mapping[str, tuple[str, Any]], new: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    return {
        "added": [{"id": i, "source": new[i][0]} for i in sorted(new.keys() - old.keys())],
        "removed": [{"id": i, "source": old[i][0]} for i in sorted(old.keys() - new.keys())],
        "changed": [
            {"id": i, "old_source": old[i][0], "new_source": new[i][0]}
            for i in sorted(old.keys() & new.keys())
            if old[i][1] != new[i][1]
        ],
    }


def _agent_value(rec: AgentRecord, name: str) -> Any:
    value = getattr(rec, name)
    if name == "expires":
        return value.isoformat() if value else None
    if name == "scopes":
        return None if value is None else sorted(value)
    if name == "groups":
        return sorted(value)
    if name == "attributes":
        return json.loads(json.dumps(value, sort_keys=True, default=str)) if value is not None else None
    return value


def _agents(old: Mapping[str, AgentRecord], new: Mapping[str, AgentRecord]) -> dict[str, Any]:
    changed = []
    for i in sorted(old.keys() & new.keys()):
        fields = [f for f in _AGENT_FIELDS if _agent_value(old[i], f) != _agent_value(new[i], f)]
        if fields:
            status = {"old": old[i].status, "new": new[i].status} if "status" in fields else None
            changed.append({"id": i, "status": status, "fields": fields})
    return {
        "added": [{"id": i, "status": new[i].status} for i in sorted(new.keys() - old.keys())],
        "removed": [{"id": i, "status": old[i].status} for i in sorted(old.keys() - new.keys())],
        "changed": changed,
    }


def _links(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "added": [{"id": i, "template": new[i]["template"]} for i in sorted(new.keys() - old.keys())],
        "removed": [{"id": i, "template": old[i]["template"]} for i in sorted(old.keys() - new.keys())],
        "changed": [
            {"id": i, "fields": [f for f in ("template", "values") if old[i].get(f) != new[i].get(f)]}
            for i in sorted(old.keys() & new.keys())
            if old[i] != new[i]
        ],
    }


def _files(old: Mapping[str, str | None], new: Mapping[str, str | None]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
    for name in WHOLE_FILES:
        a, b = old.get(name), new.get(name)
        if a is None and b is not None:
            out["added"].append(name)
        elif a is not None and b is None:
            out["removed"].append(name)
        elif a is not None and b is not None and _canonical(name, a) != _canonical(name, b):
            out["changed"].append(name)
    return out


def _canonical(name: str, text: str) -> Any:
    """The file's data, so formatting is no change; its text when it does not parse."""
    try:
        return json.loads(text) if name.endswith(".json") else load_yaml(text, name)
    except (ValueError, SourceProblemError, RecursionError):
        return text


SECTIONS = ("policies", "shadow_policies", "schema", "agents", "links", "files")


def compare(old: Side, new: Side) -> dict[str, Any]:
    """The documented `pep diff --format json` object (docs/policy-directory.md)."""
    result: dict[str, Any] = {
        "policies": _by_id(old.policies, new.policies),
        "shadow_policies": _by_id(old.shadow, new.shadow),
        "schema": schema_diff(old.schema, new.schema),
        "agents": _agents(old.agents, new.agents),
        "links": _links(old.links, new.links),
        "files": _files(old.files, new.files),
    }
    result["same"] = not any(result[s][k] for s in SECTIONS for k in ("added", "removed", "changed"))
    return result


def render(result: Mapping[str, Any]) -> str:
    """The text form: one line per change, `+` added, `-` removed, `~` changed."""
    lines: list[str] = []
    for section in SECTIONS:
        part = result[section]
        rows = [f"  + {_label(section, e)}" for e in part["added"]]
        rows += [f"  - {_label(section, e)}" for e in part["removed"]]
        rows += [f"  ~ {_label(section, e, changed=True)}" for e in part["changed"]]
        if rows:
            title = section.replace("_", " ")
            if section == "schema" and part["mode"] == "text":
                title += " (compared as text)"
            lines += [f"{title}:", *rows]
    count = sum(len(result[s][k]) for s in SECTIONS for k in ("added", "removed", "changed"))
    lines.append("no differences" if result["same"] else f"{count} difference(s)")
    return "\n".join(lines)


def _label(section: str, entry: Any, changed: bool = False) -> str:
    if section in ("policies", "shadow_policies"):
        return f"{entry['id']} ({entry['new_source'] if changed else entry['source']})"
    if section == "schema":
        return f"{entry['kind']} {entry['name']}"
    if section == "agents":
        if not changed:
            return f"{entry['id']} ({entry['status']})"
        status = entry["status"]
        what = [f"status {status['old']} -> {status['new']}"] if status else []
        what += [f for f in entry["fields"] if f != "status"]
        return f"{entry['id']}: {', '.join(what)}"
    if section == "links":
        return f"{entry['id']}: {', '.join(entry['fields'])}" if changed else f"{entry['id']} (of {entry['template']})"
    return str(entry)
