"""`pep agents --usage`: per agent, what policy could allow it, what it used, which scopes it needed.

Read from decision-log entries and a policy directory (docs/audit.md, "Least privilege"):

- **allowed by policy**: `pep.policy.reach.allowed_pairs`, the (action, resource type) pairs some
  live permit could allow the agent (an upper bound; the delegation grants' `delegate` left out);
  nothing for an agent the registry holds as suspended, decommissioned or expired today;
- **used**: the (action, resource type) of its allowed decisions that reached the policies
  (`reason: allowed` with `inputs.evaluated`, or an entry from before entries had inputs), the
  agent being the current actor;
- **held**: the scopes policies saw in its entries (`token.scopes` less `scopes_dropped`);
- **needed**: a held scope is needed when one of the agent's allowed decisions is no longer
  allowed without it. Each allowed decision (a batch's together, as `pep replay` asks them) is
  replayed against the directory with its held scopes taken out one at a time, in name order, a
  scope staying out while the decisions stay allowed without it: what is left is a smallest set
  (no scope of it can go) that still allows them, and the needed scopes are the union of these
  sets. A last pass replays every decision with only its needed scopes and adds back all its held
  scopes wherever that changes one (only a policy that denies on a scope's presence can).
  So with the needed scopes alone every replayable allowed decision stays allowed. An allowed
  decision replay cannot rebuild (no inputs, truncated, redacted, part of a batch not in the
  files) has all its held scopes counted as needed; one the directory no longer allows with the
  scopes it had is counted in `changed` and judges nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pep.audit.entry import REDACTED
from pep.delegation.grants import DELEGATE_ACTION
from pep.pipeline.replay import Replayer, skip_reason, units
from pep.policy.reach import allowed_pairs, schema_facts
from pep.policy.snapshot import Snapshot

Pair = tuple[str, str]  # (action, resource type)
# Entry fields that differ between two asks of the same thing: left out of the replay cache's key.
_VOLATILE = ("decision_id", "request_id", "duration_us", "seq", "prev", "traceparent", "policy_version", "ts")


@dataclass
class Usage:
    agent: str
    registered: bool
    # The registry's status, `expired` past its `expires` today, or `unregistered`.
    status: str = "unregistered"
    # None: not worked out (no schema, or an agent the registry does not hold).
    allowed: list[Pair] | None = None
    used: Counter[Pair] = field(default_factory=Counter)
    decisions: int = 0
    held: Counter[str] = field(default_factory=Counter)
    needed: set[str] = field(default_factory=set)
    judged: int = 0  # allowed decisions replayed to judge the scopes
    unreplayable: int = 0  # allowed decisions replay could not rebuild: their held scopes count as needed
    changed: int = 0  # allowed decisions the directory no longer allows: they judge nothing
    entries: list[Mapping[str, Any]] = field(default_factory=list)  # the uses, when kept
    needs: list[frozenset[str]] = field(default_factory=list)  # what each kept use needs, with a directory

    @property
    def never_used(self) -> list[Pair]:
        return [p for p in self.allowed or () if p not in self.used]

    @property
    def not_needed(self) -> list[str]:
        return sorted(s for s in self.held if s not in self.needed)

    def as_json(self) -> dict[str, Any]:
        def pairs(items: Iterable[Pair]) -> list[dict[str, str]]:
            return [{"action": a, "resource_type": t} for a, t in items]

        return {
            "agent": self.agent,
            "registered": self.registered,
            "status": self.status,
            "decisions": self.decisions,
            "allowed": None if self.allowed is None else pairs(self.allowed),
            "used": [{"action": a, "resource_type": t, "decisions": n} for (a, t), n in sorted(self.used.items())],
            "never_used": None if self.allowed is None else pairs(self.never_used),
            "used_not_allowed": pairs(
                p for p in sorted(self.used) if self.allowed is not None and p not in self.allowed
            ),
            "scopes_held": sorted(self.held),
            "scopes_needed": sorted(s for s in self.needed if s in self.held),
            "scopes_not_needed": self.not_needed,
            "judged": self.judged,
            "unreplayable": self.unreplayable,
            "changed": self.changed,
        }


def held(entry: Mapping[str, Any]) -> set[str]:
    """The scopes policies saw in this entry: the token's less those the registry dropped."""
    token = entry.get("token")
    if not isinstance(token, dict) or not token.get("iss") or not isinstance(token.get("scopes"), list):
        return set()
    dropped = entry.get("scopes_dropped")
    out = {s for s in token["scopes"] if isinstance(s, str) and s != REDACTED}
    return out - set(dropped) if isinstance(dropped, list) else out


def is_use(entry: Mapping[str, Any]) -> bool:
    """An allowed decision the policies made (not a refusal, a filtered list or a request asking no policy)."""
    if entry.get("decision") != "allow" or entry.get("reason") != "allowed" or not all(pair_of(entry)):
        return False
    inputs = entry.get("inputs")
    return "inputs" not in entry or (isinstance(inputs, dict) and inputs.get("evaluated") is True)


def pair_of(entry: Mapping[str, Any]) -> Pair:
    """(action, resource type), ("", "") where the entry does not say (not a line pep wrote)."""
    action, resource = entry.get("action"), entry.get("resource")
    rtype = resource.get("type") if isinstance(resource, dict) else None
    rid = resource.get("id") if isinstance(resource, dict) else None
    if not isinstance(action, str) or not isinstance(rtype, str) or not isinstance(rid, str) or not rid:
        return "", ""
    return action, rtype


def _with_scopes(entry: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    return {**entry, "token": {**entry["token"], "scopes": sorted(scopes)}}


def _key(group: list[Mapping[str, Any]]) -> bytes:
    def stripped(e: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in e.items() if k not in _VOLATILE}
        out["day"] = str(e.get("ts", ""))[:10]  # lifecycle is judged by the day
        if isinstance(out.get("token"), dict):
            out["token"] = {k: v for k, v in out["token"].items() if k != "jti"}
        inputs = out.get("inputs")
        if isinstance(inputs, dict) and "batch" in inputs:
            out["inputs"] = {k: v for k, v in inputs.items() if k != "batch"}
        return out

    return orjson.dumps([stripped(e) for e in group], option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class _Judged:
    key: bytes
    asked: list[Mapping[str, Any]]
    keep: list[int]  # the allowed ones that replay still allows
    scopes: frozenset[str]  # the token's, as logged
    held: frozenset[str]


class _Judge:
    """Which held scopes each agent's allowed decisions need (see the module text)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._replayer = Replayer(snapshot)
        self._counts: dict[bytes, tuple[int, int, int]] = {}  # (judged, unreplayable, changed)
        self.needs: dict[bytes, frozenset[str]] = {}  # what one group of entries needs
        self._judged: dict[str, dict[bytes, _Judged]] = {}

    def _allowed(self, asked: list[Mapping[str, Any]], scopes: Iterable[str], keep: list[int]) -> bool:
        scopes = list(scopes)
        try:
            after = self._replayer.outcomes([_with_scopes(e, scopes) for e in asked])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return False
        return all(after[i].allowed for i in keep)

    def add(self, group: list[Mapping[str, Any]], complete: bool, usage: Usage) -> bytes | None:
        """Judge one group of entries (one, or a batch's) into `usage`; the key of what it needs."""
        mine = frozenset(held(group[0]))
        if any(is_use(e) and "inputs" not in e for e in group):  # logged before entries had inputs
            usage.unreplayable += sum(1 for e in group if is_use(e))
            usage.needed |= mine
            key = b"old:" + _key(group)
            self.needs[key] = mine
            return key
        asked = [e for e in group if isinstance(e.get("inputs"), dict) and e["inputs"].get("evaluated") is True]
        uses = [i for i, e in enumerate(asked) if is_use(e)]
        if not uses:
            return None
        key = _key(group) + (b"1" if complete else b"0")
        if key not in self._counts:
            self._counts[key] = self._judge(key, asked, uses, complete, mine, usage.agent)
        judged, unreplayable, changed = self._counts[key]
        usage.judged += judged
        usage.unreplayable += unreplayable
        usage.changed += changed
        usage.needed |= self.needs[key]
        return key

    def _judge(
        self,
        key: bytes,
        asked: list[Mapping[str, Any]],
        uses: list[int],
        complete: bool,
        mine: frozenset[str],
        agent: str,
    ) -> tuple[int, int, int]:
        """(judged, unreplayable, changed) for one group of entries; what it needs in `needs`."""
        self.needs[key] = mine  # unless replay shows less is enough
        token = asked[0].get("token")
        if not isinstance(token, dict) or not isinstance(token.get("scopes"), list):
            return 0, len(uses), 0  # not a token entry pep wrote (a trusted subject has no scopes to judge)
        if not complete or any(skip_reason(e) is not None for e in asked):
            return 0, len(uses), 0
        try:
            before = self._replayer.outcomes(asked)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return 0, len(uses), 0
        keep = [i for i in uses if before[i].allowed]
        if not keep:
            self.needs[key] = frozenset()
            return 0, 0, len(uses)
        scopes = frozenset(s for s in token["scopes"] if isinstance(s, str))
        kept = set(scopes)
        for scope in sorted(mine):
            if self._allowed(asked, kept - {scope}, keep):
                kept.discard(scope)
        self._judged.setdefault(agent, {})[key] = _Judged(key, asked, keep, scopes, mine)
        self.needs[key] = mine & kept
        return len(keep), 0, len(uses) - len(keep)

    def settle(self, usage: Usage) -> None:
        """The last pass: each group replayed with only the needed scopes (and those it held that are
        not judged at all); where one changes, all it held is needed, by the agent and by the group."""
        judged = list(self._judged.get(usage.agent, {}).values())
        grown = True
        while grown:
            grown = False
            for j in judged:
                if j.held <= self.needs[j.key] and j.held <= usage.needed:
                    continue
                only = {s for s in j.scopes if s in usage.needed or s not in j.held}
                if not self._allowed(j.asked, only, j.keep):
                    usage.needed |= j.held
                    self.needs[j.key] = j.held
                    grown = True


def usage(
    snapshot: Snapshot | None, entries: Iterable[Mapping[str, Any]], *, only: str | None = None, keep: bool = False
) -> list[Usage]:
    """Each agent's usage (the registry's, and any other the entries name), sorted by id; with `only`,
    that agent's alone; with `keep`, each `Usage` keeps the entries of its uses. Without a snapshot
    only what the log says (uses, held scopes): nothing allowed or needed is worked out."""
    registry = snapshot.registry if snapshot is not None else None
    agents = [only] if only is not None else list(registry.agents if registry is not None else ())
    found: dict[str, Usage] = {a: Usage(a, registry is not None and a in registry) for a in agents}
    judge = _Judge(snapshot) if snapshot is not None else None
    keys: dict[int, bytes] = {}  # id of a kept entry -> the key of what its group needs
    for group, complete in units(entries):
        agent = group[0].get("agent")
        if not isinstance(agent, str) or not agent or (only is not None and agent != only):
            continue
        u = found.get(agent)
        if u is None:
            u = found[agent] = Usage(agent, registry is not None and agent in registry)
        key = judge.add(group, complete, u) if judge is not None else None
        for e in group:
            u.decisions += 1
            u.held.update(held(e))
            if is_use(e):
                u.used[pair_of(e)] += 1
                if keep:
                    u.entries.append(e)
                    if key is not None:
                        keys[id(e)] = key
    if snapshot is None or judge is None:
        return sorted(found.values(), key=lambda u: u.agent)
    facts = schema_facts(snapshot.schema) if snapshot.schema is not None else None
    today = dt.datetime.now(dt.UTC).date()
    for u in found.values():
        judge.settle(u)
        u.needs = [judge.needs.get(keys.get(id(e), b""), frozenset()) for e in u.entries]
        record = snapshot.registry.get(u.agent)
        if record is None:
            continue
        u.status = "expired" if record.expired(today) else record.status
        if u.status != "active":
            u.allowed = []
        elif facts is not None:
            u.allowed = allowed_pairs(snapshot, u.agent, facts, skip=(DELEGATE_ACTION,))
    return sorted(found.values(), key=lambda u: u.agent)
