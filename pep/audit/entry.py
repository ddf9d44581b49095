"""A decision as one decision-log entry.

An entry never holds the raw token, a DPoP proof or a key (a `Decision` does not carry
them), and the only claims it shows are `iss`, `jti`, `client_id`/`azp`, the scopes,
`sub` (as `on_behalf_of`) and the `act` chain; any of those named in
`decision_log.redact_claims` is written as "[redacted]".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

from pep.decision import Decision

SCHEMA_VERSION = 1
REDACTED = "[redacted]"
# What one entry may hold of free text (README, "Limits"): the request's own fields are bounded
# where it comes in; errors can quote them, so they are cut here.
MAX_ERRORS = 16
MAX_ERROR_CHARS = 1024
# Names a filtered list hid (an MCP `tools/list`), each cut like an error.
MAX_HIDDEN = 256


def bounded_errors(errors: Iterable[str]) -> list[str]:
    out = [e if len(e) <= MAX_ERROR_CHARS else e[:MAX_ERROR_CHARS] + "…[cut]" for e in errors]
    if len(out) > MAX_ERRORS:
        out = [*out[:MAX_ERRORS], f"…[{len(out) - MAX_ERRORS} more errors cut]"]
    return out


# Where each claim the log can show lands in an entry.
_CLAIM_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "iss": (("token", "iss"),),
    "jti": (("token", "jti"),),
    "client_id": (("token", "client_id"),),
    "azp": (("token", "client_id"),),
    "scope": (("token", "scopes"),),
    "scp": (("token", "scopes"),),
    "sub": (("on_behalf_of",),),
    "act": (("agent",), ("delegation_chain",)),
}


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def utc_timestamp(ts: float) -> str:
    """RFC 3339 UTC with microseconds (`2026-01-31T12:00:00.123456Z`), the second cached."""
    micros = round(ts * 1_000_000)
    second, micro = divmod(micros, 1_000_000)
    return f"{_utc_second(second)}.{micro:06d}Z"


def redaction_paths(claims: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """The entry fields that show any of `claims`; other claims are never written at all."""
    return tuple(dict.fromkeys(path for claim in claims for path in _CLAIM_FIELDS.get(claim, ())))


def log_entry(d: Decision, redact: tuple[tuple[str, ...], ...] = ()) -> dict[str, Any]:
    """The decision as a log object (docs/observability.md lists the fields). Never the token, proof or a key."""
    entry: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "ts": utc_timestamp(d.ts),
        "decision_id": d.decision_id,
        "request_id": d.request_id,
        "decision": "allow" if d.allowed else "deny",
        "reason": d.reason.value,
        "policies": list(d.policies),
        "errors": bounded_errors(d.errors),
        "agent": d.agent,
        "on_behalf_of": d.on_behalf_of,
        "delegation_chain": list(d.delegation_chain),
        "action": d.action,
        "resource": {"type": d.resource_type, "id": d.resource_id},
        "token": {
            "iss": d.token.iss,
            "jti": d.token.jti,
            "client_id": d.token.client_id,
            "scopes": list(d.token.scopes),
        },
        "binding": d.binding,
        "policy_version": d.policy_version,
        "mode": d.mode,
        "duration_us": d.duration_us,
    }
    if d.answer_allowed != d.allowed:
        entry["answered"] = "allow" if d.answer_allowed else "deny"
    if d.traceparent:  # validated where the request came in
        entry["traceparent"] = d.traceparent
    if d.shadow_diverged and d.shadow is not None:
        entry["shadow"] = {
            "decision": "allow" if d.shadow.allowed else "deny",
            "reason": d.shadow.reason.value,
            "policies": list(d.shadow.policies),
            "errors": bounded_errors(d.shadow.errors),
        }
    if d.hidden:  # names from the upstream's list, bounded like errors
        shown = [h if len(h) <= MAX_ERROR_CHARS else h[:MAX_ERROR_CHARS] + "…[cut]" for h in d.hidden[:MAX_HIDDEN]]
        if len(d.hidden) > MAX_HIDDEN:
            shown.append(f"…[{len(d.hidden) - MAX_HIDDEN} more cut]")
        entry["hidden"] = shown
    if redact:
        _redact(entry, redact)
    return entry


def _redact(entry: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    secrets: list[str] = []
    for path in paths:
        parent = entry
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        if isinstance(value, list):
            secrets.extend(v for v in value if v)
            parent[path[-1]] = [REDACTED] if value else []
        elif value:
            secrets.append(value)
            parent[path[-1]] = REDACTED
    # Error texts may quote a value (a Cedar error names `User::"alice"`): scrub it there too.
    secrets.sort(key=len, reverse=True)
    errors = entry["errors"]
    for i, text in enumerate(errors):
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        errors[i] = text
