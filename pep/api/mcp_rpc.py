"""MCP JSON-RPC messages to pipeline requests, and pep's answers back (docs/mcp.md).

| method | action | resource |
|---|---|---|
| `tools/call` | `call_tool` | `Tool::"<name>"` in `McpServer::"<server_id>"` (context `arguments`) |
| `resources/read`, `resources/subscribe` | `read_resource` | `McpResource::"<uri>"` in the server |
| `prompts/get` | `get_prompt` | `Prompt::"<name>"` in the server (context `arguments`) |
| `tools/list`, `resources/list`, `prompts/list` | `list_tools` ... | the server; items filtered |
| the rest of the protocol (`initialize`, `ping`, notifications, ...) | the method | the server; token only |
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pep.policy.request import MAX_DEPTH, Check, ResourceRef

JSONRPC = "2.0"
DENIED = -32003  # pep's deny: `message` starts with the reason code
INVALID_REQUEST = -32600
PARSE_ERROR = -32700
INTERNAL_ERROR = -32603

SERVER = "McpServer"
DECIDED = {
    "tools/call": ("call_tool", "Tool", "name"),
    "resources/read": ("read_resource", "McpResource", "uri"),
    "resources/subscribe": ("read_resource", "McpResource", "uri"),
    "prompts/get": ("get_prompt", "Prompt", "name"),
}
# list method -> (action, key of the items in the result, the item's name field, the items' check)
LISTS = {
    "tools/list": ("list_tools", "tools", "name", "tools/call"),
    "resources/list": ("list_resources", "resources", "uri", "resources/read"),
    "prompts/list": ("list_prompts", "prompts", "name", "prompts/get"),
}
# Pass with a valid token (admission and the delegation grants still apply); logged under the method's name.
TOKEN_ONLY = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "resources/templates/list",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    }
)
RESPOND = "respond"  # the client's answer to a server request (sampling, elicitation, roots)
OPEN_STREAM = "open_stream"  # GET: the server's SSE stream
END_SESSION = "end_session"  # DELETE
_ESCAPES = frozenset({"__entity", "__extn", "__expr"})
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DECIMAL_MAX = decimal.Decimal("922337203685477.5807")


def argument_value(value: Any, depth: int = 0) -> Any:
    """A JSON argument as a Cedar value; never refuses one (docs/mcp.md, "Arguments in Cedar").

    Whole numbers in Long's range are Longs; other numbers `decimal`s when they fit (at most
    four places, Cedar's range), else their text; null is left out; arrays are sets; objects are
    records, except one with a key Cedar reads as an escape (`__entity`, `__extn`, `__expr`) or
    nested deeper than pep's limit, which becomes its JSON text.
    """
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH - 1 or _ESCAPES.intersection(value):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return {str(k): argument_value(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if depth >= MAX_DEPTH - 1:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return [argument_value(v, depth + 1) for v in value if v is not None]
    return str(value)


def _number(value: float) -> Any:
    if value.is_integer() and _LONG_MIN <= value <= _LONG_MAX:
        return int(value)
    exact = decimal.Decimal(repr(value))
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -4 and abs(exact) <= _DECIMAL_MAX:
        text = f"{exact:f}"
        return {"__extn": {"fn": "decimal", "arg": text if "." in text else text + ".0"}}
    return repr(value)


@dataclass(frozen=True)
class Message:
    """One JSON-RPC message from the client, as pep judges it."""

    # "decide" | "list" | "token"; "unknown": a method pep does not know (allow_unknown_methods may
    # pass it); "invalid": a message pep refuses whatever the configuration says.
    kind: str
    method: str
    id: Any = None  # absent for notifications and for answers the client sends
    has_id: bool = False
    check: Check | None = None
    list_of: str = ""  # for a list: the list method
    problem: str = ""  # why the message cannot be judged (kinds "unknown" and "invalid")


def read_message(data: Any, server_id: str, max_context_bytes: int) -> Message:
    """Classify one decoded JSON-RPC message. Never raises."""
    server = ResourceRef(SERVER, server_id)
    if isinstance(data, list):
        return Message("invalid", "", problem="JSON-RPC batches are not accepted")
    if not isinstance(data, dict) or data.get("jsonrpc") != JSONRPC:
        return Message("invalid", "", problem='not a JSON-RPC 2.0 message (an object with "jsonrpc": "2.0")')
    has_id = "id" in data
    msg_id = data.get("id")
    if has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int))):
        return Message("invalid", "", problem="a JSON-RPC id must be a string or a number")
    request_id = str(msg_id)[:256] if has_id else ""
    method = data.get("method")
    if method is None:
        if has_id and ("result" in data or "error" in data):
            return Message("token", RESPOND, msg_id, has_id, Check(RESPOND, server, request_id=request_id))
        return Message("invalid", "", msg_id, has_id, problem="a JSON-RPC message needs a method, result or error")
    if not isinstance(method, str) or not method or len(method) > 256:
        return Message("invalid", "", msg_id, has_id, problem="method must be a string of 1 to 256 characters")
    params = data.get("params", {})
    if not isinstance(params, dict):
        return Message("invalid", method, msg_id, has_id, problem="params must be an object")
    if method in DECIDED and has_id:
        action, rtype, key = DECIDED[method]
        name = params.get(key)
        if not isinstance(name, str) or not name:
            return Message("invalid", method, msg_id, has_id, problem=f"{method} needs params.{key}, a string")
        context: dict[str, Any] = {}
        if method in ("tools/call", "prompts/get"):
            arguments = params.get("arguments", {})
            if arguments is None:
                arguments = {}
            if not isinstance(arguments, dict):
                return Message("invalid", method, msg_id, has_id, problem="params.arguments must be an object")
            context["arguments"] = argument_value(arguments)
        resource = ResourceRef(rtype, name, parents=((SERVER, server_id),), implied=True)
        check = Check(action, resource, context, request_id=request_id, max_context_bytes=max_context_bytes)
        return Message("decide", method, msg_id, has_id, check)
    if method in LISTS and has_id:
        check = Check(LISTS[method][0], server, request_id=request_id)
        return Message("list", method, msg_id, has_id, check, list_of=method)
    if method in TOKEN_ONLY or method.startswith("notifications/"):
        return Message("token", method, msg_id, has_id, Check(method, server, request_id=request_id))
    if method in DECIDED or method in LISTS:
        # Without an id it is a notification: no tool may run, and no list is answered, for one.
        return Message("invalid", method, msg_id, has_id, problem=f"{method} must be a request (with an id)")
    return Message("unknown", method, msg_id, has_id, problem=f"method {method[:64]!r} is not one pep knows")


def item_check(list_method: str, name: str, server_id: str) -> Check:
    """What calling one listed item would ask, arguments left unknown (`Listing.unknown`)."""
    action, rtype, _ = DECIDED[LISTS[list_method][3]]
    return Check(action, ResourceRef(rtype, name, parents=((SERVER, server_id),), implied=True))


def error(msg_id: Any, code: int, message: str, data: Mapping[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": JSONRPC, "id": msg_id, "error": {"code": code, "message": message}}
    if data:
        body["error"]["data"] = dict(data)
    return json.dumps(body, separators=(",", ":")).encode()


def filter_result(message: Mapping[str, Any], list_method: str, hidden: frozenset[str]) -> dict[str, Any]:
    """The upstream's list answer without the hidden items (and without items pep cannot name)."""
    _, key, name_field, _ = LISTS[list_method]
    out = dict(message)
    result = out.get("result")
    if isinstance(result, dict) and isinstance(result.get(key), list):
        kept = [
            item
            for item in result[key]
            if isinstance(item, dict) and isinstance(item.get(name_field), str) and item[name_field] not in hidden
        ]
        out["result"] = {**result, key: kept}
    return out


def listed_names(message: Mapping[str, Any], list_method: str) -> list[str]:
    """The names in an upstream list answer (items without a string name are dropped, never shown)."""
    _, key, name_field, _ = LISTS[list_method]
    result = message.get("result")
    if not isinstance(result, dict) or not isinstance(result.get(key), list):
        return []
    names = [item.get(name_field) for item in result[key] if isinstance(item, dict)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))
