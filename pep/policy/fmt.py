"""`pep fmt`: Cedar's own formatter over every .cedar file of a policy directory."""

from __future__ import annotations

import os
from dataclasses import dataclass

import cedarpy

from pep.errors import SourceProblem
from pep.policy.files import read_file, walk_cedar
from pep.policy.source import cedar_bounds, split_statements


@dataclass(frozen=True)
class FmtResult:
    path: str
    changed: bool
    problem: SourceProblem | None = None


def cedar_files(directory: str) -> list[str]:
    """Every .cedar file (live, shadow and test), relative and sorted; hidden entries skipped."""
    return walk_cedar(directory, directory)


def format_directory(directory: str, *, write: bool) -> list[FmtResult]:
    results = []
    folders: list[SourceProblem] = []
    for rel in walk_cedar(directory, directory, problems=folders):
        path = os.path.join(directory, rel)
        text, unreadable = read_file(directory, rel)
        if text is None:
            results.append(FmtResult(rel, False, unreadable or SourceProblem(rel, "disappeared while formatting")))
            continue
        too_big = _beyond_bounds(rel, text)
        if too_big is not None:  # cedarpy's formatter would crash the process on it
            results.append(FmtResult(rel, False, too_big))
            continue
        try:
            formatted = cedarpy.format_policies(text) if text.strip() else text
        except ValueError as e:
            results.append(FmtResult(rel, False, _locate(rel, text, str(e))))
            continue
        changed = formatted != text
        if changed and write:
            tmp = path + ".pep-fmt.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(formatted)
            os.replace(tmp, path)
        results.append(FmtResult(rel, changed))
    return [*(FmtResult(p.path, False, p) for p in folders), *results]


def _beyond_bounds(rel: str, text: str) -> SourceProblem | None:
    for stmt in split_statements(text):
        bounds = cedar_bounds(stmt.text)
        if bounds is not None:
            return SourceProblem(rel, bounds[0], stmt.line + bounds[1] - 1)
    return None


def _locate(rel: str, text: str, message: str) -> SourceProblem:
    for stmt in split_statements(text):
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as e:
            return SourceProblem(rel, f"parse error: {e}", stmt.line, stmt.col)
    return SourceProblem(rel, f"cannot format: {message}")
