"""Lifecycle: every agent of a chain must be `active` in agents.yaml and not past `expires`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pep.errors import ChainError, ControlError
from pep.policy.registry import Registry
from pep.reasons import Reason


def check_lifecycle(chain: Sequence[str], registry: Registry, today: dt.date) -> None:
    """Raise `agent_disabled` for an agent not `active`, `agent_expired` for one past `expires`."""
    for agent in chain:
        rec = registry.get(agent)
        if rec is None:  # pragma: no cover - the chain rules ran first
            raise ChainError(f"agent {agent!r} is not in the agent registry", Reason.CHAIN_UNKNOWN_AGENT)
        if rec.status != "active":
            raise ControlError(f"agent {agent!r} is {rec.status}", Reason.AGENT_DISABLED)
        if rec.expired(today):
            raise ControlError(f"agent {agent!r} expired on {rec.expires}", Reason.AGENT_EXPIRED)
