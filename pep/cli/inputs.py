"""What the user typed, read strictly: JSON arguments, names, numbers, paths and files.

Every problem is a `UsageError` carrying one line (exit 2). Nothing here recurses on the
input, so no argument can make the command line hit Python's recursion limit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NAME",
    "UsageError",
    "bounded_int",
    "directory",
    "json_object",
    "name",
    "names",
    "optional_name",
    "read_text",
    "seconds",
    "utf8",
]

MAX_JSON_DEPTH = 32  # as a request's context and resource.attributes (README, "Limits")
MAX_NAME = 1024  # characters of a name given as a flag: an id, a scope, a reason
MAX_TIMEOUT = 3600.0  # seconds
MAX_MESSAGE = 300  # characters of the user's input quoted back in an error
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class UsageError(Exception):
    """Wrong input from the user: one line on stderr, exit 2."""


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line and at most `limit` characters, for an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def utf8(value: str, what: str) -> str:
    """`value`, refused when it is not valid Unicode (argv bytes that were not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    return value


def _json_depth(text: str) -> int:
    """How deeply `text` nests arrays and objects, counted without parsing it."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a finite number")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{clip(token, 40)} is not a finite number")
    return value


def _long(token: str) -> int:
    if len(token.lstrip("-")) > 19:
        raise ValueError(f"{clip(token, 40)} is outside the 64-bit integer range")
    value = int(token)
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise ValueError(f"{token} is outside the 64-bit integer range")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {clip(key, 80)!r}")
        out[key] = value
    return out


def _check_strings(value: Any, flag: str) -> None:
    """Every key and string is valid Unicode (a lone `\\ud800` escape is not); iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            utf8(item, f"{flag}: a string")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def json_value(text: str, flag: str) -> Any:
    """`text` as JSON: at most MAX_JSON_DEPTH deep, finite numbers, 64-bit integers, no duplicate keys."""
    utf8(text, flag)
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise UsageError(f"{flag}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, parse_int=_long, object_pairs_hook=_unique
        )
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{flag}: {clip(str(e)) or 'JSON nested too deeply'}") from None
    _check_strings(value, flag)
    return value


def json_object(text: str, flag: str) -> dict[str, Any]:
    value = json_value(text, flag)
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def names(value: Any, what: str, *, limit: int | None = None) -> list[str]:
    """A list of non-empty strings (a lone string is refused, not split into characters)."""
    if not isinstance(value, list):
        raise UsageError(f"{what} must be a list of strings, got {_kind(value)}")
    if limit is not None and len(value) > limit:
        raise UsageError(f"{what} has {len(value)} entries, more than the limit of {limit}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise UsageError(f"{what}[{i}] must be a non-empty string, got {_kind(item)}")
    return list(value)


# --- argparse types: their errors become `pep CMD: argument --x: message` -----------------


def name(value: str) -> str:
    """A non-empty name of at most MAX_NAME characters."""
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return optional_name(value)


def optional_name(value: str) -> str:
    try:
        utf8(value, "the value")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if len(value) > MAX_NAME:
        raise argparse.ArgumentTypeError(f"at most {MAX_NAME} characters, got {len(value)}")
    return value


def seconds(value: str) -> float:
    """A timeout: a finite number of seconds above 0 and at most MAX_TIMEOUT."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {clip(value, 40)!r}") from None
    if not (math.isfinite(number) and 0 < number <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {MAX_TIMEOUT:g} seconds, got {clip(value, 40)}")
    return number


def bounded_int(low: int, high: int, unit: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value) if len(value) <= 20 else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of {unit} from {low} to {high}, got {clip(value, 40)}"
            )
        return number

    parse.__name__ = unit  # argparse names the type in its own messages
    return parse


# --- paths ----------------------------------------------------------------------------------


def directory(path: str, what: str) -> str:
    """An existing, readable directory."""
    utf8(path, what)
    if not os.path.exists(path):
        raise UsageError(f"{what} {path}: no such directory")
    if not os.path.isdir(path):
        raise UsageError(f"{what} {path}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"{what} {path}: permission denied")
    return path


def read_text(path: str, what: str, *, limit: int = 16 * 1024 * 1024) -> str:
    """A readable UTF-8 file of at most `limit` bytes, as text."""
    utf8(path, what)
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {path}: not UTF-8 (byte {e.start})") from None


def policy_snapshot(root: str) -> Any:
    """The policy directory `root` loaded, or a one-line UsageError naming its first problem
    (`pep validate` lists them all): for commands that read a directory to judge something else."""
    from pep.errors import PolicyLoadError
    from pep.policy.loader import load_snapshot

    try:
        return load_snapshot(root)
    except PolicyLoadError as e:
        first = str(e.problems[0]) if e.problems else "it does not load"
        more = f" (and {len(e.problems) - 1} more: see pep validate)" if len(e.problems) > 1 else ""
        where = first if os.path.isabs(first) else os.path.join(root, first)
        raise UsageError(f"{root}: the policy directory does not load: {where}{more}") from None
    except RecursionError:
        raise UsageError(f"{root}: a file nests too deeply to read") from None
