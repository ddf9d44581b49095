"""Load a policy directory into one immutable, validated snapshot.

Everything is parsed here, once: requests only ever use the prebuilt cedarpy handles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import cedarpy

from pep.errors import PolicyLoadError, SourceProblem
from pep.policy.entities import build_entities
from pep.policy.files import (
    AGENTS_FILE,
    ENTITIES_FILE,
    KILLSWITCH_FILE,
    LIMITS_FILE,
    LINKS_FILE,
    SCHEMA_FILE,
    Sources,
    read_sources,
)
from pep.policy.killswitch_file import KillList, parse_killswitch
from pep.policy.limits_file import Limits, parse_limits
from pep.policy.links_file import link_templates
from pep.policy.locate import error_offset, expression_span, line_col, schema_error_offset
from pep.policy.registry import Registry, agent_entity, parse_registry
from pep.policy.shapes import ENUM_TYPES, ValidatedShapes
from pep.policy.slicing import EntityIndex, PolicyIndex, action_parents, entity_refs
from pep.policy.snapshot import PolicyInfo, Snapshot
from pep.policy.source import SourceProblemError, Statement, cedar_bounds, load_yaml, split_statements
from pep.uids import Uid

T = TypeVar("T")


# Reloads run beside live traffic: Cedar's parsers are asked to release the GIL so
# decisions keep flowing while a large set is parsed.
def load_snapshot(
    directory: str,
    *,
    loaded_at: float = 0.0,
    validate_policies: bool = True,
    schema_for_entities: bool = True,
    cache: dict[Any, Any] | None = None,
    require_schema: bool = False,
) -> Snapshot:
    """Build a snapshot of `directory`, or raise `PolicyLoadError` listing every problem.

    Nothing else escapes: an unexpected error while loading (a bug) is a PolicyLoadError
    naming the directory, with the error as its `__cause__`.

    `validate_policies=False` skips validating the policies against the schema, and
    `schema_for_entities=False` parses `entities.json` without it (the schema is still
    loaded and kept on the snapshot). Both exist for tooling that needs Cedar's
    unvalidated semantics; serving and `pep validate` use the defaults. `require_schema`
    refuses a directory without `schema.cedarschema` (serving's `policies_require_schema`).
    """
    read = read_sources(directory)
    try:
        return _load(directory, read, loaded_at, validate_policies, schema_for_entities, cache, require_schema)
    except PolicyLoadError:
        raise
    except Exception as e:
        if cache is not None:
            cache.clear()  # it may hold what failed
        problem = SourceProblem(directory, f"unexpected error while loading: {type(e).__name__}: {e}")
        raise PolicyLoadError([problem], version=read.version) from e


def _load(
    directory: str,
    read: Sources,
    loaded_at: float,
    validate_policies: bool,
    schema_for_entities: bool,
    cache: dict[Any, Any] | None,
    require_schema: bool,
) -> Snapshot:
    problems: list[SourceProblem] = list(read.problems)
    sources, others, version = read.live, read.others, read.version
    schema_text = others[SCHEMA_FILE]
    entities_text = others[ENTITIES_FILE]
    agents_text = others[AGENTS_FILE]
    links_text = others[LINKS_FILE]

    schema = None
    if schema_text is not None:
        bounds = cedar_bounds(schema_text, schema=True)
        try:
            if bounds is not None:
                problems.append(SourceProblem(SCHEMA_FILE, bounds[0], bounds[1]))
            else:
                schema = cedarpy.Schema.from_str(schema_text, release_gil=True)
        except ValueError as e:
            at = schema_error_offset(schema_text, str(e), cedarpy.Schema.from_str)
            line, col = line_col(schema_text, at) if at is not None else (1, 1)
            problems.append(SourceProblem(SCHEMA_FILE, f"invalid schema: {e}", line, col))
    elif require_schema and not any(p.path == SCHEMA_FILE for p in problems):
        problems.append(
            SourceProblem(SCHEMA_FILE, "missing: policies_require_schema is true, so a policy set needs a schema")
        )

    est, infos = _parse_policies(sources, problems, cache)
    shadow_est, shadow_infos = _parse_policies(read.shadow, problems, cache)
    parsed = not problems  # every policy file parsed: links can be checked whatever else is wrong
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
    if parsed:
        try:
            policy_set = cedarpy.PolicySet.from_json_str(json.dumps(est), release_gil=True)
            if read.shadow:
                shadow_set = cedarpy.PolicySet.from_json_str(json.dumps(shadow_est), release_gil=True)
        except (ValueError, RecursionError) as e:
            problems.append(SourceProblem(directory, f"could not assemble the policy set: {e}"))
    if links_text is not None and policy_set is not None:
        policy_set, links = link_templates(policy_set, links_text, infos, problems)
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
    shapes = ValidatedShapes(enabled=not (schema_text and ENUM_TYPES.search(schema_text)))
    return Snapshot(
        directory=directory,
        version=version,
        policy_set=policy_set,
        schema=schema,
        registry=registry,
        policies=infos,
        entity_index=EntityIndex(
            entities,
            entity_schema,
            always=literal,
            agents=registry.agents,
            agent_entity=agent_entity,
            shapes=shapes,
        ),
        policy_index=policy_index,
        actions=actions,
        loaded_at=loaded_at,
        shadow_policy_set=shadow_set,
        shadow_index=shadow_index,
        shadow_policies=shadow_infos,
        killswitch=killswitch,
        limits=limits,
        shapes=shapes,
    )


def parse_policies(
    sources: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, PolicyInfo], list[SourceProblem]]:
    """Each policy of `sources` (path -> Cedar text) by id, as Cedar JSON, without a schema (`pep diff`)."""
    problems: list[SourceProblem] = []
    est, infos = _parse_policies(sources, problems)
    return est, infos, problems


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
            too_big = _beyond_bounds(rel, statements)
            if too_big:
                problems.extend(too_big)
                continue
            try:
                parsed = json.loads(cedarpy.policies_to_json_str(text))
            except ValueError as e:
                problems.extend(_locate_parse_errors(rel, statements, str(e)))
                continue
            except RecursionError:
                problems.append(SourceProblem(rel, "an expression is nested too deeply for pep to load"))
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


def _beyond_bounds(rel: str, statements: list[Statement]) -> list[SourceProblem]:
    """Statements too deep or too long to hand to cedarpy, whose parser would crash the process."""
    found = []
    for stmt in statements:
        bounds = cedar_bounds(stmt.text)
        if bounds is not None:
            found.append(SourceProblem(rel, bounds[0], stmt.line + bounds[1] - 1))
    return found


def _locate_parse_errors(rel: str, statements: list[Statement], whole_error: str) -> list[SourceProblem]:
    """Parse statement by statement to find which ones fail and where they start."""
    found = []
    for stmt in statements:
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as e:
            line, col = stmt.line, stmt.col
            at = error_offset(stmt.text, str(e), cedarpy.policies_to_json_str)
            if at is not None:
                dl, dc = line_col(stmt.text, at)
                line, col = line + dl - 1, (col + dc - 1 if dl == 1 else dc)
            found.append(SourceProblem(rel, f"parse error: {e}", line, col))
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
    found: list[SourceProblem] = []
    if not result.validation_passed:
        statements = split_statements(text)
        for err in result.errors:
            m = re.fullmatch(r"policy(\d+)", err.policy_id or "")
            stmt = statements[int(m.group(1))] if m and int(m.group(1)) < len(statements) else None
            problem = _validation_problem(rel, stmt, err.error, schema)
            if str(problem) not in {str(f) for f in found}:  # Cedar repeats some errors per request type
                found.append(problem)
        found.sort(key=lambda f: (f.line, f.col, f.message))  # Cedar's own order varies from run to run
    if cache is not None:
        cache[key] = found
    problems.extend(found)


_FOR_POLICY = re.compile(r"^for policy `[^`]*`, ")
_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


def _validation_problem(rel: str, stmt: Statement | None, error: str, schema: cedarpy.Schema) -> SourceProblem:
    """A schema validation error at its policy's `@id` and the expression it is about.

    cedarpy names the policy by position (`policy0`) and gives no span: the id is read from
    the statement, the expression found by `expression_span`."""
    message = _FOR_POLICY.sub("", error)
    if stmt is None:
        return SourceProblem(rel, f"schema validation: {message}")
    named = _ID.search(stmt.text)
    pid = named.group(1) if named else f"{rel}:{stmt.line}"

    def still_fails(candidate: str) -> bool:
        try:
            result = cedarpy.validate_policies(candidate, schema)
        except ValueError:
            return True
        return any(_FOR_POLICY.sub("", e.error) == message for e in result.errors)

    line, col, where = stmt.line, stmt.col, ""
    span = expression_span(stmt.text, still_fails)
    if span is not None:
        dl, dc = line_col(stmt.text, span[0])
        line, col = stmt.line + dl - 1, (stmt.col + dc - 1 if dl == 1 else dc)
        expr = " ".join(stmt.text[span[0] : span[1]].split())
        where = f", in `{expr if len(expr) <= 80 else expr[:77] + '...'}`"
    return SourceProblem(rel, f"schema validation: policy {pid!r}: {message}{where}", line, col)


def _condition_refs(est: Mapping[str, Any]) -> set[Uid]:
    refs: set[Uid] = set()
    for section in ("staticPolicies", "templates"):
        for body in (est.get(section) or {}).values():
            refs.update(entity_refs(body.get("conditions") or []))
    return refs


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
