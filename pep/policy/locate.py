"""Where in Cedar text an error is: cedarpy's messages carry no offsets, so pep finds them.

A parse error is located by the shortest prefix of the text that fails with the same
message: the parser stops at the offending token, so every longer prefix fails alike
and every shorter one ends early ("unexpected end of input").
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"unexpected token `([^`]*)`")
_MAX_TEXT = 200_000  # beyond this, the statement's start is the location


def line_col(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of `offset` in `text`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def error_offset(text: str, message: str, parse: Callable[[str], object]) -> int | None:
    """The offset in `text` of the token `parse` refuses with `message`, or None if not found."""
    if len(text) > _MAX_TEXT:
        return None

    def same(length: int) -> bool:
        try:
            parse(text[:length])
        except ValueError as e:
            return str(e) == message
        except RecursionError:
            return False
        return False

    if not same(len(text)):
        return None
    # Cut only where no string or comment is open: a prefix ending inside "..." fails as an
    # unterminated string, which would point at the string instead of the real problem.
    cuts = safe_cuts(text)
    lo, hi = 0, len(cuts) - 1  # same(cuts[hi]) holds; find the smallest such cut
    while lo < hi:
        mid = (lo + hi) // 2
        if same(cuts[mid]):
            hi = mid
        else:
            lo = mid + 1
    hi = cuts[hi]
    token = _TOKEN.search(message)
    if token is not None and token.group(1):
        at = text.rfind(token.group(1), 0, hi)
        if at >= 0:
            return at
    start = hi - 1
    while start > 0 and not text[start - 1].isspace() and text[start].isalnum() and text[start - 1].isalnum():
        start -= 1
    return max(start, 0)


def code_only(text: str) -> str:
    """`text` with comments blanked and strings as `_` (same length): what is left is Cedar syntax."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
            continue
        if text[i] == '"':
            out[i] = "_"
            i += 1
            while i < n and text[i] != '"':
                step = 2 if text[i] == "\\" else 1
                for k in range(i, min(i + step, n)):
                    out[k] = "_" if text[k] != "\n" else "\n"
                i += step
            if i < n:
                out[i] = "_"
            i += 1
            continue
        i += 1
    return "".join(out)


def safe_cuts(text: str) -> list[int]:
    """The lengths `n` for which `text[:n]` ends outside any string or comment."""
    cuts, i, n = [0], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i = min(i + 1, n)
        else:
            i += 1
        cuts.append(i)
    if cuts[-1] != n:
        cuts.append(n)
    return cuts


def word_offset(text: str, word: str) -> int | None:
    """The first occurrence of identifier `word` in `text` outside comments and strings."""
    i, n = 0, len(text)
    pattern = re.compile(rf"(?<![A-Za-z0-9_:]){re.escape(word)}(?![A-Za-z0-9_])")
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if pattern.match(text, i):
            return i
        i += 1
    return None


_SCHEMA_NAME = re.compile(
    r"(?:failed to resolve types?|undeclared (?:entity )?types?|unknown type)[^A-Za-z_]*([A-Za-z_][\w:]*)"
)


def schema_error_offset(text: str, message: str, parse: Callable[[str], object]) -> int | None:
    """Where in a schema `message` (from cedarpy) points: a parse error's token, or the unknown name."""
    found = _SCHEMA_NAME.search(message)
    if found is not None:
        return word_offset(text, found.group(1).split("::")[-1])
    return error_offset(text, message, parse)


_CLAUSE = re.compile(r"(?<![\w:])(when|unless)\s*\{")
_MAX_DEPTH = 8


def _matching(code: str, i: int) -> int:
    """The offset of the bracket closing the one at `i` (len(code) when unbalanced)."""
    depth = 0
    for k in range(i, len(code)):
        if code[k] in "([{":
            depth += 1
        elif code[k] in ")]}":
            depth -= 1
            if depth == 0:
                return k
    return len(code)


def _operands(code: str, start: int, end: int) -> tuple[list[tuple[int, int]], str]:
    """The top-level operands of code[start:end]'s `||` chain, else of its `&&` chain, trimmed,
    with the value that stands in for one without changing what the others are checked as."""
    for op, neutral in (("||", "false"), ("&&", "true")):
        spans, depth, begin, i = [], 0, start, start
        while i < end:
            ch = code[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif depth == 0 and code.startswith(op, i):
                spans.append((begin, i))
                begin = i = i + 2
                continue
            i += 1
        spans.append((begin, end))
        if len(spans) > 1 or op == "&&":
            return [t for t in (_trim(code, a, b) for a, b in spans) if t[0] < t[1]], neutral
    return [], "true"


def _trim(code: str, a: int, b: int) -> tuple[int, int]:
    while a < b and code[a].isspace():
        a += 1
    while b > a and code[b - 1].isspace():
        b -= 1
    return a, b


def expression_span(text: str, still_fails: Callable[[str], bool]) -> tuple[int, int] | None:
    """The smallest operand of a `when`/`unless` condition in `text` that the error is about.

    cedarpy's validation errors name no expression, so each operand of the conditions'
    `&&`/`||` chains is replaced in turn by the value that leaves the rest checked as before
    (`true` in `&&`, `false` in `||`): the one whose replacement makes the error go is where
    it is, and it is searched inside the same way.
    """
    if len(text) > _MAX_TEXT:
        return None
    code = code_only(text)
    for clause in _CLAUSE.finditer(code):
        found = None
        spans, neutral = _operands(code, clause.end(), _matching(code, clause.end() - 1))
        for _ in range(_MAX_DEPTH):
            hit = next((s for s in spans if not still_fails(text[: s[0]] + neutral + text[s[1] :])), None)
            if hit is None:
                break
            found = a, b = hit
            if code[a] == "(" and _matching(code, a) == b - 1:
                a, b = _trim(code, a + 1, b - 1)
            spans, neutral = _operands(code, a, b)
            if len(spans) < 2:
                break
        if found is not None:
            return found
    return None
