"""Source-level helpers: Cedar statements with their lines, YAML with line numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from pep.errors import PepError, SourceProblem


@dataclass(frozen=True)
class Statement:
    """One Cedar policy or template as written, with where it starts."""

    text: str
    line: int
    col: int


def split_statements(text: str) -> list[Statement]:
    """Split Cedar text into statements at top-level `;`, skipping strings and comments.

    Cedar has no `;` inside expressions, so this finds policy boundaries without a full
    parser. It lets pep name `file:line` for errors cedarpy reports without a location.
    """
    out: list[Statement] = []
    start: int | None = None
    line, col = 1, 1
    start_line, start_col = 1, 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "/" and i + 1 < n and text[i + 1] == "/":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if ch == "\n":
            line, col = line + 1, 1
            i += 1
            continue
        if start is None and not ch.isspace():
            start, start_line, start_col = i, line, col
        if ch == '"':
            i += 1
            col += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                    col += 1
                if i < n and text[i] == "\n":
                    line, col = line + 1, 0
                i += 1
                col += 1
        elif ch == ";" and start is not None:
            out.append(Statement(text[start : i + 1], start_line, start_col))
            start = None
        i += 1
        col += 1
    if start is not None and text[start:].strip():
        out.append(Statement(text[start:], start_line, start_col))
    return out


# libyaml's parser when the wheel has it: pure-Python parsing of a 100,000-agent registry
# takes minutes.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_Base):
    """A safe loader whose mappings remember the line they start on."""


class LineDict(dict[str, Any]):
    line: int = 1


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    mapping = LineDict({str(k): v for k, v in loader.construct_mapping(node, deep=True).items()})
    mapping.line = node.start_mark.line + 1
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    if len(keys) != len(set(keys)):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {dup!r}", node.start_mark)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, path: str) -> Any:
    """Parse YAML safely; mappings are `LineDict`s. Errors become a located `SourceProblem`.

    A file written as JSON (which is YAML too) is read with the JSON parser, many times
    faster: generated registries of 100,000 agents load in a fraction of a second. Its
    errors are then located by entry, not line.
    """
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style, or broken: the YAML parser says which
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        raise SourceProblemError(SourceProblem(path, f"invalid YAML: {e.problem or e}", line, col)) from None
    except yaml.YAMLError as e:
        raise SourceProblemError(SourceProblem(path, f"invalid YAML: {e}")) from None


def line_of(value: Any, default: int = 1) -> int:
    return value.line if isinstance(value, LineDict) else default


class SourceProblemError(PepError):
    """A file of the policy directory that cannot be read as what it should be."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem
