"""The decision record: what a check answers, and everything the log and metrics need.

`Outcome` is a decision before it is recorded; `Decision` the recorded one. The log takes a
`Decision` and acknowledges it (`Ack`); metrics count it once it is final.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

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


@dataclass(frozen=True, slots=True)
class Caller:
    """What one principal of a request puts in Cedar's request besides the policy directory.

    References only (built once per principal and request); the decision log formats them off
    the request path (pep.audit.entry). The flags say how the request was decided.
    """

    # The on-behalf-of user as the token describes it (docs/identity.md).
    user_groups: tuple[str, ...] = ()
    user_attributes: Mapping[str, Any] | None = None
    # The verified token's `iat` and `exp`; None when no token was verified.
    issued_at: int | None = None
    expires_at: int | None = None
    # A trusted AuthZEN subject: its (type, id) and properties as given.
    subject: tuple[str, str] | None = None
    subject_properties: Mapping[str, Any] | None = None
    schema: bool = True  # the context was validated against the schema
    strict: bool = True  # a policy error denies
    grants: bool = True  # the delegation grants were required (delegation.require_grants)
    listing: bool = False  # a filtered list: previewed, never decided
    policies: bool = True  # False: the request asked no policy
    require_registry_scopes: bool = False  # identity.require_registry_scopes


@dataclass(frozen=True, slots=True)
class Inputs:
    """One check's own Cedar inputs, by reference: the caller's context (before pep adds its
    keys), the resource's attributes and parents as sent, and the principal's `Caller`."""

    context: Mapping[str, Any]
    attributes: Mapping[str, Any] | None = None
    parents: tuple[tuple[str, str], ...] = ()
    implied: bool = False
    caller: Caller | None = None
    # The outcome is Cedar's answer to the policies (not a refusal before them, a listing, ...).
    evaluated: bool = False
    # A check evaluated with others in one Cedar request (a batch): the run's id and size.
    batch: str = ""
    batch_size: int = 0
    # The context or attributes were larger than an entry keeps, so they were not held.
    cut: bool = False


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
    # The token's scopes the agent's registry entry took out (sorted); `token.scopes` keeps them all.
    scopes_dropped: tuple[str, ...] = ()
    binding: str = ""
    mode: str = "enforce"
    ts: float = 0.0
    duration_us: int = 0
    fault: Fault | None = None
    traceparent: str = ""
    shadow: ShadowSummary | None = None
    # A filtered list (MCP `tools/list` and the like): the names this principal was not shown.
    hidden: tuple[str, ...] = ()
    # What replaying this decision needs besides the policy directory (None: not recorded).
    inputs: Inputs | None = None
    # The server's current DPoP nonce, for the answer only: never written to the decision log.
    dpop_nonce: str = field(default="", repr=False)

    @property
    def shadow_diverged(self) -> bool:
        return self.shadow is not None and self.shadow.allowed != self.allowed


UNLOGGED = "decision log unavailable"


def unlogged(d: Decision) -> Decision:
    """What an allow becomes when `decision_log.required` could not log it: a deny, `internal_error`."""
    return replace(d, allowed=False, answer_allowed=False, reason=Reason.INTERNAL_ERROR, errors=(*d.errors, UNLOGGED))


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
    # Cedar's answer to the policies (set by pep.policy.evaluate.outcome_of); not compared.
    evaluated: bool = field(default=False, compare=False)
    # A `dpop_nonce_required` refusal: the nonce the client must send (pep.tokens.nonce.NonceError).
    dpop_nonce: str = field(default="", repr=False)


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
