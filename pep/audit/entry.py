"""A decision as one decision-log entry.

An entry never holds the raw token, a DPoP proof or a key (a `Decision` does not carry
them), and the only claims it shows are `iss`, `jti`, `client_id`/`azp`, the scopes,
`sub` (as `on_behalf_of`) and the `act` chain; any of those named in
`decision_log.redact_claims` is written as "[redacted]".

`inputs` holds what `pep replay` needs besides the policy directory: the request's and the
token's own Cedar inputs. The pipeline hands them over by reference; they are copied, redacted
(`decision_log.redact_context`) and bounded (`decision_log.max_inputs_bytes`) here, on the
log's writer thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pep.decision import Decision, Inputs

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
    "scope": (("token", "scopes"), ("scopes_dropped",)),
    "scp": (("token", "scopes"), ("scopes_dropped",)),
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


@dataclass(frozen=True)
class InputsPolicy:
    """What an entry keeps of a decision's inputs: at most `max_bytes` of JSON, `redact` paths out of the context."""

    max_bytes: int = 16 * 1024
    redact: tuple[tuple[str, ...], ...] = ()


def inputs_policy(redact_context: Iterable[str] = (), max_inputs_bytes: int = 16 * 1024) -> InputsPolicy:
    """From `decision_log.redact_context` (dotted paths) and `decision_log.max_inputs_bytes`."""
    return InputsPolicy(max_inputs_bytes, tuple(tuple(path.split(".")) for path in redact_context))


DEFAULT_INPUTS = InputsPolicy()


def log_entry(
    d: Decision, redact: tuple[tuple[str, ...], ...] = (), inputs: InputsPolicy = DEFAULT_INPUTS
) -> dict[str, Any]:
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
        "scopes_dropped": list(d.scopes_dropped),
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
    if d.inputs is not None:
        _add_inputs(entry, d.inputs, inputs)
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


# Keys of `inputs` written only when they differ from these (the server's defaults).
_FLAGS = (
    ("schema", True),
    ("strict", True),
    ("grants", True),
    ("listing", False),
    ("policies", True),
    ("require_registry_scopes", False),
)
# The parts of `inputs` dropped, largest first, until it fits `max_inputs_bytes`.
_PARTS = (
    ("context",),
    ("resource", "attributes"),
    ("resource", "parents"),
    ("user", "attributes"),
    ("user", "groups"),
    ("subject", "properties"),
)


def _add_inputs(entry: dict[str, Any], inputs: Inputs, policy: InputsPolicy) -> None:
    """`inputs`, plus `inputs_truncated` and `inputs_redacted` when the entry had to leave something out."""
    context, redacted, secrets = _redact_context(inputs.context, policy.redact)
    out: dict[str, Any] = {"evaluated": inputs.evaluated, "context": context}
    resource: dict[str, Any] = {}
    if inputs.attributes:
        resource["attributes"] = inputs.attributes
    if inputs.parents:
        resource["parents"] = [{"type": t, "id": i} for t, i in inputs.parents]
    if inputs.implied:
        resource["implied"] = True
    if resource:
        out["resource"] = resource
    c = inputs.caller
    if c is not None:
        if c.user_groups or c.user_attributes:
            out["user"] = {"groups": list(c.user_groups), "attributes": c.user_attributes or {}}
        if c.issued_at is not None:
            out["token"] = {"issued_at": c.issued_at, "expires_at": c.expires_at}
        if c.subject is not None:
            out["subject"] = {"type": c.subject[0], "id": c.subject[1], "properties": c.subject_properties or {}}
        for flag, default in _FLAGS:
            if getattr(c, flag) != default:
                out[flag] = getattr(c, flag)
    if inputs.batch:
        out["batch"] = {"id": inputs.batch, "size": inputs.batch_size}
    fitted, truncated = _bounded(out, policy.max_bytes)
    if fitted is not None:
        entry["inputs"] = fitted
    if truncated or inputs.cut:
        entry["inputs_truncated"] = True
    if redacted:
        entry["inputs_redacted"] = redacted
        _scrub(entry, secrets)


def _json_size(value: Any) -> int | None:
    """Bytes of `value` as the log writes it (ASCII, non-ASCII escaped), or None when it is no JSON."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return None
    if data.isascii():
        return len(data)
    return len(json.dumps(value, separators=(",", ":")))


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON copy of a mapping or sequence that is not a dict or list (a read-only view, a tuple)."""
    if depth > 64:
        raise ValueError("nested too deeply")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def _bounded(out: dict[str, Any], limit: int) -> tuple[dict[str, Any] | None, bool]:
    """`out` within `limit` bytes: the largest parts dropped first, or None when even the rest is too large."""
    size = _json_size(out)
    if size is not None and size <= limit:
        return out, False
    if size is None:  # something that is not plain JSON: a copy, if one can be made
        try:
            out = _plain(out)
        except (ValueError, RecursionError):
            pass
        size = _json_size(out)
        if size is not None and size <= limit:
            return out, False
    sizes = []
    for path in _PARTS:
        holder = out.get(path[0]) if len(path) == 2 else out
        if isinstance(holder, dict) and path[-1] in holder:
            part = _json_size(holder[path[-1]])
            sizes.append((float("inf") if part is None else part, path))
    for _, path in sorted(sizes, reverse=True):
        holder = out[path[0]] if len(path) == 2 else out
        del holder[path[-1]]
        size = _json_size(out)
        if size is not None and size <= limit:
            return out, True
    return None, True


def _redact_context(
    context: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]
) -> tuple[Mapping[str, Any], list[str], list[Any]]:
    """The context with each present path's value replaced (copies along the path only: the request's
    own objects are never changed), the paths that were present, and the values taken out."""
    redacted: list[str] = []
    secrets: list[Any] = []
    for path in paths:
        node: Any = context
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            secrets.append(node)
            redacted.append(".".join(path))
            context = _replaced(context, path)
    return context, redacted, secrets


def _replaced(node: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    copy = dict(node)
    copy[path[0]] = REDACTED if len(path) == 1 else _replaced(node[path[0]], path[1:])
    return copy


def _leaves(value: Any) -> Iterable[str]:
    """The texts of a redacted value's strings and numbers (what an error message could quote)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and item and item != REDACTED:
            yield item
        elif isinstance(item, float) and item.is_integer():
            yield str(int(item))  # a whole number from a protobuf Struct: Cedar quotes it as a Long
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            yield str(item)


def _scrub(entry: dict[str, Any], secrets: list[Any]) -> None:
    """Redacted context values out of `errors` and the shadow's errors (a Cedar error may quote them)."""
    texts = sorted({t for s in secrets for t in _leaves(s)}, key=len, reverse=True)
    if not texts:
        return
    # A number is replaced only where it is not part of a longer number.
    patterns = [re.compile(rf"(?<![0-9.]){re.escape(t)}(?![0-9])" if _is_number(t) else re.escape(t)) for t in texts]
    lists = [entry["errors"]]
    if "shadow" in entry:
        lists.append(entry["shadow"]["errors"])
    for errors in lists:
        for i, text in enumerate(errors):
            for pattern in patterns:
                text = pattern.sub(REDACTED, text)
            errors[i] = text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
