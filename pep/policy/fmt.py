"""`pep fmt`: Cedar's own formatter over every .cedar file of a policy directory."""

from __future__ import annotations

import os
from dataclasses import dataclass

import cedarpy

from pep.errors import SourceProblem
from pep.policy.source import split_statements


@dataclass(frozen=True)
class FmtResult:
    path: str
    changed: bool
    problem: SourceProblem | None = None


def cedar_files(directory: str) -> list[str]:
    """Every .cedar file (live, shadow and test), relative and sorted; hidden entries skipped."""
    out = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [
            os.path.relpath(os.path.join(root, n), directory)
            for n in files
            if n.endswith(".cedar") and not n.startswith(".")
        ]
    return sorted(out)


def format_directory(directory: str, *, write: bool) -> list[FmtResult]:
    results = []
    for rel in cedar_files(directory):
        path = os.path.join(directory, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
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
    return results


def _locate(rel: str, text: str, message: str) -> SourceProblem:
    for stmt in split_statements(text):
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as e:
            return SourceProblem(rel, f"parse error: {e}", stmt.line, stmt.col)
    return SourceProblem(rel, f"cannot format: {message}")
