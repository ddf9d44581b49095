"""The checks every config section shares: a value of the right type, or a ConfigError naming its key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from pep.errors import ConfigError


def like(value: Any, default: Any, key: str) -> Any:
    """Coerce `value` to the type of `default`, or say why it cannot be."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, got {value!r}")
        if value < 0:
            raise ConfigError(key, f"must not be negative, got {value}")
        return value
    if isinstance(default, float):
        return as_number(value, key, 0)
    if isinstance(default, str):
        return as_str(value, key)
    if isinstance(default, tuple):
        return tuple(as_str(v, key) for v in as_list(value, key))
    raise ConfigError(key, "unsupported setting")  # pragma: no cover


def check_keys(raw: Mapping[str, Any], cls: type[Any], prefix: str, extra: set[str]) -> None:
    known = {f.name for f in fields(cls)} | extra
    for key in raw:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def as_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(key, f"must be a list, got {value!r}")
    return list(value)


def as_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return value


def as_number(value: Any, key: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(key, f"must be a number >= {minimum}, got {value!r}")
    return float(value)
