"""`links.yaml`: template links, each a per-agent grant made from a template of the live set."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cedarpy

from pep.errors import SourceProblem
from pep.policy.files import LINKS_FILE
from pep.policy.locate import code_only
from pep.policy.snapshot import PolicyInfo
from pep.policy.source import SourceProblemError, key_col, key_line, line_of, load_yaml
from pep.uids import parse_json_uid, parse_uid


def link_templates(
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
    lines: list[tuple[int, int]] = []
    for i, entry in enumerate(entries or []):
        line = line_of(entry)
        if not isinstance(entry, Mapping) or not {"template", "id", "values"} <= set(entry):
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}] needs template, id and values", line))
            continue
        template, new_id, values = entry["template"], entry["id"], entry["values"]
        if not isinstance(template, str) or not isinstance(new_id, str) or not new_id:
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}]: template and id must be strings", line))
            continue
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
        wrong = _link_values_problem(values) or _slots_problem(info.text, values)
        if wrong is not None:
            at = (key_line(entry, "values", line), key_col(entry, "values"))
            problems.append(SourceProblem(LINKS_FILE, f"links[{i}] ({new_id}): {wrong}", *at))
            continue
        batch.append({"template_id": template, "new_id": new_id, "values": dict(values)})
        lines.append((key_line(entry, "values", line), key_col(entry, "values")))
        slots = ", ".join(f"{k} = {v}" for k, v in values.items())
        text = f"// link of {template} ({info.path}:{info.line}) with {slots}\n{info.text}"
        infos[new_id] = PolicyInfo(new_id, LINKS_FILE, line, info.effect, False, text)
    if problems:
        return policy_set, []
    try:
        linked = policy_set.with_linked_batch(batch)
        return linked, [(b["template_id"], b["new_id"], b["values"]) for b in batch]
    except (ValueError, KeyError, TypeError) as e:
        problems.extend(_failing_links(policy_set, batch, lines) or [SourceProblem(LINKS_FILE, f"could not link: {e}")])
        return policy_set, []


def _failing_links(policy_set: Any, batch: list[dict[str, Any]], lines: list[tuple[int, int]]) -> list[SourceProblem]:
    """Cedar refuses a batch whole: each link is tried alone to say which fail, at their lines."""
    found = []
    for link, (line, col) in zip(batch, lines, strict=True):
        try:
            policy_set.with_linked_batch([link])
        except (ValueError, KeyError, TypeError) as e:
            what = f"link {link['new_id']!r} of {link['template_id']!r}"
            found.append(SourceProblem(LINKS_FILE, f"{what}: {e}", line, col))
        if len(found) >= 20:
            break
    return found


def _slots_problem(template: str, values: Mapping[str, Any]) -> str | None:
    """Why `values` do not fill exactly the template's slots, or None."""
    slots = [s for s in ("?principal", "?resource") if re.search(re.escape(s) + r"(?![\w])", code_only(template))]
    if set(values) == set(slots):
        return None
    return f"the template's slots are {', '.join(slots) or 'none'}; values fill {', '.join(values) or 'none'}"


def _link_values_problem(values: Mapping[str, Any]) -> str | None:
    """Why a link's `values` are not slot -> entity uid, or None.

    The slices read the values with pep's parser: what it refuses (empty ids) is refused here.
    """
    for slot, value in values.items():
        if slot not in ("?principal", "?resource"):
            return f"unknown slot {slot!r} (the slots are ?principal and ?resource)"
        if isinstance(value, str):
            try:
                parse_uid(value)
            except ValueError as e:
                return str(e)
        elif parse_json_uid(value) is None:
            return f"{slot} must be 'Type::\"id\"' or {{type, id}} strings, got {str(value)[:60]}"
    return None
