"""Stage 5, the record: an outcome becomes a Decision, the log takes it, metrics count it.

The decision is then shown to anomaly detection (pep.controls.anomaly), as answered.

The required-log rule lives here and only here: in `decision_log.required` mode an allow the
log did not take becomes a deny (`internal_error`), and metrics count the decision as it was
finally answered.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable

from pep.controls.anomaly import Detector
from pep.decision import (
    Decision,
    DecisionCounter,
    DecisionSink,
    Inputs,
    Outcome,
    ShadowSummary,
    TokenSummary,
    unlogged,
)
from pep.delegation.identity import Identity
from pep.policy.request import Check
from pep.tokens.verifier import VerifiedToken

log = logging.getLogger(__name__)
# Decision ids are unique, not secret: a PRNG seeded from the OS once instead of os.urandom per
# decision (a system call of ~25 us here). getrandbits is one C call, atomic under the GIL.
_ids = random.Random(os.urandom(32))  # noqa: S311


def decision_id() -> str:
    """A random (version 4) UUID."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


class Recorder:
    def __init__(
        self,
        sink: DecisionSink | None,
        counter: DecisionCounter | None,
        *,
        mode: str = "enforce",
        log_required: bool = False,
        clock: Callable[[], float] = time.time,
        anomaly: Detector | None = None,
    ) -> None:
        self._sink = sink
        self._counter = counter
        self._anomaly = anomaly
        self._mode = mode
        self._required = log_required
        self._clock = clock

    def answer(self, outcome: Outcome) -> bool:
        """What the caller is told: in dry_run every judged request is allowed."""
        return outcome.allowed or (self._mode == "dry_run" and outcome.fault is None)

    def record(
        self,
        check: Check,
        outcome: Outcome,
        identity: Identity | None,
        token: VerifiedToken | None,
        version: str,
        duration_us: int,
        traceparent: str,
        *,
        inputs: Inputs | None = None,
    ) -> Decision:
        decision = Decision(
            decision_id=decision_id(),
            allowed=outcome.allowed,
            reason=outcome.reason,
            answer_allowed=self.answer(outcome),
            policies=outcome.policies,
            errors=outcome.errors,
            policy_version=version,
            agent=identity.agent if identity else "",
            on_behalf_of=(identity.on_behalf_of or "") if identity else "",
            delegation_chain=identity.chain if identity else (),
            action=check.action,
            resource_type=check.resource.type,
            resource_id=check.resource.id,
            request_id=check.request_id,
            token=_summary(token),
            scopes_dropped=identity.scopes_dropped if identity else (),
            binding=token.binding if token else "",
            mode=self._mode,
            ts=self._clock(),
            duration_us=duration_us,
            fault=outcome.fault,
            traceparent=traceparent,
            shadow=_shadow(outcome),
            hidden=outcome.hidden,
            inputs=inputs,
            dpop_nonce=outcome.dpop_nonce or (token.dpop_nonce if token else ""),
        )
        ack = self._sink.submit(decision) if self._sink is not None else None
        # In required mode an allow waits until its entry has reached the log (group commit:
        # concurrent allows share one write); a deny is answered without waiting.
        if ack is not None and self._required and decision.answer_allowed and not ack.wait():
            decision = unlogged(decision)  # an unlogged action is worse than a refused one here
        if self._counter is not None:
            self._counter.count(decision)
        if self._anomaly is not None:
            self._anomaly.observe(decision)
        return decision


def _shadow(outcome: Outcome) -> ShadowSummary | None:
    shadow = outcome.shadow
    if shadow is None:
        return None
    return ShadowSummary(shadow.allowed, shadow.reason, shadow.policies, shadow.errors)


def _summary(token: VerifiedToken | None) -> TokenSummary:
    if token is None:
        return TokenSummary()
    return TokenSummary(iss=token.issuer, jti=token.jti, client_id=token.client_id, scopes=tuple(sorted(token.scopes)))
