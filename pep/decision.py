"""The decision record: what a check answers, and everything the log and metrics need.

`Outcome` is a decision before it is recorded; `Decision` the recorded one. The log takes a
`Decision` and acknowledges it (`Ack`); metrics count it once it is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pep.reasons import Reason


class Fault(StrEnum):
    """Outcomes answered as an error status rather than a decision (docs/api.md, the outcome contract)."""

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
    # A filtered list (MCP `tools/list` and the like): the names this principal was not shown.
    hidden: tuple[str, ...] = ()

    @property
    def shadow_diverged(self) -> bool:
        return self.shadow is not None and self.shadow.allowed != self.allowed


@dataclass(frozen=True)
class Outcome:
    """Allow or deny, and why, before it becomes a recorded Decision."""

    allowed: bool
    reason: Reason
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    fault: Fault | None = None
    # What the shadow policies would have answered, when they exist.
    shadow: Outcome | None = None
    hidden: tuple[str, ...] = ()


class Ack(Protocol):
    """The decision log's answer to one entry."""

    def wait(self) -> bool:
        """True once the log has taken the entry; False when it never will (dropped, refused)."""
        ...


class DecisionSink(Protocol):
    """Where decisions are logged. Must never raise."""

    def submit(self, decision: Decision) -> Ack: ...


class DecisionCounter(Protocol):
    """Where final decisions are counted (metrics). Must never raise."""

    def count(self, decision: Decision) -> None: ...
