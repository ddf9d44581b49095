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


_OPENERS, _CLOSERS = "([{", ")]}"
_OPERATOR_CHARS = "&|=!<>+-*."


def cedar_bounds(text: str, *, schema: bool = False) -> tuple[str, int] | None:
    """Why Cedar text is beyond what pep hands to cedarpy, and the line (from 1) where; else None.

    Brackets may nest `MAX_CEDAR_NESTING` deep (in a schema `Set<...>` counts too), and a
    policy statement may hold `MAX_CEDAR_OPERATORS` operators and `if`s. Strings and
    comments are skipped. Apply it to one statement at a time (a schema: to the whole text).
    """
    openers, closers = (_OPENERS + "<", _CLOSERS + ">") if schema else (_OPENERS, _CLOSERS)
    depth = operators = 0
    line = 1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "\n":
            line += 1
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\n":
                    line += 1
                i += 2 if text[i] == "\\" else 1
        elif ch in openers:
            depth += 1
            if depth > MAX_CEDAR_NESTING:
                return f"brackets nested more than {MAX_CEDAR_NESTING} deep", line
        elif ch in closers:
            depth = max(0, depth - 1)
        elif not schema and ch in _OPERATOR_CHARS:
            operators += 1
            if i + 1 < n and text[i + 1] in "&|=":  # one operator: &&, ||, ==, !=, <=, >=
                i += 1
        elif (
            not schema
            and ch == "i"
            and text.startswith("if", i)
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))
            and (i + 2 >= n or not (text[i + 2].isalnum() or text[i + 2] == "_"))
        ):
            operators += 1
        if operators > MAX_CEDAR_OPERATORS:
            return f"more than {MAX_CEDAR_OPERATORS:,} operators in one policy", line
        i += 1
    return None


# Bounds on a document of the policy directory (docs/policy-directory.md, "Limits"): how
# deep YAML or JSON may nest, and how far YAML aliases may expand it (a "billion laughs"
# file is a few lines long).
MAX_NESTING = 64
MAX_ALIAS_EXPANSION = 1_000_000
# Bounds on one Cedar statement: cedarpy's parser recurses without a limit and takes the
# whole process down (a segfault, not an exception) at a few hundred nested brackets or
# some thousands of chained operators.
MAX_CEDAR_NESTING = 64
MAX_CEDAR_OPERATORS = 2_000

# libyaml's parser when the wheel has it: pure-Python parsing of a 100,000-agent registry
# takes minutes.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_Base):
    """A safe loader whose mappings remember the line they start on."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A scalar YAML resolves but Python refuses (`2027-13-45` as a date, an int of
        # 5,000 digits) is a located error, not a ValueError out of the parser.
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            shown = f"{node.value[:60]!r}: " if isinstance(node, yaml.ScalarNode) else ""
            raise yaml.constructor.ConstructorError(None, None, f"invalid value {shown}{e}", node.start_mark) from None


class LineDict(dict[str, Any]):
    """A YAML mapping with the line it starts on and, in `key_lines`, the line of each key."""

    line: int = 1
    key_lines: dict[str, int]
    key_cols: dict[str, int]


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    mapping = LineDict({str(k): v for k, v in loader.construct_mapping(node, deep=True).items()})
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    mapping.key_cols = {str(k.value): k.start_mark.column + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    if len(keys) != len(set(keys)):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {dup!r}", node.start_mark)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_nodes(root: yaml.Node, path: str, budget: int) -> None:
    """Refuse a YAML graph nested too deep or expanding past `budget` values through aliases.

    Walked one level at a time as it would be built (an alias counts each time it is used),
    so a recursive alias is refused as too deep, and a "billion laughs" stops at the budget.
    """
    level: list[yaml.Node] = [root]
    depth, count = 0, 1
    while level:
        depth += 1
        if depth > MAX_NESTING:
            raise SourceProblemError(_at(path, level[0], f"nested more than {MAX_NESTING} levels deep"))
        below: list[yaml.Node] = []
        for node in level:
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            count += len(children)
            below.extend(c for c in children if not isinstance(c, yaml.ScalarNode))
        if count > budget:
            raise SourceProblemError(
                SourceProblem(path, f"YAML aliases expand this file to over {MAX_ALIAS_EXPANSION:,} extra values")
            )
        level = below


def _at(path: str, node: yaml.Node, message: str) -> SourceProblem:
    return SourceProblem(path, message, node.start_mark.line + 1, node.start_mark.column + 1)


def check_nesting(value: Any, path: str, limit: int = MAX_NESTING) -> None:
    """Refuse parsed JSON nested deeper than `limit` (iteratively: no RecursionError)."""
    level: list[Any] = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:  # one list per level: a 100,000-agent registry is checked in a few passes
        depth += 1
        if depth > limit:
            raise SourceProblemError(SourceProblem(path, f"nested more than {limit} levels deep"))
        level = [x for v in level for x in (v.values() if isinstance(v, dict) else v) if isinstance(x, (dict, list))]


def load_json(text: str, path: str) -> Any:
    """Parse JSON; every error (syntax, a 5,000-digit number, nesting) is a located `SourceProblem`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceProblemError(SourceProblem(path, f"invalid JSON: {e.msg}", e.lineno, e.colno)) from None
    except ValueError as e:
        raise SourceProblemError(SourceProblem(path, f"invalid JSON: {e}")) from None
    except RecursionError:
        raise SourceProblemError(SourceProblem(path, f"nested more than {MAX_NESTING} levels deep")) from None
    check_nesting(value, path)
    return value


def load_yaml(text: str, path: str) -> Any:
    """Parse YAML safely; mappings are `LineDict`s. Errors become a located `SourceProblem`.

    A file written as JSON (which is YAML too) is read with the JSON parser, many times
    faster: generated registries of 100,000 agents load in a fraction of a second. Its
    errors are then located by entry, not line.
    """
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            pass  # YAML flow style, or broken: the YAML parser says which
        else:
            check_nesting(value, path)
            return value
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode):
            # Every node as written takes at least one character: the budget is the file plus the expansion allowed.
            _check_nodes(node, path, len(text) + MAX_ALIAS_EXPANSION)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        raise SourceProblemError(SourceProblem(path, f"invalid YAML: {e.problem or e}", line, col)) from None
    except yaml.reader.ReaderError as e:  # a character YAML refuses: located by its position
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        problem = SourceProblem(path, f"invalid YAML: character U+{code:04X} is not allowed", line, col)
        raise SourceProblemError(problem) from None
    except yaml.YAMLError as e:
        raise SourceProblemError(SourceProblem(path, f"invalid YAML: {e}")) from None
    finally:
        loader.dispose()


def line_of(value: Any, default: int = 1) -> int:
    return value.line if isinstance(value, LineDict) else default


def key_line(mapping: Any, key: str, default: int = 1) -> int:
    """The line of `key` in a YAML mapping; else the mapping's line; else `default`."""
    if not isinstance(mapping, LineDict):
        return default
    return getattr(mapping, "key_lines", {}).get(key, mapping.line)


def key_col(mapping: Any, key: str) -> int:
    """The column of `key` in a YAML mapping (1 when it cannot be told)."""
    return getattr(mapping, "key_cols", {}).get(key, 1) if isinstance(mapping, LineDict) else 1


class SourceProblemError(PepError):
    """A file of the policy directory that cannot be read as what it should be."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem
