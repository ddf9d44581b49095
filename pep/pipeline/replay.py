"""`pep replay`: logged decisions asked again of a policy directory, with the pipeline's own stages.

An entry that reached the policies (`inputs.evaluated`) is rebuilt as the live server built it:
principal, chain, user, action, resource, token claims and binding from the entry; the caller's
context, the resource's attributes and parents, the user's groups and claims, the token's times
and a trusted subject's properties from its `inputs`; the agent registry, the entities, the
schema, `killswitch.yaml` and the policies from the directory (so the scopes policies see are the
token's, as logged, intersected again with the directory's registry). It then goes through what the
pipeline does once the token is verified, with the same functions: admission (the kill switch
file, the chain's agents registered and active at the entry's time; neither the runtime kill
switch nor rate limits, which belong to the moment), the delegation grants when they were
required, the Cedar request (`cedar_request`) and evaluation (`pipeline.evaluate_built`,
`pipeline.subject_outcome`). Nothing is read from the clock: the token's times come from the entry.

Skipped, counted by why: entries that never reached the policies (by their logged reason, or
`listing` / `no_policy_asked` for an allow that previewed a list or asked no policy), and those
that cannot be rebuilt faithfully (`no_inputs`: logged before entries had inputs;
`inputs_truncated`, `inputs_redacted`, `claims_redacted`; `batch_incomplete`: a check asked in
one Cedar request with others, some of which cannot be replayed or are not in the files given;
`unreadable_entry`). The checks of a batch are replayed together, as they were asked: one entity
slice for all of them, so a resource one check describes is seen by the others, as it was live.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pep.audit.chain import read_lines
from pep.audit.entry import REDACTED
from pep.config import DelegationConfig
from pep.controls.admit import Controls, Who
from pep.decision import Outcome
from pep.delegation.grants import Grants
from pep.delegation.identity import Identity, minimized_scopes
from pep.errors import PepError
from pep.pipeline import cedar_request
from pep.pipeline.pipeline import check_grants, evaluate_built, subject_outcome
from pep.pipeline.principal import Principal, from_subject
from pep.pipeline.request import Subject
from pep.policy.request import Check, ResourceRef, cedar_value, resource_entity
from pep.policy.snapshot import Snapshot
from pep.reasons import Reason
from pep.tokens.verifier import VerifiedToken
from pep.uids import AGENT, format_uid

# The reasons a decision that reached the policies can have.
EVALUATED = frozenset(
    r.value
    for r in (
        Reason.ALLOWED,
        Reason.POLICY_FORBID,
        Reason.POLICY_NO_PERMIT,
        Reason.EVALUATION_ERROR,
        Reason.INVALID_REQUEST,  # when Cedar found the request does not fit the schema
    )
)


@dataclass(frozen=True)
class Verdict:
    """A decision as compared: the determining policies are a set (sorted), whatever order Cedar gave."""

    decision: str
    reason: str
    policies: tuple[str, ...] = ()

    @classmethod
    def of(cls, decision: str, reason: str, policies: Iterable[str]) -> Verdict:
        return cls(decision, reason, tuple(sorted(policies)))

    def as_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "policies": list(self.policies)}

    def text(self) -> str:
        policies = f" [{', '.join(self.policies)}]" if self.policies else ""
        return f"{self.decision} ({self.reason}){policies}"


@dataclass(frozen=True)
class Change:
    """One replayed decision that came out differently (decision, reason or determining policies)."""

    decision_id: str
    agent: str
    action: str
    resource: dict[str, str]
    before: Verdict
    after: Verdict
    ts: str = ""  # the entry's, for the text report

    @property
    def resource_text(self) -> str:
        return format_uid((self.resource["type"], self.resource["id"]))

    @property
    def decided(self) -> bool:
        """The decision or the reason changed, not only the determining policies."""
        return (self.before.decision, self.before.reason) != (self.after.decision, self.after.reason)

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "agent": self.agent,
            "action": self.action,
            "resource": self.resource,
            "before": self.before.as_json(),
            "after": self.after.as_json(),
        }


@dataclass
class Report:
    total: int = 0
    replayed: int = 0
    changes: list[Change] = field(default_factory=list)
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())

    @property
    def changed(self) -> int:
        return sum(1 for c in self.changes if c.decided)

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "changed": self.changed,
            "changes": [c.as_json() for c in self.changes],
            "skipped_reasons": dict(sorted(self.skipped_reasons.items())),
        }


def read_entries(paths: Iterable[str], warn: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The decision entries of `paths` in order (gzipped ones too); admin events left out, and each
    line that is not a JSON decision entry named to `warn` as file:line and left out."""
    for path in paths:
        for number, line in enumerate(read_lines(path), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                warn(f"{path}:{number}: not a JSON entry, skipped")
                continue
            if isinstance(entry, dict) and "event" in entry:
                continue  # an admin event: not a decision
            if not isinstance(entry, dict) or not isinstance(entry.get("decision_id"), str):
                warn(f"{path}:{number}: not a decision entry, skipped")
                continue
            yield entry


def skip_reason(entry: Mapping[str, Any]) -> str | None:
    """Why `entry` is not replayed, or None when it is."""
    reason = entry.get("reason")
    if not isinstance(reason, str) or reason not in EVALUATED:
        return reason if isinstance(reason, str) and reason else "unreadable_entry"
    inputs = entry.get("inputs")
    if inputs is None:
        return "inputs_truncated" if entry.get("inputs_truncated") else "no_inputs"
    if not isinstance(inputs, dict):
        return "unreadable_entry"
    if not inputs.get("evaluated"):
        if inputs.get("listing"):
            return "listing"
        if inputs.get("policies") is False and reason == Reason.ALLOWED.value:
            return "no_policy_asked"
        return reason  # refused before the policies (an invalid_request that is not Cedar's, ...)
    if entry.get("inputs_truncated"):
        return "inputs_truncated"
    if entry.get("inputs_redacted"):
        return "inputs_redacted"
    if _claims_redacted(entry):
        return "claims_redacted"
    return None


def _claims_redacted(entry: Mapping[str, Any]) -> bool:
    token = entry.get("token")
    if not isinstance(token, dict):
        token = {}  # not a token entry pep wrote: replay finds that out
    shown = [entry.get("agent"), entry.get("on_behalf_of"), token.get("iss"), token.get("client_id")]
    for listed in (entry.get("delegation_chain"), token.get("scopes"), entry.get("scopes_dropped")):
        shown += listed if isinstance(listed, list) else []
    return REDACTED in shown


def verdict_of(outcome: Outcome) -> Verdict:
    return Verdict.of("allow" if outcome.allowed else "deny", outcome.reason.value, outcome.policies)


def _refused(e: PepError) -> Outcome:
    return Outcome(False, e.reason, errors=(e.detail,))


class Replayer:
    """Replays entries against one snapshot: each on its own, or a batch's together as it was asked."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._now = 0.0
        # Only what the directory says: no runtime kill switch; no rate limits (Who.agent stays "").
        self._controls = Controls(clock=lambda: self._now)
        # One verdict per entry: the live server kept them per token, each entry is its own here.
        self._grants = {strict: Grants(strict=strict, cache_size=1) for strict in (True, False)}

    def add(self, group: list[Mapping[str, Any]], report: Report, *, complete: bool = True) -> None:
        """Count one entry, or the entries of one batch, into `report`: skipped by why, or replayed
        and compared. A batch is replayed only whole (`complete`, every evaluated entry replayable)."""
        report.total += len(group)
        reasons = [skip_reason(e) for e in group]
        asked = [i for i, e in enumerate(group) if _evaluated(e)]
        whole = complete and all(reasons[i] is None for i in asked)
        afters: list[Outcome] | None = None
        if asked and whole:
            try:
                afters = self.outcomes([group[i] for i in asked])
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                afters = None
        replayed = dict(zip(asked, afters, strict=True)) if afters is not None else {}
        for i, entry in enumerate(group):
            after = replayed.get(i)
            if after is None:
                why = reasons[i] or ("batch_incomplete" if i in asked and not whole else "unreadable_entry")
                report.skipped_reasons[why] = report.skipped_reasons.get(why, 0) + 1
                continue
            report.replayed += 1
            before = Verdict.of(str(entry["decision"]), str(entry["reason"]), entry.get("policies") or ())
            now = verdict_of(after)
            if now != before:
                resource = entry.get("resource") or {}
                report.changes.append(
                    Change(
                        str(entry["decision_id"]),
                        str(entry.get("agent", "")),
                        str(entry.get("action", "")),
                        {"type": str(resource.get("type", "")), "id": str(resource.get("id", ""))},
                        before,
                        now,
                        str(entry.get("ts", "")),
                    )
                )

    def outcomes(self, entries: list[Mapping[str, Any]]) -> list[Outcome]:
        """What the directory decides for replayable entries: one, or the evaluated checks of one batch
        (one principal, one Cedar request, as the live server asked them)."""
        first: Mapping[str, Any] = entries[0]
        inputs: Mapping[str, Any] = first["inputs"]
        self._now = _timestamp(first["ts"])
        checks = [_check(e) for e in entries]
        strict = bool(inputs.get("strict", True))
        if "subject" in inputs:
            if len(entries) != 1:
                raise ValueError("trusted subjects are never batched")
            return [self._subject(inputs["subject"], checks[0], strict)]
        return self._token(first, inputs, checks, strict)

    def _subject(self, spec: Mapping[str, Any], check: Check, strict: bool) -> Outcome:
        subject = Subject(spec["type"], spec["id"], spec.get("properties") or None)
        who = from_subject(subject, self.snapshot.registry, DelegationConfig())
        refused = self._admit(who.who, [check])
        if refused is not None:
            return refused
        return subject_outcome(self.snapshot, who, check, strict=strict)

    def _token(
        self, entry: Mapping[str, Any], inputs: Mapping[str, Any], checks: list[Check], strict: bool
    ) -> list[Outcome]:
        snapshot = self.snapshot
        user = inputs.get("user") or {}
        times = inputs["token"]
        claimed = entry["token"]
        # The token's scopes as logged, minimized again with this directory's registry.
        scopes, dropped = minimized_scopes(
            frozenset(claimed["scopes"]),
            snapshot.registry.get(entry["agent"]),
            bool(inputs.get("require_registry_scopes", False)),
        )
        identity = Identity(
            entry["agent"],
            entry["on_behalf_of"] or None,
            tuple(entry["delegation_chain"]),
            tuple(user.get("groups") or ()),
            user.get("attributes") or {},
            scopes,
            dropped,
        )
        token = VerifiedToken(
            issuer=claimed["iss"],
            claims={},
            header={},
            binding=entry["binding"],
            scopes=frozenset(claimed["scopes"]),
            client_id=claimed["client_id"],
            jti=claimed["jti"],
            issued_at=int(times["issued_at"]),
            expires_at=int(times["expires_at"]),
        )
        who = Who(token.issuer, identity.on_behalf_of, identity.chain)
        refused = self._admit(who, checks)
        if refused is not None:
            return [refused] * len(checks)
        principal = Principal((AGENT, identity.agent), identity, who, token)
        try:
            contexts = [cedar_value(dict(c.context), "context") for c in checks]
            described = [resource_entity(c.resource, snapshot.entity_index) for c in checks]
            built = cedar_request.for_token(snapshot, principal, checks, contexts, described)
            if inputs.get("grants", True):
                check_grants(self._grants[strict], snapshot, identity, str(entry["decision_id"]), built)
        except PepError as e:  # a RequestError too: what was well formed may not be with this directory
            return [_refused(e)] * len(checks)
        return evaluate_built(snapshot, built, strict=strict, schema=bool(inputs.get("schema", True)))

    def _admit(self, who: Who, checks: list[Check]) -> Outcome | None:
        # No rate limits: they belong to the moment (an agent-less Who spends no bucket).
        refusals = self._controls.admit(self.snapshot, replace(who, agent=""), [c.action for c in checks])
        return _refused(refusals[0]) if refusals[0] is not None else None


def _evaluated(entry: Mapping[str, Any]) -> bool:
    inputs = entry.get("inputs")
    return isinstance(inputs, dict) and inputs.get("evaluated") is True


def _check(entry: Mapping[str, Any]) -> Check:
    inputs = entry["inputs"]
    res = inputs.get("resource") or {}
    resource = ResourceRef(
        entry["resource"]["type"],
        entry["resource"]["id"],
        res.get("attributes"),
        tuple((p["type"], p["id"]) for p in res.get("parents") or ()),
        bool(res.get("implied", False)),
    )
    return Check(entry["action"], resource, inputs.get("context") or {}, entry.get("request_id", ""))


def _batch_of(entry: Mapping[str, Any]) -> tuple[str, int] | None:
    inputs = entry.get("inputs")
    batch = inputs.get("batch") if isinstance(inputs, dict) else None
    if not isinstance(batch, dict):
        return None
    id_, size = batch.get("id"), batch.get("size")
    if not isinstance(id_, str) or not isinstance(size, int) or size < 1:
        return None
    return id_, size


def _timestamp(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError("ts is not a string")
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def units(entries: Iterable[Mapping[str, Any]]) -> Iterator[tuple[list[Mapping[str, Any]], bool]]:
    """The entries as they were asked: each on its own, or a batch's together once all are read;
    with whether the batch is complete (False: some of its entries are not in these files)."""
    pending: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        batch = _batch_of(entry)
        if batch is None:
            yield [entry], True
            continue
        group = pending.setdefault(batch[0], [])
        group.append(entry)
        if len(group) >= batch[1]:
            yield pending.pop(batch[0]), True
    for group in pending.values():
        yield group, False


def replay(snapshot: Snapshot, entries: Iterable[Mapping[str, Any]]) -> Report:
    """Every entry replayed (or skipped) against `snapshot`; a batch's entries together, once all are read."""
    replayer, report = Replayer(snapshot), Report()
    for group, complete in units(entries):
        replayer.add(group, report, complete=complete)
    return report
