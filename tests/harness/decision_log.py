"""The decision log as tests read it: the fields every entry has (README, decision log), and lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG_FIELDS = {
    "ts",
    "decision_id",
    "request_id",
    "decision",
    "reason",
    "policies",
    "errors",
    "agent",
    "on_behalf_of",
    "delegation_chain",
    "action",
    "resource",
    "token",
    "scopes_dropped",
    "binding",
    "policy_version",
    "mode",
    "duration_us",
}


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the log at `path` (none while it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
