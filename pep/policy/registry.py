"""The agent registry (`agents.yaml`): who the agents are, who owns them, their state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pep.errors import SourceProblem
from pep.policy.source import LineDict, key_col, key_line, line_of
from pep.uids import AGENT, AGENT_GROUP, spiffe_trust_domain

STATUSES = ("active", "suspended", "decommissioned")
# The status `pep agents` shows for an entry whose `status` is none of STATUSES (a registry
# with one never loads; were it served, anything but `active` denies).
INVALID_STATUS = "invalid"
_ENTRY_KEYS = {"id", "owner", "status", "expires", "groups", "attributes", "scopes", "spiffe_id"}
_I64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class AgentRecord:
    id: str
    owner: str
    status: str = "active"
    expires: dt.date | None = None
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, Any] | None = None
    # Where the entry starts in agents.yaml, for error messages.
    line: int = 1
    # The scopes the agent may ever use (policies see the token's scopes intersected with
    # these); None when the entry lists none.
    scopes: frozenset[str] | None = None
    # The workload's SPIFFE ID: a JWT-SVID whose `sub` is this is this agent (profile spiffe).
    spiffe_id: str | None = None

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires


@dataclass(frozen=True)
class Registry:
    agents: Mapping[str, AgentRecord]
    # SPIFFE ID -> agent id (each `spiffe_id` names one agent).
    spiffe_ids: Mapping[str, str] = field(default_factory=dict)

    def agent_for_spiffe_id(self, spiffe_id: str) -> str | None:
        return self.spiffe_ids.get(spiffe_id)

    def get(self, agent_id: str) -> AgentRecord | None:
        return self.agents.get(agent_id)

    def __len__(self) -> int:
        return len(self.agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.agents


def parse_registry(data: Any, path: str) -> tuple[Registry, list[SourceProblem]]:
    """Check and build the registry; every problem found is returned, not just the first."""
    problems: list[SourceProblem] = []
    if data is None:
        return Registry({}), problems
    if not isinstance(data, Mapping) or set(data) - {"agents"}:
        problems.append(SourceProblem(path, "expected a mapping with one key, `agents`", line_of(data)))
        return Registry({}), problems
    entries = data.get("agents") or []
    if not isinstance(entries, list):
        problems.append(SourceProblem(path, "`agents` must be a list", line_of(data)))
        return Registry({}), problems
    agents: dict[str, AgentRecord] = {}
    for i, entry in enumerate(entries):
        quick = _well_formed(entry, agents)
        if quick is not None:
            agents[quick.id] = quick
            continue
        line = line_of(entry, line_of(data))
        where = f"agents[{i}]"

        def bad(msg: str, line: int = line, where: str = where, key: str = "", entry: Any = entry) -> None:
            # At the offending key when there is one: a YAML entry keeps its keys' positions.
            at = (key_line(entry, key, line), key_col(entry, key)) if key and key in entry else (line, 1)
            problems.append(SourceProblem(path, f"{where}: {msg}", *at))

        if not isinstance(entry, Mapping):
            bad("must be a mapping with id, owner, status, expires, groups, attributes, scopes")
            continue
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            bad(f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})", key=sorted(unknown)[0])
        agent_id = entry.get("id")
        if not isinstance(agent_id, str) or not agent_id:
            bad("`id` must be a non-empty string", key="id")
            continue
        where = f"agents[{i}] ({agent_id})"
        if agent_id in agents:
            bad("duplicate agent id", where=where, key="id")
        owner = entry.get("owner")
        if not isinstance(owner, str) or not owner.strip():
            bad("`owner` is required: every agent has an accountable owner", where=where, key="owner")
            owner = ""
        status = entry.get("status", "active")
        if status not in STATUSES:
            bad(f"`status` must be one of {', '.join(STATUSES)}, got {status!r}", where=where, key="status")
        expires = entry.get("expires")
        if expires is not None:
            if isinstance(expires, dt.datetime):
                expires = expires.date()
            elif isinstance(expires, str):
                try:
                    expires = dt.date.fromisoformat(expires)
                except ValueError:
                    bad(f"`expires` must be a date (YYYY-MM-DD), got {expires!r}", where=where, key="expires")
                    expires = None
            elif not isinstance(expires, dt.date):
                bad(f"`expires` must be a date (YYYY-MM-DD), got {expires!r}", where=where, key="expires")
                expires = None
        groups = entry.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            bad("`groups` must be a list of group names", where=where, key="groups")
            groups = []
        attributes = entry.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            bad("`attributes` must be a mapping", where=where, key="attributes")
            attributes = {}
        wrong = cedar_value_problem(attributes)
        if wrong is not None:
            bad(f"`attributes`{wrong}", where=where, key="attributes")
            attributes = {}
        scopes = entry.get("scopes")
        if "scopes" in entry and (not isinstance(scopes, list) or not all(isinstance(sc, str) and sc for sc in scopes)):
            bad("`scopes` must be a list of scope names (non-empty strings)", where=where, key="scopes")
            scopes = []
        spiffe_id = entry.get("spiffe_id")
        if spiffe_id is not None and spiffe_trust_domain(spiffe_id) is None:
            bad(
                f"`spiffe_id` must be a SPIFFE ID (spiffe://<trust domain>/<path>), got {spiffe_id!r}",
                where=where,
                key="spiffe_id",
            )
            spiffe_id = None
        agents[agent_id] = AgentRecord(
            id=agent_id,
            owner=owner,
            status=status if status in STATUSES else INVALID_STATUS,
            expires=expires,
            groups=tuple(groups),
            # A YAML mapping keeps its key positions, so a schema error can name the attribute's line.
            attributes=attributes if isinstance(attributes, LineDict) else dict(attributes),
            line=line,
            scopes=None if scopes is None else frozenset(scopes),
            spiffe_id=spiffe_id,
        )
    return Registry(agents, _spiffe_ids(agents, path, problems)), problems


def _spiffe_ids(agents: Mapping[str, AgentRecord], path: str, problems: list[SourceProblem]) -> dict[str, str]:
    """SPIFFE ID -> agent; a SPIFFE ID two agents claim is a problem at the second one's line."""
    out: dict[str, str] = {}
    for rec in agents.values():
        if rec.spiffe_id is None:
            continue
        if rec.spiffe_id in out:
            taken = f"agent {rec.id!r}: `spiffe_id` {rec.spiffe_id!r} is already agent {out[rec.spiffe_id]!r}'s"
            problems.append(SourceProblem(path, taken, rec.line))
            continue
        out[rec.spiffe_id] = rec.id
    return out


def _well_formed(entry: Any, seen: Mapping[str, AgentRecord]) -> AgentRecord | None:
    """The record for an entry that needs no diagnosis (the common case), else None.

    A 100,000-agent registry goes through here; anything unusual takes the slow path,
    which reports every problem.
    """
    if not isinstance(entry, dict) or not entry.keys() <= _ENTRY_KEYS:
        return None
    spiffe_id = entry.get("spiffe_id")
    if spiffe_id is not None and spiffe_trust_domain(spiffe_id) is None:
        return None
    agent_id, owner = entry.get("id"), entry.get("owner")
    status, expires = entry.get("status", "active"), entry.get("expires")
    groups, attributes = entry.get("groups") or [], entry.get("attributes") or {}
    scopes = entry.get("scopes", None)
    if (
        type(agent_id) is not str
        or not agent_id
        or agent_id in seen
        or type(owner) is not str
        or not owner.strip()
        or status not in STATUSES
        or type(groups) is not list
        or type(attributes) is not dict
        or not _plain_value(attributes)
    ):
        return None
    for g in groups:
        if type(g) is not str or not g:
            return None
    if "scopes" in entry:
        if type(scopes) is not list or not all(type(sc) is str and sc for sc in scopes):
            return None
        scopes = frozenset(scopes)
    if expires is not None:
        if type(expires) is str:
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                return None
        elif type(expires) is not dt.date:
            return None
    return AgentRecord(agent_id, owner, status, expires, tuple(groups), attributes, line_of(entry), scopes, spiffe_id)


def _plain_value(value: Any, level: int = 0) -> bool:
    """`cedar_value_problem(value) is None` for plain YAML data, without building paths (the fast path)."""
    kind = type(value)
    if kind is str or kind is bool:
        return True
    if kind is int:
        return _I64[0] <= value <= _I64[1]
    if level >= 32:
        return False
    if kind is dict:
        return all(type(k) is str and _plain_value(v, level + 1) for k, v in value.items())
    if kind is list:
        return all(_plain_value(v, level + 1) for v in value)
    return False


def cedar_value_problem(value: Any, depth: int = 32) -> str | None:
    """What keeps `value` from being a Cedar attribute value as JSON, or None.

    Strings, booleans, 64-bit integers, lists and string-keyed mappings (entity and
    extension escapes are mappings); YAML also yields floats, nulls, dates and bytes,
    which Cedar has no value for. Checked here so every agent is checked, not one per shape.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, where, level = stack.pop()
        if isinstance(v, bool) or isinstance(v, str):
            continue
        if isinstance(v, int):
            if not _I64[0] <= v <= _I64[1]:
                return f"{where}: {str(v)[:30]} is outside Cedar's 64-bit integers"
            continue
        if level >= depth:
            return f"{where}: nested more than {depth} levels deep"
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    return f"{where}: key {k!r} is not a string"
                stack.append((item, f"{where}.{k}", level + 1))
            continue
        if isinstance(v, list):
            stack.extend((item, f"{where}[{i}]", level + 1) for i, item in enumerate(v))
            continue
        if isinstance(v, float):
            return f"{where}: {v!r} is not a Cedar value (Cedar has no floating-point numbers: use a decimal)"
        if isinstance(v, (dt.date, dt.datetime)):
            return f"{where}: {v} is a YAML date, not a Cedar value (quote it to make it a string)"
        return f"{where}: {'null' if v is None else type(v).__name__} is not a Cedar value"
    return None


def agent_entity(rec: AgentRecord) -> dict[str, Any]:
    """The Cedar JSON entity of one agent: its attributes, its groups as parents."""
    return {
        "uid": {"type": AGENT, "id": rec.id},
        "attrs": dict(rec.attributes or {}),
        "parents": [{"type": AGENT_GROUP, "id": g} for g in rec.groups],
    }


def group_entities(registry: Registry, defined: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """An `AgentGroup` entity for each group the registry names and entities.json does not define."""
    groups: set[str] = set()
    for rec in registry.agents.values():
        groups.update(rec.groups)
    return [
        {"uid": {"type": AGENT_GROUP, "id": g}, "attrs": {}, "parents": []}
        for g in sorted(groups)
        if (AGENT_GROUP, g) not in defined
    ]
