"""`revoked:` in `killswitch.yaml`: tokens revoked by `jti`, and every token issued before a time
for an agent, a user or an issuer.

    revoked:
      tokens: [2c9f0e1a]
      issued_before:
        agents: {billing-bot: 2026-12-01T10:00:00Z}
        users: {alice: 2026-12-01T10:00:00Z}
        issuers: {https://idp.example.com: 2026-12-01T10:00:00Z}

Times are RFC 3339 with a time zone (YAML reads most as datetimes; strings are accepted too).
The check per request is `pep.controls.revocation`; admin revocations live in the kill store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pep.errors import SourceProblem
from pep.policy.source import key_line, line_of

# The kinds a revocation names, as admin entries in the kill store (`revoked_<kind>`).
REVOKE_KINDS: tuple[str, ...] = ("token", "agent", "user", "issuer")
STORED_PREFIX = "revoked_"
STORED_KINDS: tuple[str, ...] = tuple(STORED_PREFIX + k for k in REVOKE_KINDS)
_REVOKE_KIND_OF = {STORED_PREFIX + k: k for k in REVOKE_KINDS}
# killswitch.yaml `issued_before` key for each kind that takes a time.
_BEFORE_KEYS = {"agents": "agent", "users": "user", "issuers": "issuer"}
MAX_JTI = 1024


@dataclass(frozen=True)
class Revocations:
    """What killswitch.yaml revokes: jtis, and per agent, user or issuer a time (Unix seconds)."""

    tokens: frozenset[str] = frozenset()
    agents: Mapping[str, float] = field(default_factory=dict)
    users: Mapping[str, float] = field(default_factory=dict)
    issuers: Mapping[str, float] = field(default_factory=dict)

    def before(self, kind: str) -> Mapping[str, float]:
        return {"agent": self.agents, "user": self.users, "issuer": self.issuers}.get(kind, {})

    def __bool__(self) -> bool:
        return bool(self.tokens or self.agents or self.users or self.issuers)


def parse_time(value: Any) -> float:
    """Unix seconds of an RFC 3339 time (a string, or a datetime YAML made of one); ValueError
    when it is neither or has no time zone."""
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("z", "Z"):
            text = text[:-1] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value[:60]!r} is not an RFC 3339 time such as 2026-12-01T10:00:00Z") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        raise ValueError(f"{value.isoformat()} is a date: give a time with a zone, such as {value}T00:00:00Z")
    if not isinstance(value, dt.datetime):
        raise ValueError("must be an RFC 3339 time such as 2026-12-01T10:00:00Z")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no time zone: add Z or an offset such as +02:00")
    return value.timestamp()


def revoke_kind(stored_kind: str) -> str | None:
    """`agent` for the kill store's kind `revoked_agent`; None for a kind that is no revocation."""
    return _REVOKE_KIND_OF.get(stored_kind)


def format_time(ts: float) -> str:
    """RFC 3339 in UTC, to the second (as pep writes every time it shows)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_revoked(data: Any, path: str, line: int) -> tuple[Revocations, list[SourceProblem]]:
    problems: list[SourceProblem] = []
    if data is None:
        return Revocations(), problems
    if not isinstance(data, Mapping):
        return Revocations(), [SourceProblem(path, "`revoked` must be a mapping", line)]
    line = line_of(data, line)
    unknown = set(data) - {"tokens", "issued_before"}
    if unknown:
        name = sorted(map(str, unknown))[0]
        problems.append(SourceProblem(path, f"unknown key {name!r} under `revoked`", key_line(data, name, line)))
    tokens = data.get("tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, str) and 0 < len(t) <= MAX_JTI for t in tokens):
        problems.append(
            SourceProblem(
                path,
                "`revoked.tokens` must be a list of jti strings (quote one YAML reads as a number)",
                key_line(data, "tokens", line),
            )
        )
        tokens = []
    before = data.get("issued_before") or {}
    times: dict[str, dict[str, float]] = {key: {} for key in _BEFORE_KEYS}
    if not isinstance(before, Mapping):
        problems.append(
            SourceProblem(path, "`revoked.issued_before` must be a mapping", key_line(data, "issued_before", line))
        )
        before = {}
    where = line_of(before, line)
    unknown = set(before) - set(_BEFORE_KEYS)
    if unknown:
        name = sorted(map(str, unknown))[0]
        problems.append(
            SourceProblem(path, f"unknown key {name!r} under `revoked.issued_before`", key_line(before, name, where))
        )
    for key in _BEFORE_KEYS:
        value = before.get(key) or {}
        at = key_line(before, key, where)
        if not isinstance(value, Mapping):
            problems.append(SourceProblem(path, f"`revoked.issued_before.{key}` must map ids to times", at))
            continue
        for id_, when in value.items():
            if not isinstance(id_, str) or not id_:
                problems.append(SourceProblem(path, f"`revoked.issued_before.{key}`: ids must be strings", at))
                continue
            try:
                times[key][id_] = parse_time(when)
            except ValueError as e:
                problems.append(
                    SourceProblem(path, f"`revoked.issued_before.{key}.{id_}`: {e}", key_line(value, id_, at))
                )
    return Revocations(frozenset(tokens), **times), problems
