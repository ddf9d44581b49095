"""A decision's outcome before it becomes a Decision: allow or deny, and why."""

from __future__ import annotations

from dataclasses import dataclass

import cedarpy

from pep.decision import Fault
from pep.reasons import Reason


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    reason: Reason
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    fault: Fault | None = None
    # What the shadow policies would have answered, when they exist.
    shadow: Outcome | None = None


def outcome_of(result: cedarpy.AuthzResult, *, strict: bool = True) -> Outcome:
    """Map a Cedar answer to a reason code."""
    reasons = tuple(result.diagnostics.reasons)
    errors = tuple(result.diagnostics.errors)
    if result.decision == cedarpy.Decision.NoDecision:
        # Cedar could not build the request: it does not fit the schema.
        return Outcome(False, Reason.INVALID_REQUEST, errors=errors)
    if errors and strict:
        return Outcome(False, Reason.EVALUATION_ERROR, policies=reasons, errors=errors)
    if result.allowed:
        return Outcome(True, Reason.ALLOWED, policies=reasons, errors=errors)
    if reasons:
        return Outcome(False, Reason.POLICY_FORBID, policies=reasons, errors=errors)
    return Outcome(False, Reason.POLICY_NO_PERMIT, errors=errors)
