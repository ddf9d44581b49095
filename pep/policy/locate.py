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
    lo, hi = 0, len(text)  # same(hi) holds; find the smallest such length
    while lo < hi:
        mid = (lo + hi) // 2
        if same(mid):
            hi = mid
        else:
            lo = mid + 1
    token = _TOKEN.search(message)
    if token is not None and token.group(1):
        at = text.rfind(token.group(1), 0, hi)
        if at >= 0:
            return at
    start = hi - 1
    while start > 0 and not text[start - 1].isspace() and text[start].isalnum() and text[start - 1].isalnum():
        start -= 1
    return max(start, 0)


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
