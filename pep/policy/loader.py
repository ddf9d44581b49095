"""Load a policy directory into one immutable, validated snapshot.

Everything is parsed here, once: requests only ever use the prebuilt cedarpy handles.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cedarpy

from pep.controls.killswitch import KillList, parse_killswitch
from pep.controls.ratelimit import Limits, parse_limits
from pep.errors import PolicyLoadError, SourceProblem
from pep.policy.entities import AGENTS_FILE, ENTITIES_FILE, build_entities
from pep.policy.registry import Registry, agent_entity, parse_registry
from pep.policy.slicing import EntityIndex, PolicyIndex, Uid, action_parents, entity_refs
from pep.policy.source import SourceProblemError, Statement, line_of, load_yaml, split_statements

T = TypeVar("T")
SCHEMA_FILE = "schema.cedarschema"
LINKS_FILE = "links.yaml"
KILLSWITCH_FILE = "killswitch.yaml"
LIMITS_FILE = "limits.yaml"
KNOWN_FILES = (SCHEMA_FILE, ENTITIES_FILE, AGENTS_FILE, LINKS_FILE, KILLSWITCH_FILE, LIMITS_FILE)
SHADOW_DIR = "shadow"
# Folders whose .cedar files are not part of the live set.
NON_LIVE_DIRS = ("shadow", "tests")


@dataclass(frozen=True)
class PolicyInfo:
    id: str
    path: str
    line: int
    effect: str
    template: bool
    # The policy as written (a link: its template's text), for `pep check`.
    text: str = ""


@dataclass(frozen=True)
class Snapshot:
    """One loaded policy set. Never mutated: a reload builds a new one."""

    directory: str
    version: str
    policy_set: cedarpy.PolicySet
    schema: cedarpy.Schema | None
    registry: Registry
    policies: Mapping[str, PolicyInfo]
    # Every stored entity (entities.json, agents, agent groups): requests get slices of it.
    entity_index: EntityIndex
    # The live policies by principal and action scope: requests get slices of them.
    policy_index: PolicyIndex
    actions: frozenset[str]
    loaded_at: float = 0.0
    # Shadow policies (shadow/): evaluated beside the live set, never enforced.
    shadow_policy_set: cedarpy.PolicySet | None = None
    shadow_index: PolicyIndex | None = None
    shadow_policies: Mapping[str, PolicyInfo] = field(default_factory=dict)
    killswitch: KillList = field(default_factory=KillList)
    limits: Limits = field(default_factory=Limits)

    @property
    def entity_uids(self) -> frozenset[tuple[str, str]]:
        return self.entity_index.uids

    def entities_for(self, roots: Iterable[Uid], delta: list[dict[str, Any]] | None = None) -> cedarpy.Entities:
        """The entities a request can reach from `roots`, plus its own `delta` entities."""
        return self.entity_index.handle(roots, delta)

    @property
    def policy_count(self) -> int:
        """Policies that can decide: static ones and template links, not bare templates."""
        return sum(1 for p in self.policies.values() if not p.template)


def policy_files(directory: str, subdir: str | None = None) -> list[str]:
    """`.cedar` files relative to `directory`, sorted; hidden entries are skipped.

    With no `subdir`, the live set (everything outside shadow/ and tests/); with
    `subdir="shadow"`, the shadow set. Skipping `..*` and `.*` entries keeps a ConfigMap
    mount's `..data` and timestamped folders from being loaded twice beside the visible
    symlinks.
    """
    out = []
    top = os.path.join(directory, subdir) if subdir else directory
    if not os.path.isdir(top):
        return []
    for root, dirs, files in os.walk(top, followlinks=True):
        rel_root = os.path.relpath(root, directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if rel_root == "." and subdir is None:
            dirs[:] = [d for d in dirs if d not in NON_LIVE_DIRS]
        for name in sorted(files):
            if name.endswith(".cedar") and not name.startswith("."):
                out.append(os.path.normpath(os.path.join(rel_root, name)))
    return sorted(out)


def _read(directory: str, rel: str) -> str | None:
    path = os.path.join(directory, rel)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyLoadError([SourceProblem(rel, f"cannot read: {e}")]) from None


def resolve_base(directory: str) -> str:
    """The real folder to read one consistent version from.

    git-sync swaps a symlink to the whole tree, and a ConfigMap mount swaps its `..data`
    symlink; resolving once before reading means a swap mid-load cannot mix versions.
    """
    data = os.path.join(directory, "..data")
    if os.path.islink(data):
        return os.path.realpath(data)
    return os.path.realpath(directory)


@dataclass(frozen=True)
class Sources:
    live: dict[str, str]
    shadow: dict[str, str]
    # Each of KNOWN_FILES: its text, or None when absent.
    others: dict[str, str | None]
    version: str


def read_sources(directory: str) -> Sources:
    """Every file a snapshot is built from, read from one resolved base, and their version."""
    base = resolve_base(directory)
    if not os.path.isdir(base):
        raise PolicyLoadError([SourceProblem(directory, "policy directory does not exist")])
    digest = hashlib.sha256()

    def read(rel: str) -> str | None:
        text = _read(base, rel)
        if text is not None:
            digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        return text

    live = {rel: read(rel) or "" for rel in policy_files(base)}
    shadow = {rel: read(rel) or "" for rel in policy_files(base, SHADOW_DIR)}
    others = {rel: read(rel) for rel in KNOWN_FILES}
    return Sources(live, shadow, others, digest.hexdigest()[:16])


def content_version(directory: str) -> str | None:
    """The version `load_snapshot` would give the directory now, without parsing; None if unreadable."""
    try:
        return read_sources(directory).version
    except PolicyLoadError:
        return None


# Reloads run beside live traffic: Cedar's parsers are asked to release the GIL so
# decisions keep flowing while a large set is parsed.
def load_snapshot(
    directory: str,
    *,
    loaded_at: float = 0.0,
    validate_policies: bool = True,
    schema_for_entities: bool = True,
    cache: dict[Any, Any] | None = None,
) -> Snapshot:
    """Build a snapshot of `directory`, or raise `PolicyLoadError` listing every problem.

    `validate_policies=False` skips validating the policies against the schema, and
    `schema_for_entities=False` parses `entities.json` without it (the schema is still
    loaded and kept on the snapshot). Both exist for tooling that needs Cedar's
    unvalidated semantics; serving and `pep validate` use the defaults.
    """
    problems: list[SourceProblem] = []
    read = read_sources(directory)
    sources, others, version = read.live, read.others, read.version
    schema_text = others[SCHEMA_FILE]
    entities_text = others[ENTITIES_FILE]
    agents_text = others[AGENTS_FILE]
    links_text = others[LINKS_FILE]

    schema = None
    if schema_text is not None:
        try:
            schema = cedarpy.Schema.from_str(schema_text, release_gil=True)
        except ValueError as e:
            problems.append(SourceProblem(SCHEMA_FILE, f"invalid schema: {e}"))

    est, infos = _parse_policies(sources, problems, cache)
    shadow_est, shadow_infos = _parse_policies(read.shadow, problems, cache)
    if schema is not None and validate_policies:
        unparsed = {p.path for p in problems}
        for rel, text in (*sources.items(), *read.shadow.items()):
            if rel not in unparsed:  # a parse error is already reported once
                _validate_file(rel, text, schema, problems, cache, schema_text or "")
    if cache is not None:  # keep only what this version uses
        texts = {**sources, **read.shadow}
        stale = [k for k in cache if k[0] in ("parse", "valid") and texts.get(k[1]) != k[2]]
        stale += [k for k in cache if k[0] == "valid" and k[3] != schema_text]
        for key in stale:
            del cache[key]
    killswitch = _parse_optional(others[KILLSWITCH_FILE], KILLSWITCH_FILE, parse_killswitch, KillList(), problems)
    limits = _parse_optional(others[LIMITS_FILE], LIMITS_FILE, parse_limits, Limits(), problems)

    entity_schema = schema if schema_for_entities else None
    # The registry and the entities are reused as built when their files (and the schema)
    # are unchanged: the common reload edits a policy, not a 100,000-agent registry.
    key = ("entities", agents_text, entities_text, schema_text if schema_for_entities else None)
    built = cache.get(key) if cache is not None else None
    if built is None:
        found: list[SourceProblem] = []
        registry = Registry({})
        if agents_text is not None:
            try:
                registry, reg_problems = parse_registry(load_yaml(agents_text, AGENTS_FILE), AGENTS_FILE)
                found.extend(reg_problems)
            except SourceProblemError as e:
                found.append(e.problem)
        entities = build_entities(entities_text, registry, entity_schema, found)
        built = (registry, entities, found)
        if cache is not None:
            for old in [k for k in cache if k[0] == "entities"]:
                del cache[old]
            cache[key] = built
    registry, entities, found = built
    problems.extend(found)

    policy_set = shadow_set = None
    links: list[tuple[str, str, Mapping[str, Any]]] = []
    if not problems:
        try:
            policy_set = cedarpy.PolicySet.from_json_str(json.dumps(est), release_gil=True)
            if read.shadow:
                shadow_set = cedarpy.PolicySet.from_json_str(json.dumps(shadow_est), release_gil=True)
        except ValueError as e:
            problems.append(SourceProblem(directory, f"could not assemble the policy set: {e}"))
    if links_text is not None and policy_set is not None:
        policy_set, links = _link_templates(policy_set, links_text, infos, problems)
    if problems:
        raise PolicyLoadError(problems, version=version)
    assert policy_set is not None and entities is not None
    actions = _schema_actions(schema_text) if schema_text is not None else frozenset()
    # Entities named in policy conditions are in every slice: a condition may read their
    # attributes. Scope entities (and template link values, which only fill scopes) need
    # not be: `==` and `in` are answered from the request's own entities and ancestors.
    literal = {*_condition_refs(est), *_condition_refs(shadow_est)}
    parents = action_parents(schema, entities)
    policy_index = PolicyIndex(est, links, parents)
    shadow_index = PolicyIndex(shadow_est, (), parents) if shadow_set is not None else None
    return Snapshot(
        directory=directory,
        version=version,
        policy_set=policy_set,
        schema=schema,
        registry=registry,
        policies=infos,
        entity_index=EntityIndex(
            entities, entity_schema, always=literal, agents=registry.agents, agent_entity=agent_entity
        ),
        policy_index=policy_index,
        actions=actions,
        loaded_at=loaded_at,
        shadow_policy_set=shadow_set,
        shadow_index=shadow_index,
        shadow_policies=shadow_infos,
        killswitch=killswitch,
        limits=limits,
    )


def _parse_optional(
    text: str | None,
    path: str,
    parse: Callable[[Any, str], tuple[T, list[SourceProblem]]],
    default: T,
    problems: list[SourceProblem],
) -> T:
    if text is None:
        return default
    try:
        value, found = parse(load_yaml(text, path), path)
    except SourceProblemError as e:
        problems.append(e.problem)
        return default
    problems.extend(found)
    return value


def _parse_policies(
    sources: Mapping[str, str], problems: list[SourceProblem], cache: dict[Any, Any] | None = None
) -> tuple[dict[str, Any], dict[str, PolicyInfo]]:
    """Parse each file, giving every policy its stable id (`@id`, else `<file>:<n>`).

    With a `cache` (the store keeps one across reloads), a file whose text is unchanged
    is not parsed again: a reload after editing one file of 10,000 policies parses one file.
    """
    est: dict[str, Any] = {"staticPolicies": {}, "templates": {}, "templateLinks": []}
    infos: dict[str, PolicyInfo] = {}
    for rel, text in sources.items():
        hit = cache.get(("parse", rel, text)) if cache is not None else None
        if hit is not None:
            statements, parsed = hit
        else:
            statements = split_statements(text)
            try:
                parsed = json.loads(cedarpy.policies_to_json_str(text))
            except ValueError as e:
                problems.extend(_locate_parse_errors(rel, statements, str(e)))
                continue
            if cache is not None:
                cache[("parse", rel, text)] = (statements, parsed)
        positional = {**parsed.get("staticPolicies", {}), **parsed.get("templates", {})}
        for n, stmt in enumerate(statements):
            body = positional.get(f"policy{n}")
            if body is None:  # pragma: no cover - the splitter and Cedar disagree
                problems.append(SourceProblem(rel, "could not match this statement to a policy", stmt.line, stmt.col))
                continue
            annotated = (body.get("annotations") or {}).get("id")
            pid = annotated if annotated else f"{rel}:{n}"
            if pid in infos:
                other = infos[pid]
                problems.append(
                    SourceProblem(rel, f"duplicate policy id {pid!r} (also {other.path}:{other.line})", stmt.line)
                )
                continue
            is_template = f"policy{n}" in parsed.get("templates", {})
            est["templates" if is_template else "staticPolicies"][pid] = body
            infos[pid] = PolicyInfo(pid, rel, stmt.line, body.get("effect", ""), is_template, stmt.text.strip())
    return est, infos


def _locate_parse_errors(rel: str, statements: list[Statement], whole_error: str) -> list[SourceProblem]:
    """Parse statement by statement to find which ones fail and where they start."""
    found = []
    for stmt in statements:
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as e:
            found.append(SourceProblem(rel, f"parse error: {e}", stmt.line, stmt.col))
    return found or [SourceProblem(rel, f"parse error: {whole_error}")]


def _validate_file(
    rel: str,
    text: str,
    schema: cedarpy.Schema,
    problems: list[SourceProblem],
    cache: dict[Any, Any] | None = None,
    schema_text: str = "",
) -> None:
    if not text.strip():
        return
    key = ("valid", rel, text, schema_text)
    if cache is not None and key in cache:
        problems.extend(cache[key])
        return
    try:
        result = cedarpy.validate_policies(text, schema, release_gil=True)
    except ValueError:
        return  # a parse error, already reported
    found = []
    if not result.validation_passed:
        statements = split_statements(text)
        for err in result.errors:
            m = re.fullmatch(r"policy(\d+)", err.policy_id or "")
            stmt = statements[int(m.group(1))] if m and int(m.group(1)) < len(statements) else None
            line, col = (stmt.line, stmt.col) if stmt else (1, 1)
            found.append(SourceProblem(rel, f"schema validation: {err.error}", line, col))
    if cache is not None:
        cache[key] = found
    problems.extend(found)


def _condition_refs(est: Mapping[str, Any]) -> set[Uid]:
    refs: set[Uid] = set()
    for section in ("staticPolicies", "templates"):
        for body in (est.get(section) or {}).values():
            refs.update(entity_refs(body.get("conditions") or []))
    return refs


def _link_templates(
    policy_set: cedarpy.PolicySet,
    links_text: str,
    infos: dict[str, PolicyInfo],
    problems: list[SourceProblem],
) -> tuple[cedarpy.PolicySet, list[tuple[str, str, Mapping[str, Any]]]]:
    try:
        data = load_yaml(links_text, LINKS_FILE)
    except SourceProblemError as e:
        problems.append(e.problem)
        return policy_set, []
    entries = (data.get("links") or []) if isinstance(data, Mapping) and set(data) <= {"links"} else None
    if data is not None and not isinstance(entries, list):
        problems.append(SourceProblem(LINKS_FILE, "expected a mapping with a `links` list", line_of(data)))
        return policy_set, []
    batch: list[dict[str, Any]] = []
    for i, entry in enumerate(entries or []):
        line = line_of(entry)
        if not isinstance(entry, Mapping) or not {"template", "id", "values"} <= set(entry):
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}] needs template, id and values", line))
            continue
        template, new_id, values = entry["template"], entry["id"], entry["values"]
        info = infos.get(template)
        if info is None or not info.template:
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}]: no template with id {template!r}", line))
            continue
        if new_id in infos:
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}]: id {new_id!r} is already a policy id", line))
            continue
        if not isinstance(values, Mapping):
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}]: values must map ?principal/?resource", line))
            continue
        batch.append({"template_id": template, "new_id": new_id, "values": dict(values)})
        slots = ", ".join(f"{k} = {v}" for k, v in values.items())
        text = f"// link of {template} ({info.path}:{info.line}) with {slots}\n{info.text}"
        infos[new_id] = PolicyInfo(new_id, LINKS_FILE, line, info.effect, False, text)
    if problems:
        return policy_set, []
    try:
        linked = policy_set.with_linked_batch(batch)
        return linked, [(b["template_id"], b["new_id"], b["values"]) for b in batch]
    except (ValueError, KeyError) as e:
        problems.append(SourceProblem(LINKS_FILE, f"could not link templates: {e}"))
        return policy_set, []


_ACTION_DECL = re.compile(
    r"\baction\s+((?:\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][A-Za-z0-9_]*)(?:\s*,\s*(?:\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][A-Za-z0-9_]*))*)"
)


def _schema_actions(schema_text: str) -> frozenset[str]:
    """Action names the schema declares: the bounded set of metric `action` labels."""
    names: set[str] = set()
    text = "\n".join(line.split("//", 1)[0] for line in schema_text.splitlines())
    for m in _ACTION_DECL.finditer(text):
        for part in re.findall(r"\"((?:[^\"\\]|\\.)*)\"|([A-Za-z_][A-Za-z0-9_]*)", m.group(1)):
            names.add(part[0] or part[1])
    names.discard("in")
    names.discard("appliesTo")
    return frozenset(names)
