"""The decision pipeline: credentials -> identity -> controls -> Cedar -> Decision.

No gRPC here. One call reads the current snapshot once, so every check of a batch sees
exactly one policy version.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Protocol

import cedarpy

from pep.config import Config
from pep.controls.killswitch import RuntimeKills, check_kill
from pep.controls.ratelimit import RateLimiter
from pep.decision import Decision, Fault, Recorder, ShadowSummary, TokenSummary
from pep.errors import PepError, RequestError
from pep.identity import Identity, check_lifecycle, resolve_identity
from pep.policy.loader import Snapshot
from pep.policy.request import (
    Check,
    base_context,
    cedar_value,
    check_request_shape,
    entity_delta,
    resource_entity,
    user_entity,
)
from pep.reasons import Reason
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

DELEGATE_ACTION = "delegate"


class SnapshotSource(Protocol):
    def current(self) -> Snapshot | None: ...


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    reason: Reason
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    fault: Fault | None = None
    # What the shadow policies would have answered, when they exist.
    shadow: Outcome | None = None


class Authorizer:
    def __init__(
        self,
        config: Config,
        store: SnapshotSource,
        verifier: TokenVerifier,
        recorder: Recorder,
        *,
        clock: Callable[[], float] = time.time,
        strict: bool = True,
        kills: RuntimeKills | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._config = config
        self._kills = kills if kills is not None else RuntimeKills()
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._store = store
        self._verifier = verifier
        self._recorder = recorder
        self._clock = clock
        self._strict = strict
        self._log_required = config.decision_log.required

    def authorize(self, creds: Credentials, checks: Sequence[Check], traceparent: str = "") -> list[Decision]:
        """Answer every check, in order. Never raises: faults are decisions with `fault` set."""
        started = time.perf_counter()
        snapshot = self._store.current()
        try:
            outcomes, identity, token = self._decide(creds, checks, snapshot)
        except Exception:  # a bug must deny, never escape as an allow
            log.exception("internal error while deciding")
            outcomes = [Outcome(False, Reason.INTERNAL_ERROR, fault=Fault.INTERNAL)] * len(checks)
            identity, token = None, None
        elapsed_us = int((time.perf_counter() - started) * 1e6)
        per_check_us = elapsed_us // max(1, len(checks))
        now = self._clock()
        version = snapshot.version if snapshot else ""
        summary = _summary(token)
        decisions = []
        for check, outcome in zip(checks, outcomes, strict=True):
            answer = outcome.allowed or (self._config.mode == "dry_run" and outcome.fault is None)
            decision = Decision(
                decision_id=str(uuid.uuid4()),
                allowed=outcome.allowed,
                reason=outcome.reason,
                answer_allowed=answer,
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
                token=summary,
                binding=token.binding if token else "",
                mode=self._config.mode,
                ts=now,
                duration_us=per_check_us,
                fault=outcome.fault,
                traceparent=traceparent,
                shadow=_shadow_summary(outcome),
            )
            if not self._recorder.record(decision) and self._log_required and decision.answer_allowed:
                # An unlogged action is worse than a refused one in this mode.
                decision = replace(
                    decision,
                    allowed=False,
                    answer_allowed=False,
                    reason=Reason.INTERNAL_ERROR,
                    errors=(*decision.errors, "decision log unavailable"),
                )
            decisions.append(decision)
        return decisions

    def _decide(
        self, creds: Credentials, checks: Sequence[Check], snapshot: Snapshot | None
    ) -> tuple[list[Outcome], Identity | None, VerifiedToken | None]:
        try:
            for check in checks:
                check_request_shape(check)
        except RequestError as e:
            return (
                [Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)] * len(checks),
                None,
                None,
            )
        if snapshot is None:
            out = Outcome(
                False, Reason.POLICY_UNAVAILABLE, errors=("no valid policy set is loaded",), fault=Fault.UNAVAILABLE
            )
            return [out] * len(checks), None, None
        token: VerifiedToken | None = None
        identity: Identity | None = None
        kills, registry = self._kills.view(), snapshot.registry
        try:
            check_kill(snapshot.killswitch, kills)  # `all` first: it stops even a bad token
            token = self._verifier.verify(creds)
            check_kill(snapshot.killswitch, kills, issuer=token.issuer)
            identity = resolve_identity(token, registry, self._config.delegation, self._config.identity)
            check_kill(
                snapshot.killswitch,
                kills,
                chain=identity.chain,
                groups_of=lambda a: rec.groups if (rec := registry.get(a)) else (),
                user=identity.on_behalf_of,
            )
            check_lifecycle(identity.chain, snapshot.registry, dt.datetime.fromtimestamp(self._clock(), dt.UTC).date())
            base = base_context(identity, token)
            user = user_entity(identity)
            if user is not None and ("User", user["uid"]["id"]) in snapshot.entity_uids:
                user = None  # the entity store's user wins over the token's view
            if self._config.delegation.require_grants:
                self._check_grants(snapshot, identity, base, user)
        except PepError as e:
            return [Outcome(False, e.reason, errors=(e.detail,))] * len(checks), identity, token
        return [self._evaluate(snapshot, identity, base, user, c) for c in checks], identity, token

    def _check_grants(
        self, snapshot: Snapshot, identity: Identity, context: dict[str, Any], user: dict[str, Any] | None
    ) -> None:
        """Each hop of the chain must be permitted as Action::"delegate" (SPEC 2)."""
        hops: list[tuple[dict[str, str], str]] = []
        chain = list(reversed(identity.chain))  # first actor first
        if identity.on_behalf_of is not None:
            hops.append(({"type": "User", "id": identity.on_behalf_of}, chain[0]))
        for delegator, delegate in pairwise(chain):
            hops.append(({"type": "Agent", "id": delegator}, delegate))
        if not hops:
            return
        entities = snapshot.entities
        delta = entity_delta([user])
        if delta is not None:
            entities = entities.with_added_json_str(delta, snapshot.schema)
        requests = [
            {
                "principal": principal,
                "action": {"type": "Action", "id": DELEGATE_ACTION},
                "resource": {"type": "Agent", "id": delegate},
                "context": context,
            }
            for principal, delegate in hops
        ]
        results = cedarpy.is_authorized_batch(requests, snapshot.policy_set, entities, snapshot.schema)
        for (principal, delegate), result in zip(hops, results, strict=True):
            if not result.allowed or (self._strict and result.diagnostics.errors):
                who = f'{principal["type"]}::"{principal["id"]}"'
                detail = f'{who} may not delegate to Agent::"{delegate}"'
                if result.diagnostics.errors:
                    detail += ": " + "; ".join(result.diagnostics.errors)
                raise PepError(detail, Reason.CHAIN_DELEGATION_FORBIDDEN)

    def _evaluate(
        self,
        snapshot: Snapshot,
        identity: Identity,
        base: dict[str, Any],
        user: dict[str, Any] | None,
        check: Check,
    ) -> Outcome:
        try:
            rec = snapshot.registry.get(identity.agent)
            self._limiter.take(snapshot.limits, identity.agent, rec.groups if rec else (), check.action)
        except PepError as e:
            return Outcome(False, e.reason, errors=(e.detail,))
        try:
            context = {**cedar_value(dict(check.context), "context"), **base}
            delta = entity_delta([user, resource_entity(check.resource, snapshot.entity_uids)])
        except RequestError as e:
            return Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)
        entities = snapshot.entities
        if delta is not None:
            try:
                entities = entities.with_added_json_str(delta, snapshot.schema)
            except ValueError as e:
                return Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {e}",))
        request = {
            "principal": {"type": "Agent", "id": identity.agent},
            "action": {"type": "Action", "id": check.action},
            "resource": {"type": check.resource.type, "id": check.resource.id},
            "context": context,
        }
        result = cedarpy.is_authorized(request, snapshot.policy_set, entities, snapshot.schema)
        outcome = outcome_of(result, strict=self._strict)
        if snapshot.shadow_policy_set is not None:
            shadow = cedarpy.is_authorized(request, snapshot.shadow_policy_set, entities, snapshot.schema)
            outcome = replace(outcome, shadow=outcome_of(shadow, strict=self._strict))
        return outcome


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


def _shadow_summary(outcome: Outcome) -> ShadowSummary | None:
    shadow = outcome.shadow
    if shadow is None:
        return None
    return ShadowSummary(shadow.allowed, shadow.reason, shadow.policies, shadow.errors)


def _summary(token: VerifiedToken | None) -> TokenSummary:
    if token is None:
        return TokenSummary()
    return TokenSummary(
        iss=token.issuer,
        jti=token.jti,
        client_id=token.client_id,
        scopes=tuple(sorted(token.scopes)),
    )
