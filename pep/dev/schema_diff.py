"""What changed between two Cedar schemas (`pep diff`): entity types, actions and common types by name.

The schema text is split into its declarations (namespaces opened) without a full parser;
each declaration is compared as its tokens, so comments, whitespace and the order of
declarations are no change. A schema this cannot split is compared as text instead.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

_TOKEN = re.compile(r'\s+|//[^\n]*|"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|::|\S')
_KINDS = {"entity": "entity", "action": "action", "type": "type"}
_OPEN, _CLOSE = "([{<", ")]}>"


class _Unsplittable(Exception):
    pass


def declarations(text: str) -> dict[tuple[str, str], str]:
    """(kind, qualified name) -> the declaration's tokens, for each entity type, action and common type."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # an unterminated string
            raise _Unsplittable(f"cannot read the schema at offset {pos}")
        pos = m.end()
        tok = m.group(0)
        if not tok.isspace() and not tok.startswith("//"):
            tokens.append(tok)
    out: dict[tuple[str, str], str] = {}
    end = _decls(tokens, 0, "", out, None)
    if end != len(tokens):
        raise _Unsplittable("unbalanced braces")
    return out


def _annotations(tokens: list[str], i: int) -> tuple[list[str], int]:
    found: list[str] = []
    while i < len(tokens) and tokens[i] == "@":
        found += tokens[i : i + 2]
        i += 2
        if i < len(tokens) and tokens[i] == "(":
            close = tokens.index(")", i) if ")" in tokens[i:] else len(tokens)
            found += tokens[i : close + 1]
            i = close + 1
    return found, i


def _decls(tokens: list[str], i: int, prefix: str, out: dict[tuple[str, str], str], end: str | None) -> int:
    n = len(tokens)
    while i < n and tokens[i] != end:
        notes, i = _annotations(tokens, i)
        if i >= n:
            raise _Unsplittable("annotation without a declaration")
        keyword = tokens[i]
        if keyword == "namespace":
            j = i + 1
            while j < n and tokens[j] != "{":
                j += 1
            path = "".join(tokens[i + 1 : j])
            i = _decls(tokens, j + 1, f"{prefix}{path}::" if path else prefix, out, "}")
            if i >= n:
                raise _Unsplittable("a namespace is not closed")
            i += 1
            continue
        if keyword not in _KINDS:
            raise _Unsplittable(f"unexpected {keyword!r}")
        j, depth = i + 1, 0
        while j < n and not (tokens[j] == ";" and depth == 0):
            depth += (tokens[j] in _OPEN) - (tokens[j] in _CLOSE)
            j += 1
        if j >= n:
            raise _Unsplittable(f"a {keyword} declaration has no closing ;")
        body = tokens[i + 1 : j]
        names: list[str] = []
        k = 0
        while k < len(body):
            names.append(body[k][1:-1] if body[k].startswith('"') else body[k])
            k += 1
            if k < len(body) and body[k] == ",":
                k += 1
                continue
            break
        normalized = " ".join([*notes, keyword, *body[k:]]).replace(" , }", " }")  # a trailing comma is no change
        for name in names:
            out[(_KINDS[keyword], prefix + name)] = normalized
        i = j + 1
    return i


def schema_diff(old: str | None, new: str | None) -> dict[str, Any]:
    """{mode, added, removed, changed}: structural (entries {kind, name}) or, failing that, text."""
    try:
        before = declarations(old or "")
        after = declarations(new or "")
    except _Unsplittable:
        lines = list(difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(), lineterm="", n=0))
        body = [line for line in lines if not line.startswith(("---", "+++", "@@"))]
        plus = sum(1 for line in body if line.startswith("+"))
        minus = sum(1 for line in body if line.startswith("-"))
        return {
            "mode": "text",
            "added": [],
            "removed": [],
            "changed": [{"kind": "text", "name": f"+{plus} -{minus} lines"}] if plus or minus else [],
            "lines_added": plus,
            "lines_removed": minus,
        }

    def entries(keys: Any) -> list[dict[str, str]]:
        return [{"kind": kind, "name": name} for kind, name in sorted(keys)]

    return {
        "mode": "structural",
        "added": entries(after.keys() - before.keys()),
        "removed": entries(before.keys() - after.keys()),
        "changed": entries(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }
