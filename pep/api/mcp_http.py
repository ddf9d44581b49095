"""The MCP proxy's HTTP side: what it says itself (metadata, challenges, denials), which headers
cross it, and Server-Sent Events read one event at a time."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pep.api.ext_authz import (
    AGENT_HEADER,
    DECISION_ID_HEADER,
    ON_BEHALF_OF_HEADER,
    TOKEN_REASONS,
    challenges,
)
from pep.api.http_listener import STATUS_TEXT
from pep.api.mcp_rpc import DENIED, INTERNAL_ERROR, INVALID_REQUEST, error
from pep.config import McpConfig
from pep.decision import Decision, Fault
from pep.reasons import Reason

METADATA_PATH = "/.well-known/oauth-protected-resource"
# Hop-by-hop headers (RFC 9110 7.6.1) and framing aiohttp sets itself: never relayed either way.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# Toward the upstream also the client's credentials (no token passthrough) and Accept-Encoding
# (lists are read and filtered: the upstream must answer in plain bytes); x-pep-* only pep sets.
_DROPPED_REQUEST = _HOP_BY_HOP | {
    "proxy-authorization",
    "host",
    "authorization",
    "dpop",
    "x-forwarded-client-cert",
    "accept-encoding",
}
_DROPPED_RESPONSE = _HOP_BY_HOP | {"server", "date"}
_DESCRIPTIONS = {
    Reason.POLICY_FORBID: "a policy forbids it",
    Reason.POLICY_NO_PERMIT: "no policy permits it",
    Reason.AGENT_DISABLED: "the agent is disabled",
    Reason.AGENT_EXPIRED: "the agent's registration has expired",
    Reason.RATE_LIMITED: "rate limit reached",
}


def upstream_headers(
    headers: Iterable[tuple[str, str]], decision_id: str | None, *, agent: str, on_behalf_of: str
) -> list[tuple[str, str]]:
    """The client's headers as the upstream gets them: credentials out, pep's identity in."""
    out = [(k, v) for k, v in headers if k.lower() not in _DROPPED_REQUEST and not k.lower().startswith("x-pep-")]
    if decision_id:
        out.append((DECISION_ID_HEADER, decision_id))
    if agent:
        out.append((AGENT_HEADER, agent))
    if on_behalf_of:
        out.append((ON_BEHALF_OF_HEADER, on_behalf_of))
    out.append(("Accept-Encoding", "identity"))
    return out


def client_headers(headers: Iterable[tuple[str, str]], decision_id: str, dpop_nonce: str = "") -> list[tuple[str, str]]:
    """The upstream's headers as the client gets them, with pep's decision id and DPoP nonce (RFC 9449 8.2)."""
    out = [(k, v) for k, v in headers if k.lower() not in _DROPPED_RESPONSE and k.lower() != "dpop-nonce"]
    out.append((DECISION_ID_HEADER, decision_id))
    if dpop_nonce:
        out.append(("DPoP-Nonce", dpop_nonce))
    return out


def metadata(config: McpConfig, public_url: str, dpop_algorithms: Sequence[str]) -> dict[str, Any]:
    """The protected resource metadata document (RFC 9728)."""
    doc: dict[str, Any] = {
        "resource": config.resource,
        "authorization_servers": list(config.authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if dpop_algorithms:
        doc["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
    doc["resource_name"] = f"MCP server {config.server_id} (through pep)"
    return doc


def metadata_url(public_url: str, path: str) -> str:
    return f"{public_url}{METADATA_PATH}{path}"


def json_response(status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> web.Response:
    resp = web.Response(status=status, reason=STATUS_TEXT.get(status), body=body, content_type="application/json")
    for k, v in headers:
        resp.headers.add(k, v)
    resp.headers["Server"] = "pep"
    return resp


def plain_error(status: int, message: str) -> web.Response:
    """An answer to a request that is not (or not yet) a JSON-RPC message."""
    return json_response(status, error(None, INVALID_REQUEST if status < 500 else INTERNAL_ERROR, message))


def _message(decision: Decision) -> str:
    detail = "; ".join(decision.errors) if decision.errors else _DESCRIPTIONS.get(decision.reason, "denied")
    if decision.fault is Fault.INTERNAL:
        detail = "internal error"
    return f"{decision.reason.value}: {detail}"[:1024]


def denial(
    decision: Decision,
    msg_id: Any,
    has_id: bool,
    *,
    token: str,
    scheme: str,
    resource_metadata: str,
    dpop_algorithms: Sequence[str],
) -> web.Response:
    """A denied message: 401 with a challenge for credentials, a JSON-RPC error for the rest.

    A request (it has an id) is answered 200 with its JSON-RPC error, as the MCP client reads it;
    a notification, a client's answer, a stream or a session end is answered 403.
    """
    data = {"reason": decision.reason.value, "decision_id": decision.decision_id}
    headers = [(DECISION_ID_HEADER, decision.decision_id)]
    if decision.dpop_nonce:  # with the use_dpop_nonce challenge, or on any other denial (RFC 9449 8.2)
        headers.append(("DPoP-Nonce", decision.dpop_nonce))
    body = error(msg_id if has_id else None, DENIED, _message(decision), data)
    if decision.reason in TOKEN_REASONS:
        for value in challenges(decision.reason, scheme, token, realm="", dpop_algorithms=dpop_algorithms):
            scheme_name, _, params = value.partition(" ")
            extra = f'resource_metadata="{resource_metadata}"'
            headers.append(("WWW-Authenticate", f"{scheme_name} {extra}" + (f", {params}" if params else "")))
        return json_response(401, body, headers)
    if decision.fault is Fault.UNAVAILABLE:
        return json_response(503, body, headers)
    if decision.fault is Fault.INTERNAL:
        return json_response(500, body, headers)
    if decision.fault is Fault.INVALID_ARGUMENT:
        status = 200 if has_id else 400
        return json_response(status, body, headers)
    return json_response(200 if has_id else 403, body, headers)


@dataclass
class SseEvent:
    """One event as it arrived (`raw`, relayed verbatim) and its joined `data`."""

    raw: bytes
    data: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)

    def with_data(self, data: str) -> bytes:
        """The same event (its id and event type kept) with new data."""
        lines = [f"{k}: {v}" for k, v in self.fields if k != "data"]
        lines.extend(f"data: {line}" for line in data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


class SseReader:
    """Splits a text/event-stream into events (the WHATWG rules: CRLF, CR or LF; blank line ends one)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            end, size = _event_end(self._buffer)
            if end < 0:
                if len(self._buffer) > self._max:
                    raise ValueError(f"an event of the upstream's stream is larger than {self._max} bytes")
                return events
            raw, self._buffer = self._buffer[: end + size], self._buffer[end + size :]
            events.append(_parse_event(raw))

    def rest(self) -> bytes:
        return self._buffer


def _event_end(buffer: bytes) -> tuple[int, int]:
    best = (-1, 0)
    for sep in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        i = buffer.find(sep)
        if i >= 0 and (best[0] < 0 or i < best[0]):
            best = (i, len(sep))
    return best


def _parse_event(raw: bytes) -> SseEvent:
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    fields: list[tuple[str, str]] = []
    data: list[str] = []
    for line in text.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        fields.append((name, value))
        if name == "data":
            data.append(value)
    return SseEvent(raw, "\n".join(data), fields)


def answer_to(event_data: str, msg_id: Any) -> Mapping[str, Any] | None:
    """The event's JSON-RPC message if it answers `msg_id`, else None."""
    try:
        message = json.loads(event_data)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("id") == msg_id and ("result" in message or "error" in message):
        return message
    return None
