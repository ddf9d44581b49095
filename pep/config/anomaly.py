"""The `anomaly` section: rules over each agent's recent decisions, checked field by field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pep.config.sections import ANOMALY_ACTIONS, ANOMALY_KINDS, AnomalyConfig, AnomalyRule
from pep.config.values import as_list, as_str, check_keys
from pep.errors import ConfigError

# A rule's name is a metric label and part of a kill switch reason: short and plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The fields each kind requires; any other field besides name, kind and action is an error.
REQUIRED = {
    "deny_ratio": ("threshold", "min_decisions", "window_seconds"),
    "rate": ("threshold", "window_seconds"),
    "new_action": ("learning_seconds",),
}
MAX_WINDOW_SECONDS = 86_400
MAX_LEARNING_SECONDS = 366 * 86_400
MAX_MIN_DECISIONS = 1_000_000


def parse_anomaly(value: Any) -> AnomalyConfig:
    if value is None:
        return AnomalyConfig()
    if not isinstance(value, Mapping):
        raise ConfigError("anomaly", "must be a mapping with rules")
    check_keys(value, AnomalyConfig, "anomaly.", set())
    rules: list[AnomalyRule] = []
    seen: set[str] = set()
    for i, item in enumerate(as_list(value.get("rules") or [], "anomaly.rules")):
        rule = _rule(item, f"anomaly.rules[{i}]")
        if rule.name in seen:
            raise ConfigError(f"anomaly.rules[{i}].name", f"{rule.name!r} is configured twice")
        seen.add(rule.name)
        rules.append(rule)
    return AnomalyConfig(tuple(rules))


def _rule(item: Any, key: str) -> AnomalyRule:
    if not isinstance(item, Mapping):
        raise ConfigError(key, "must be a mapping with name, kind, action and the kind's fields")
    check_keys(item, AnomalyRule, key + ".", set())
    for required in ("name", "kind"):
        if required not in item:
            raise ConfigError(f"{key}.{required}", "is required")
    name = as_str(item["name"], f"{key}.name")
    if not _NAME.match(name):
        raise ConfigError(f"{key}.name", f"must be 1-64 letters, digits or ._- , got {name!r}")
    kind = as_str(item["kind"], f"{key}.kind")
    if kind not in ANOMALY_KINDS:
        raise ConfigError(f"{key}.kind", f"must be one of {', '.join(ANOMALY_KINDS)}, got {kind!r}")
    action = as_str(item.get("action", "alert"), f"{key}.action")
    if action not in ANOMALY_ACTIONS:
        raise ConfigError(f"{key}.action", f"must be alert or suspend, got {action!r}")
    needed = REQUIRED[kind]
    for field in ("threshold", "min_decisions", "window_seconds", "learning_seconds"):
        if field in item and field not in needed:
            raise ConfigError(f"{key}.{field}", f"does not apply to kind {kind} (it takes {', '.join(needed)})")
        if field in needed and field not in item:
            raise ConfigError(f"{key}.{field}", f"is required for kind {kind}")
    kw: dict[str, Any] = {}
    if "threshold" in needed:
        kw["threshold"] = threshold = _finite(item["threshold"], f"{key}.threshold")
        if kind == "deny_ratio" and not 0 < threshold <= 1:
            raise ConfigError(f"{key}.threshold", f"is a share of denies: more than 0, at most 1; got {threshold}")
        if kind == "rate" and threshold <= 0:
            raise ConfigError(f"{key}.threshold", f"is decisions per second: more than 0; got {threshold}")
    if "min_decisions" in needed:
        kw["min_decisions"] = _whole(item["min_decisions"], f"{key}.min_decisions", 1, MAX_MIN_DECISIONS)
    if "window_seconds" in needed:
        kw["window_seconds"] = _whole(item["window_seconds"], f"{key}.window_seconds", 1, MAX_WINDOW_SECONDS)
    if "learning_seconds" in needed:
        kw["learning_seconds"] = _whole(item["learning_seconds"], f"{key}.learning_seconds", 0, MAX_LEARNING_SECONDS)
    return AnomalyRule(name, kind, action, **kw)


def _finite(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    return float(value)


def _whole(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}, got {value!r}")
    return value
