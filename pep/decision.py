"""The decision record: what a check answers, and everything the log and metrics need."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pep.reasons import Reason


class Fault(StrEnum):
    """Outcomes answered as a gRPC error rather than a decision (SPEC 1, outcome contract)."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


@dataclass(frozen=True)
class TokenSummary:
    """What the log may say about a token: never the token itself."""

    iss: str = ""
    jti: str = ""
    client_id: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShadowSummary:
    """What the shadow policies decided for the same request."""

    allowed: bool
    reason: Reason
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    decision_id: str
    # The real outcome of evaluation; `answer_allowed` is what the caller is told.
    allowed: bool
    reason: Reason
    answer_allowed: bool
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    policy_version: str = ""
    agent: str = ""
    on_behalf_of: str = ""
    delegation_chain: tuple[str, ...] = ()
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    request_id: str = ""
    token: TokenSummary = field(default_factory=TokenSummary)
    binding: str = ""
    mode: str = "enforce"
    ts: float = 0.0
    duration_us: int = 0
    fault: Fault | None = None
    traceparent: str = ""
    shadow: ShadowSummary | None = None

    @property
    def shadow_diverged(self) -> bool:
        return self.shadow is not None and self.shadow.allowed != self.allowed


class Recorder(Protocol):
    """Receives every decision after it is made (log and metrics). Must never raise."""

    def record(self, decision: Decision) -> bool:
        """Return False when the decision could not be queued for logging."""
        ...
