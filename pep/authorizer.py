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
from pep.policy.evaluate import Query, evaluate, roots_of
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
        n = len(checks)
        try:
            for check in checks:
                check_request_shape(check)
            contexts = [cedar_value(dict(c.context), "context") for c in checks]
        except RequestError as e:
            return [Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)] * n, None, None
        if snapshot is None:
            out = Outcome(
                False, Reason.POLICY_UNAVAILABLE, errors=("no valid policy set is loaded",), fault=Fault.UNAVAILABLE
            )
            return [out] * n, None, None
        try:
            resources = [resource_entity(c.resource, snapshot.entity_uids) for c in checks]
        except RequestError as e:
            return [Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)] * n, None, None
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
            check_lifecycle(identity.chain, registry, dt.datetime.fromtimestamp(self._clock(), dt.UTC).date())
            base = base_context(identity, token)
            user = user_entity(identity)
            if user is not None and ("User", user["uid"]["id"]) in snapshot.entity_uids:
                user = None  # the entity store's user wins over the token's view
            queries = [
                Query(
                    ("Agent", identity.agent),
                    ("Action", c.action),
                    (c.resource.type, c.resource.id),
                    {**ctx, **base},
                )
                for c, ctx in zip(checks, contexts, strict=True)
            ]
            hops = self._grant_queries(identity, base, user) if self._config.delegation.require_grants else []
            entities, bad = self._entities(snapshot, [*queries, *hops], user, resources)
            if hops:
                if entities is None:
                    raise PepError(f"request entities: {bad[0]}", Reason.INVALID_REQUEST)
                self._check_grants(snapshot, hops, entities)
        except PepError as e:
            return [Outcome(False, e.reason, errors=(e.detail,))] * n, identity, token
        outcomes = []
        for i, (check, query) in enumerate(zip(checks, queries, strict=True)):
            try:
                rec = registry.get(identity.agent)
                self._limiter.take(snapshot.limits, identity.agent, rec.groups if rec else (), check.action)
            except PepError as e:
                outcomes.append(Outcome(False, e.reason, errors=(e.detail,)))
                continue
            handle = entities
            if handle is None:  # this batch's request entities do not fit together: one at a time
                handle, problems = self._entities(snapshot, [query, *hops], user, [resources[i]])
                if handle is None:
                    outcomes.append(
                        Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {problems[0]}",))
                    )
                    continue
            outcomes.append(self._evaluate(snapshot, query, handle))
        return outcomes, identity, token

    def _entities(
        self,
        snapshot: Snapshot,
        queries: Sequence[Query],
        user: dict[str, Any] | None,
        resources: Sequence[dict[str, Any] | None],
    ) -> tuple[cedarpy.Entities | None, list[str]]:
        """One entity slice for all `queries`, or (None, why) if the request's own entities do not fit."""
        try:
            delta = entity_delta([user, *resources])
            return snapshot.entities_for(roots_of(queries), delta), []
        except (ValueError, RequestError) as e:
            return None, [str(e)]

    def _grant_queries(self, identity: Identity, context: dict[str, Any], user: dict[str, Any] | None) -> list[Query]:
        """Each hop of the chain as Action::"delegate": delegator -> delegate agent (SPEC 2)."""
        chain = list(reversed(identity.chain))  # first actor first
        delegate_action = ("Action", DELEGATE_ACTION)
        hops = []
        if identity.on_behalf_of is not None:
            groups = tuple(("Group", g) for g in identity.user_groups) if user is not None else ()
            hops.append(Query(("User", identity.on_behalf_of), delegate_action, ("Agent", chain[0]), context, groups))
        for delegator, delegate in pairwise(chain):
            hops.append(Query(("Agent", delegator), delegate_action, ("Agent", delegate), context))
        return hops

    def _check_grants(self, snapshot: Snapshot, hops: Sequence[Query], entities: cedarpy.Entities) -> None:
        for hop, result in zip(hops, evaluate(snapshot, hops, entities), strict=True):
            if not result.allowed or (self._strict and result.diagnostics.errors):
                who = f'{hop.principal[0]}::"{hop.principal[1]}"'
                detail = f'{who} may not delegate to Agent::"{hop.resource[1]}"'
                if result.diagnostics.errors:
                    detail += ": " + "; ".join(result.diagnostics.errors)
                raise PepError(detail, Reason.CHAIN_DELEGATION_FORBIDDEN)

    def _evaluate(self, snapshot: Snapshot, query: Query, entities: cedarpy.Entities) -> Outcome:
        outcome = outcome_of(evaluate(snapshot, [query], entities)[0], strict=self._strict)
        if snapshot.shadow_index is not None:
            shadow = evaluate(snapshot, [query], entities, shadow=True)[0]
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
