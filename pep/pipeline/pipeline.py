"""The decision pipeline: the stage order and nothing else. No transport here.

Every entry point (gRPC, ext_authz, AuthZEN, `pep check`) hands in a `Request` and gets one
Decision per check, each recorded once. One request reads the policy snapshot once, so every
check of it sees one policy version. The stages, each run once per request and in order:

0. shape: malformed requests are answered INVALID_ARGUMENT before anything else;
1. principal (`principal.py`): the token verified and its delegation chain resolved, or a
   trusted subject taken as given;
2. admit (`pep.controls`): kill switch, lifecycle, then each check's rate limits;
3. the Cedar request (`cedar_request.py`): queries and entities of the admitted checks;
4. evaluate: the delegation grants (`pep.delegation.grants`), then the admitted checks
   (`pep.policy.evaluate`); a request that asks no policy stops after the grants, and a
   listing previews each of its items (Cedar's partial evaluation) instead;
5. record (`record.py`): the Decision, the log's acknowledgement, the count.

`authorize` runs stages 2 to 5 once over all checks of a request (one Cedar call in the
common case). `decide` runs them check by check, as the caller asks for each decision, so a
caller that stops early (AuthZEN's `evaluations_semantic`) leaves the rest unadmitted,
unevaluated and unlogged. A trusted-subject request is one run per subject it names.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from pep.config import DelegationConfig, IdentityConfig
from pep.controls.admit import Controls
from pep.decision import Caller, Decision, Fault, Inputs, Outcome
from pep.delegation.grants import Grants
from pep.delegation.identity import Identity
from pep.errors import PepError, RequestError
from pep.pipeline import cedar_request, principal
from pep.pipeline.memo import DecisionMemo
from pep.pipeline.record import Recorder
from pep.pipeline.request import Listing, Request, Subject
from pep.policy.evaluate import could_allow, outcomes
from pep.policy.request import Check, cedar_value, check_request_shape, resource_entity, value_size
from pep.policy.snapshot import Snapshot
from pep.reasons import Reason
from pep.tokens.verifier import TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

_UNAVAILABLE = Outcome(
    False, Reason.POLICY_UNAVAILABLE, errors=("no valid policy set is loaded",), fault=Fault.UNAVAILABLE
)
_INTERNAL = Outcome(False, Reason.INTERNAL_ERROR, fault=Fault.INTERNAL)
# A request that asks no policy (Request.policies false): the token, admission and grants passed.
_TOKEN_ONLY = Outcome(True, Reason.ALLOWED)


class SnapshotSource(Protocol):
    def current(self) -> Snapshot | None: ...


# What the record stage needs of one check: its outcome, who asked, and what they put in Cedar's request.
_Step = tuple[Outcome, Identity | None, VerifiedToken | None, Caller | None]


def _refused(e: PepError) -> Outcome:
    return Outcome(False, e.reason, errors=(e.detail,), dpop_nonce=getattr(e, "dpop_nonce", ""))


def _malformed(e: RequestError) -> Outcome:
    return Outcome(False, e.reason, errors=(e.detail,), fault=Fault.INVALID_ARGUMENT)


def _inputs(check: Check, outcome: Outcome, caller: Caller | None, batch: tuple[str, int] | None, limit: int) -> Inputs:
    """The check's own Cedar inputs for the log, by reference (formatted on the log's writer thread).

    A context or attributes larger than the entry may keep (`limit`) are not held at all: a queued
    entry must not keep a large request alive (the queue holds up to `queue_size` of them). The
    size is counted up to the limit only, so a large one costs no more than a small one."""
    res = check.resource
    try:
        value_size(check.context, "context", limit)
        if res.attributes:
            value_size(res.attributes, "resource.attributes", limit)
    except RequestError:
        return Inputs({}, None, res.parents, res.implied, caller, outcome.evaluated, *(batch or ("", 0)), cut=True)
    return Inputs(
        check.context, res.attributes, res.parents, res.implied, caller, outcome.evaluated, *(batch or ("", 0))
    )


# The checks of a token run share one Cedar request (one entity slice): their entries carry one
# batch id, so `pep replay` asks them together again. Unique per process, one counter step per run.
_BATCH_PREFIX = os.urandom(6).hex()
_batch_numbers = itertools.count(1)


def _batch(run: list[_Step]) -> tuple[str, int] | None:
    caller = run[0][3]
    if len(run) < 2 or caller is None or caller.subject is not None:
        return None  # one check, a request refused whole, or trusted subjects (each check on its own)
    if sum(1 for step in run if step[0].evaluated) < 2:
        return None  # at most one check reached Cedar: it was asked on its own
    return f"{_BATCH_PREFIX}-{next(_batch_numbers)}", len(run)


def check_grants(
    grants: Grants, snapshot: Snapshot, identity: Identity, key: str, built: cedar_request.TokenRequest
) -> None:
    """4. the delegation grants: every hop of the chain must be permitted (raises PepError); kept per `key`."""
    hops = grants.queries(identity, built.base, built.user)
    if hops:
        grants.check(snapshot, key, hops, built.entities, [built.problem])


def evaluate_built(
    snapshot: Snapshot, built: cedar_request.TokenRequest, *, strict: bool, schema: bool
) -> list[Outcome]:
    """4. evaluate a token request's checks: in one Cedar call, or each with its own entities when the
    request's entities do not fit together (`pep replay` asks the same way)."""
    if built.entities is not None:
        return outcomes(snapshot, built.queries, built.entities, strict=strict, schema=schema)
    return [alone(snapshot, built, k, strict=strict, schema=schema) for k in range(len(built.queries))]


def alone(snapshot: Snapshot, built: cedar_request.TokenRequest, k: int, *, strict: bool, schema: bool) -> Outcome:
    """Check `k` of a token request evaluated with its own entities."""
    entities, problem = built.entities_of(k)
    if entities is None:
        return Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {problem}",))
    return outcomes(snapshot, [built.queries[k]], entities, strict=strict, schema=schema)[0]


def subject_outcome(snapshot: Snapshot, who: principal.Principal, check: Check, *, strict: bool) -> Outcome:
    """A trusted subject's admitted check: 3. the Cedar request, 4. evaluate."""
    try:
        context = cedar_value(dict(check.context), "context")
        query, entities = cedar_request.for_subject(snapshot, who, check, context)
    except RequestError as e:
        return _malformed(e)
    except ValueError as e:
        return Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {e}",))
    return outcomes(snapshot, [query], entities, strict=strict)[0]


class Pipeline:
    def __init__(
        self,
        store: SnapshotSource,
        verifier: TokenVerifier,
        controls: Controls,
        recorder: Recorder,
        *,
        delegation: DelegationConfig,
        identity: IdentityConfig,
        strict: bool = True,
        memo: DecisionMemo | None = None,
        inputs_bytes: int = 16 * 1024,
    ) -> None:
        self._store = store
        self._inputs_bytes = inputs_bytes  # decision_log.max_inputs_bytes
        self._verifier = verifier
        self._controls = controls
        self._recorder = recorder
        self._delegation = delegation
        self._identity = identity
        self._grants = Grants(strict=strict)
        self._strict = strict
        self._memo = memo

    def authorize(self, request: Request) -> list[Decision]:
        """Every check answered and recorded, in order. Never raises: faults are decisions with `fault` set."""
        return list(self._run(request, lazy=False))

    def decide(self, request: Request) -> Iterator[Decision]:
        """The decisions in check order, each admitted, evaluated and recorded only when asked for."""
        return self._run(request, lazy=True)

    def _run(self, request: Request, *, lazy: bool) -> Iterator[Decision]:
        started = time.perf_counter()
        snapshot = self._store.current()
        version = snapshot.version if snapshot else ""
        checks, done = request.checks, 0
        try:
            for run in self._runs(request, snapshot, lazy):
                per_check = int((time.perf_counter() - started) * 1e6) // max(1, len(run))
                batch = _batch(run)
                for outcome, ident, token, caller in run:
                    # 5. record
                    check = checks[done]
                    yield self._recorder.record(
                        check,
                        outcome,
                        ident,
                        token,
                        version,
                        per_check,
                        request.traceparent,
                        inputs=_inputs(check, outcome, caller, batch, self._inputs_bytes),
                    )
                    done += 1
                started = time.perf_counter()
        except Exception:  # a bug must deny, never escape as an allow
            log.exception("internal error while deciding")
            for check in checks[done:]:
                yield self._recorder.record(check, _INTERNAL, None, None, version, 0, request.traceparent)

    def _runs(self, request: Request, snapshot: Snapshot | None, lazy: bool) -> Iterator[list[_Step]]:
        """Outcomes in check order, a run at a time: the whole request, or one check when lazy."""
        checks, n = request.checks, len(request.checks)
        subjects = request.subjects
        if subjects is not None and len(subjects) != n:
            raise ValueError("one subject per check")
        # 0. shape: a request with one credential is malformed as a whole
        try:
            if request.refusal is not None:
                raise request.refusal
            for i, check in enumerate(checks):
                check_request_shape(check)
                if subjects is not None and (not subjects[i].type or not subjects[i].id):
                    raise RequestError("subject.type and subject.id are required")
            if subjects is None:
                contexts: list[Any] = [cedar_value(dict(c.context), "context") for c in checks]
            if snapshot is None:
                yield [(_UNAVAILABLE, None, None, None)] * n
                return
            resources = [resource_entity(c.resource, snapshot.entity_index) for c in checks] if subjects is None else []
        except RequestError as e:
            yield [(_malformed(e), None, None, None)] * n
            return
        if subjects is not None:
            yield from self._subject_runs(snapshot, request, subjects, lazy)
            return
        # 1. principal
        assert request.credentials is not None
        who = principal.from_token(
            self._verifier,
            request.credentials,
            snapshot.registry,
            self._delegation,
            self._identity,
            request.expect,
            request.owner,
        )
        caller = self._caller(who, request)
        runs = [[i] for i in range(n)] if lazy else [list(range(n))]
        for run in runs:
            outcomes_ = self._token_run(snapshot, who, request, run, contexts, resources)
            yield [(o, who.identity, who.token, caller) for o in outcomes_]

    def _caller(self, who: principal.Principal, request: Request) -> Caller:
        return principal.caller(
            who,
            schema=request.validate_context,
            strict=self._strict,
            grants=self._delegation.require_grants,
            listing=request.listing is not None,
            policies=request.policies,
            require_registry_scopes=self._identity.require_registry_scopes,
        )

    def _token_run(
        self,
        snapshot: Snapshot,
        who: principal.Principal,
        request: Request,
        run: list[int],
        contexts: Sequence[Any],
        resources: Sequence[Any],
    ) -> list[Outcome]:
        checks = [request.checks[i] for i in run]
        # 2. admit
        refusals = self._controls.admit(snapshot, who.who, [c.action for c in checks])
        out: list[Outcome | None] = [_refused(r) if r is not None else None for r in refusals]
        admitted = [j for j, r in enumerate(refusals) if r is None]
        if not admitted:
            return [o for o in out if o is not None]
        creds = request.credentials
        memo_keys = None
        # A check's outcome may depend on an entity another check of the run describes (one shared
        # slice): such runs are not remembered, so the memo only ever answers as evaluation would.
        alone_or_plain = len(admitted) == 1 or all(resources[run[j]] is None for j in admitted)
        if (
            self._memo is not None
            and request.policies
            and request.listing is None
            and creds is not None
            and alone_or_plain
        ):
            memo_keys, remembered = self._memo.lookup(
                snapshot,
                creds.token,
                [checks[j] for j in admitted],
                [contexts[run[j]] for j in admitted],
                [resources[run[j]] for j in admitted],
                request.validate_context,
            )
            # Every check seen before, and the chain's grants known to hold: no Cedar request to build.
            grants_hold = not self._delegation.require_grants or self._grants.known(snapshot, creds.token) == ""
            if grants_hold and all(r is not None for r in remembered):
                for j, outcome in zip(admitted, remembered, strict=True):
                    out[j] = outcome
                return [o for o in out if o is not None]
        # 3. the Cedar request
        try:
            built = cedar_request.for_token(
                snapshot,
                who,
                [checks[j] for j in admitted],
                [contexts[run[j]] for j in admitted],
                [resources[run[j]] for j in admitted],
            )
            # 4. evaluate: the delegation grants first
            ident = who.identity
            if self._delegation.require_grants and ident is not None and creds is not None:
                check_grants(self._grants, snapshot, ident, creds.token, built)
            if built.entities is None and (request.listing is not None or not request.policies):
                clash = Outcome(False, Reason.INVALID_REQUEST, errors=(f"request entities: {built.problem}",))
                answers = [clash] * len(admitted)
            elif request.listing is not None:
                answers = [self._listed(snapshot, who, request.listing)] * len(admitted)
            elif not request.policies:
                answers = [_TOKEN_ONLY] * len(admitted)
            else:  # the common case: every admitted check in one Cedar call
                answers = evaluate_built(snapshot, built, strict=self._strict, schema=request.validate_context)
                if memo_keys is not None and self._memo is not None and built.entities is not None:
                    self._memo.store(snapshot, memo_keys, answers)
        except PepError as e:
            return [o if o is not None else _refused(e) for o in out]
        for j, answer in zip(admitted, answers, strict=True):
            out[j] = answer
        return [o for o in out if o is not None]

    def _listed(self, snapshot: Snapshot, who: principal.Principal, listing: Listing) -> Outcome:
        """The list itself is allowed; the items no value of `unknown` could allow are hidden."""
        ident = who.identity
        assert ident is not None
        fetched = listing.fetch(
            (ident.agent, ident.on_behalf_of or "")
        )  # only now: a refused caller never makes the upstream list anything
        if not fetched:
            return _TOKEN_ONLY
        hidden, names, items = [], [], []
        for name, item in fetched:
            try:
                check_request_shape(item)  # an item pep could never decide (a name too long) is hidden
            except RequestError:
                hidden.append(name)
                continue
            names.append(name)
            items.append(item)
        if not items:
            return Outcome(True, Reason.ALLOWED, hidden=tuple(hidden))
        try:
            contexts = [cedar_value(dict(c.context), "context") for c in items]
            resources = [resource_entity(c.resource, snapshot.entity_index) for c in items]
            built = cedar_request.for_token(snapshot, who, items, contexts, resources)
        except RequestError as e:
            return Outcome(False, e.reason, errors=(f"listed item: {e.detail}",))
        for k, (query, name) in enumerate(zip(built.queries, names, strict=True)):
            entities, _ = built.entities_of(k)
            if entities is None or not could_allow(snapshot, query, entities, listing.unknown):
                hidden.append(name)
        return Outcome(True, Reason.ALLOWED, hidden=tuple(hidden))

    def _subject_runs(
        self, snapshot: Snapshot, request: Request, subjects: Sequence[Subject], lazy: bool
    ) -> Iterator[list[_Step]]:
        """Trusted subjects: one run per subject named (per check when lazy), answered in check order."""
        checks, n = request.checks, len(request.checks)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, subject in enumerate(subjects):
            groups.setdefault((subject.type, subject.id), []).append(i)
        resolved: dict[tuple[str, str], tuple[principal.Principal, Caller]] = {}
        results: dict[int, _Step] = {}
        runs = [[i] for i in range(n)] if lazy else list(groups.values())
        for run in runs:
            key = (subjects[run[0]].type, subjects[run[0]].id)
            if key not in resolved:  # 1. principal, once per subject
                resolved_who = principal.from_subject(subjects[run[0]], snapshot.registry, self._delegation)
                resolved[key] = (resolved_who, self._caller(resolved_who, request))
            who, caller = resolved[key]
            # 2. admit
            refusals = self._controls.admit(snapshot, who.who, [checks[i].action for i in run])
            for i, refused in zip(run, refusals, strict=True):
                if refused is not None:
                    outcome = _refused(refused)
                else:
                    outcome = subject_outcome(snapshot, who, checks[i], strict=self._strict)
                results[i] = (outcome, who.identity, None, caller)
            if lazy:
                yield [results.pop(run[0])]
        if not lazy:
            yield [results[i] for i in range(n)]
