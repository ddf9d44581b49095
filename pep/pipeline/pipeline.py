"""The decision pipeline: credentials -> identity -> controls -> Cedar -> Decision.

No gRPC here. One call reads the current snapshot once, so every check of a batch sees
exactly one policy version.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cedarpy

from pep.config import Config
from pep.controls.killswitch import RuntimeKills, check_kill
from pep.controls.ratelimit import RateLimiter
from pep.decision import Decision, Fault, Recorder, ShadowSummary, TokenSummary
from pep.delegation.grants import Grants
from pep.delegation.identity import Identity, check_chain, check_lifecycle, resolve_identity
from pep.errors import PepError, RequestError
from pep.outcome import Outcome, outcome_of
from pep.policy.evaluate import Query, evaluate, roots_of
from pep.policy.loader import Snapshot
from pep.policy.properties import entities_with_properties
from pep.policy.request import (
    Check,
    base_context,
    cedar_value,
    check_request_shape,
    entity_delta,
    resource_entity,
    user_entity,
)
from pep.policy.slicing import Uid, entity_refs
from pep.reasons import Reason
from pep.tokens.verifier import Credentials, TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

AGENT_TYPE = "Agent"


_UNAVAILABLE = Outcome(
    False, Reason.POLICY_UNAVAILABLE, errors=("no valid policy set is loaded",), fault=Fault.UNAVAILABLE
)


def _malformed(error: RequestError, n: int) -> list[Outcome]:
    """Every check answered INVALID_ARGUMENT: a malformed request is malformed as a whole."""
    return [Outcome(False, error.reason, errors=(error.detail,), fault=Fault.INVALID_ARGUMENT)] * n


class SnapshotSource(Protocol):
    def current(self) -> Snapshot | None: ...


@dataclass(frozen=True)
class Subject:
    """A principal the caller vouches for (a trust_subject AuthZEN listener): no token involved.

    `properties` become the entity's attributes, over what the entity store holds.
    """

    type: str
    id: str
    properties: Mapping[str, Any] | None = None


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
        self._grants = Grants(strict=strict)
        self._store = store
        self._verifier = verifier
        self._recorder = recorder
        self._clock = clock
        self._strict = strict
        self._log_required = config.decision_log.required

    def authorize(
        self,
        creds: Credentials,
        checks: Sequence[Check],
        traceparent: str = "",
        *,
        subject: tuple[str, str] | None = None,
        stop: Callable[[bool], bool] | None = None,
    ) -> list[Decision]:
        """Answer every check, in order. Never raises: faults are decisions with `fault` set.

        `subject` (type, id): the principal the caller names; a token that resolves to
        anyone else is denied (`invalid_request`). `stop(answer)` returning True ends the
        batch after that check: later checks are neither evaluated nor recorded.
        """
        started = time.perf_counter()
        snapshot = self._store.current()
        try:
            outcomes, identity, token = self._decide(creds, checks, snapshot, subject, stop)
        except Exception:  # a bug must deny, never escape as an allow
            log.exception("internal error while deciding")
            outcomes = [Outcome(False, Reason.INTERNAL_ERROR, fault=Fault.INTERNAL)] * len(checks)
            identity, token = None, None
        outcomes = self._until(outcomes, stop)
        return self._record(checks, outcomes, [identity] * len(outcomes), token, snapshot, started, traceparent)

    def authorize_subject(
        self,
        subjects: Sequence[Subject],
        checks: Sequence[Check],
        traceparent: str = "",
        *,
        stop: Callable[[bool], bool] | None = None,
    ) -> list[Decision]:
        """Answer each check for its subject, taken as given: no token, no delegation chain.

        The principal is `subject.type::subject.id`, its attributes the store's with
        `properties` over them; the check's context is the whole request context. Controls
        that name a principal apply: the kill switch (`all`; an `Agent` and its groups, or
        any other principal's id under `users`), and for an `Agent` the registry (registered,
        active, unexpired) and its rate limits. Recorded exactly like `authorize`.
        """
        started = time.perf_counter()
        snapshot = self._store.current()
        identities = [_subject_identity(s) for s in subjects]
        try:
            if len(subjects) != len(checks):
                raise ValueError("one subject per check")
            outcomes = self._decide_subjects(subjects, checks, snapshot, stop)
        except Exception:  # a bug must deny, never escape as an allow
            log.exception("internal error while deciding")
            outcomes = [Outcome(False, Reason.INTERNAL_ERROR, fault=Fault.INTERNAL)] * len(checks)
        outcomes = self._until(outcomes, stop)
        return self._record(checks, outcomes, identities, None, snapshot, started, traceparent)

    def _answer(self, outcome: Outcome) -> bool:
        """What the caller is told: in dry_run every judged request is allowed."""
        return outcome.allowed or (self._config.mode == "dry_run" and outcome.fault is None)

    def _until(self, outcomes: list[Outcome], stop: Callable[[bool], bool] | None) -> list[Outcome]:
        """`outcomes` up to and including the first one `stop` ends the batch on."""
        if stop is None:
            return outcomes
        for i, outcome in enumerate(outcomes):
            if stop(self._answer(outcome)):
                return outcomes[: i + 1]
        return outcomes

    def _record(
        self,
        checks: Sequence[Check],
        outcomes: Sequence[Outcome],
        identities: Sequence[Identity | None],
        token: VerifiedToken | None,
        snapshot: Snapshot | None,
        started: float,
        traceparent: str,
    ) -> list[Decision]:
        """Turn outcomes into decisions and record each (log and metrics)."""
        elapsed_us = int((time.perf_counter() - started) * 1e6)
        per_check_us = elapsed_us // max(1, len(outcomes))
        now = self._clock()
        version = snapshot.version if snapshot else ""
        summary = _summary(token)
        decisions = []
        for check, outcome, identity in zip(checks, outcomes, identities, strict=False):
            answer = self._answer(outcome)
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
        self,
        creds: Credentials,
        checks: Sequence[Check],
        snapshot: Snapshot | None,
        subject: tuple[str, str] | None = None,
        stop: Callable[[bool], bool] | None = None,
    ) -> tuple[list[Outcome], Identity | None, VerifiedToken | None]:
        n = len(checks)
        try:
            for check in checks:
                check_request_shape(check)
            contexts = [cedar_value(dict(c.context), "context") for c in checks]
        except RequestError as e:
            return _malformed(e, n), None, None
        if snapshot is None:
            return [_UNAVAILABLE] * n, None, None
        try:
            resources = [resource_entity(c.resource, snapshot.entity_index) for c in checks]
        except RequestError as e:
            return _malformed(e, n), None, None
        token: VerifiedToken | None = None
        identity: Identity | None = None
        kills, registry = self._kills.view(), snapshot.registry
        try:
            check_kill(snapshot.killswitch, kills)  # `all` first: it stops even a bad token
            token = self._verifier.verify(creds)
            check_kill(snapshot.killswitch, kills, issuer=token.issuer)
            identity = resolve_identity(token, registry, self._config.delegation, self._config.identity)
            if subject is not None and subject != (AGENT_TYPE, identity.agent):
                who = f'{subject[0]}::"{subject[1]}"'
                raise PepError(f'{who} is not the token\'s principal Agent::"{identity.agent}"', Reason.INVALID_REQUEST)
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
            if user is not None and ("User", user["uid"]["id"]) in snapshot.entity_index:
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
            hops = self._grants.queries(identity, base, user) if self._config.delegation.require_grants else []
            # Everything the request names; the base context adds only the chain and the user.
            roots: set[Uid] = {("Agent", a) for a in identity.chain}
            if identity.on_behalf_of is not None:
                roots.add(("User", identity.on_behalf_of))
            for c, ctx in zip(checks, contexts, strict=True):
                roots.add((c.resource.type, c.resource.id))
                roots.update(c.resource.parents)
                roots.update(entity_refs(ctx))
            entities, bad = self._entities(snapshot, roots, user, resources)
            if hops:
                self._grants.check(snapshot, creds.token, hops, entities, bad)
        except PepError as e:
            return [Outcome(False, e.reason, errors=(e.detail,))] * n, identity, token
        rec = registry.get(identity.agent)
        groups = rec.groups if rec else ()
        if stop is None and entities is not None:
            # The common case: rate limits in order, then every admitted check in one Cedar call.
            limited: dict[int, Outcome] = {}
            for i, check in enumerate(checks):
                try:
                    self._limiter.take(snapshot.limits, identity.agent, groups, check.action)
                except PepError as e:
                    limited[i] = Outcome(False, e.reason, errors=(e.detail,))
            admitted = [i for i in range(n) if i not in limited]
            answers = dict(
                zip(admitted, self._evaluate(snapshot, [queries[i] for i in admitted], entities), strict=True)
            )
            return [limited[i] if i in limited else answers[i] for i in range(n)], identity, token
        outcomes: list[Outcome] = []
        for i, (check, query) in enumerate(zip(checks, queries, strict=True)):
            if stop is not None and outcomes and stop(self._answer(outcomes[-1])):
                break
            try:
                self._limiter.take(snapshot.limits, identity.agent, groups, check.action)
            except PepError as e:
                outcomes.append(Outcome(False, e.reason, errors=(e.detail,)))
                continue
            handle = entities
            if handle is None:  # this batch's request entities do not fit together: one at a time
                one = {("Agent", a) for a in identity.chain} | roots_of([query])
                handle, problems = self._entities(snapshot, one, user, [resources[i]])
                if handle is None:
                    outcomes.append(
                        Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {problems[0]}",))
                    )
                    continue
            outcomes.extend(self._evaluate(snapshot, [query], handle))
        return outcomes, identity, token

    def _entities(
        self,
        snapshot: Snapshot,
        roots: set[Uid],
        user: dict[str, Any] | None,
        resources: Sequence[dict[str, Any] | None],
    ) -> tuple[cedarpy.Entities | None, list[str]]:
        """One entity slice for the request, or (None, why) if the request's own entities do not fit."""
        try:
            delta = entity_delta([user, *resources])
            return snapshot.entities_for(roots, delta), []
        except (ValueError, RequestError) as e:
            return None, [str(e)]

    def _decide_subjects(
        self,
        subjects: Sequence[Subject],
        checks: Sequence[Check],
        snapshot: Snapshot | None,
        stop: Callable[[bool], bool] | None,
    ) -> list[Outcome]:
        n = len(checks)
        try:
            for subject, check in zip(subjects, checks, strict=True):
                check_request_shape(check)
                if not subject.type or not subject.id:
                    raise RequestError("subject.type and subject.id are required")
        except RequestError as e:
            return _malformed(e, n)
        if snapshot is None:
            return [_UNAVAILABLE] * n
        kills = self._kills.view()
        refused: dict[tuple[str, str], Outcome | None] = {}  # each subject's controls, once per call
        outcomes: list[Outcome] = []
        for subject, check in zip(subjects, checks, strict=True):
            if stop is not None and outcomes and stop(self._answer(outcomes[-1])):
                break
            key = (subject.type, subject.id)
            if key not in refused:
                refused[key] = self._subject_controls(snapshot, kills, subject)
            outcome = refused[key]
            if outcome is None and subject.type == AGENT_TYPE:
                try:
                    rec = snapshot.registry.get(subject.id)
                    self._limiter.take(snapshot.limits, subject.id, rec.groups if rec else (), check.action)
                except PepError as e:
                    outcome = Outcome(False, e.reason, errors=(e.detail,))
            outcomes.append(outcome or self._evaluate_subject(snapshot, subject, check))
        return outcomes

    def _subject_controls(self, snapshot: Snapshot, kills: Any, subject: Subject) -> Outcome | None:
        """The kill switch and, for an agent, the registry: an Outcome when they refuse."""
        registry = snapshot.registry
        try:
            if subject.type == AGENT_TYPE:
                chain = (subject.id,)
                check_kill(
                    snapshot.killswitch,
                    kills,
                    chain=chain,
                    groups_of=lambda a: rec.groups if (rec := registry.get(a)) else (),
                )
                check_chain(chain, registry, self._config.delegation)
                check_lifecycle(chain, registry, dt.datetime.fromtimestamp(self._clock(), dt.UTC).date())
            else:
                check_kill(snapshot.killswitch, kills, user=subject.id)
        except PepError as e:
            return Outcome(False, e.reason, errors=(e.detail,))
        return None

    def _evaluate_subject(self, snapshot: Snapshot, subject: Subject, check: Check) -> Outcome:
        query = Query(
            (subject.type, subject.id),
            ("Action", check.action),
            (check.resource.type, check.resource.id),
            {},
        )
        try:
            query = replace(query, context=cedar_value(dict(check.context), "context"))
            described = [
                ((subject.type, subject.id), subject.properties, ()),
                ((check.resource.type, check.resource.id), check.resource.attributes, check.resource.parents),
            ]
            entities = entities_with_properties(snapshot, query, described)
        except RequestError as e:
            return Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)
        except ValueError as e:
            return Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {e}",))
        return self._evaluate(snapshot, [query], entities)[0]

    def _evaluate(self, snapshot: Snapshot, queries: Sequence[Query], entities: cedarpy.Entities) -> list[Outcome]:
        if not queries:
            return []
        outcomes = [outcome_of(r, strict=self._strict) for r in evaluate(snapshot, queries, entities)]
        if snapshot.shadow_index is not None:
            shadows = evaluate(snapshot, queries, entities, shadow=True)
            outcomes = [
                replace(o, shadow=outcome_of(r, strict=self._strict)) for o, r in zip(outcomes, shadows, strict=True)
            ]
        return outcomes


def _subject_identity(subject: Subject) -> Identity:
    """How a trusted subject shows in the decision log: an agent as `agent`, anyone else as `on_behalf_of`."""
    if subject.type == AGENT_TYPE:
        return Identity(subject.id, None, (subject.id,))
    return Identity("", subject.id, ())


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
