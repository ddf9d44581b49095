"""JSON-RPC messages to checks, tool arguments to Cedar values, and SSE framing (no servers)."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pep.api.mcp_http import SseReader, answer_to
from pep.api.mcp_rpc import (
    argument_value,
    filter_result,
    listed_names,
    read_message,
)
from pep.config import parse_config
from pep.errors import ConfigError
from pep.policy.request import MAX_DEPTH, cedar_value

MAX = 1 << 20


def msg(method: str | None = None, params: Any = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", **extra}
    if method is not None:
        out["method"] = method
    if params is not None:
        out["params"] = params
    return out


def test_tools_call_becomes_a_call_tool_check_on_the_tool_in_its_server() -> None:
    m = read_message(msg("tools/call", {"name": "send", "arguments": {"amount": 5}}, id=7), "tools", MAX)
    assert (m.kind, m.id, m.has_id) == ("decide", 7, True)
    assert m.check is not None
    assert (m.check.action, m.check.resource.type, m.check.resource.id) == ("call_tool", "Tool", "send")
    assert m.check.resource.parents == (("McpServer", "tools"),) and m.check.resource.implied
    assert m.check.context == {"arguments": {"amount": 5}}
    assert m.check.request_id == "7" and m.check.max_context_bytes == MAX


@pytest.mark.parametrize(
    ("method", "params", "action", "rtype", "rid"),
    [
        ("resources/read", {"uri": "file:///a"}, "read_resource", "McpResource", "file:///a"),
        ("resources/subscribe", {"uri": "file:///a"}, "read_resource", "McpResource", "file:///a"),
        ("prompts/get", {"name": "p", "arguments": {"topic": "x"}}, "get_prompt", "Prompt", "p"),
    ],
)
def test_decided_methods(method: str, params: dict[str, Any], action: str, rtype: str, rid: str) -> None:
    m = read_message(msg(method, params, id="a"), "tools", MAX)
    assert m.kind == "decide" and m.check is not None
    assert (m.check.action, m.check.resource.type, m.check.resource.id) == (action, rtype, rid)


@pytest.mark.parametrize(
    ("method", "action"),
    [("tools/list", "list_tools"), ("resources/list", "list_resources"), ("prompts/list", "list_prompts")],
)
def test_lists(method: str, action: str) -> None:
    m = read_message(msg(method, {}, id=1), "tools", MAX)
    assert (m.kind, m.list_of) == ("list", method)
    assert m.check is not None and (m.check.action, m.check.resource.type) == (action, "McpServer")


@pytest.mark.parametrize("method", ["initialize", "ping", "server/discover", "notifications/initialized"])
def test_protocol_methods_need_only_a_token(method: str) -> None:
    m = read_message(msg(method, {}, id=1) if not method.startswith("notifications/") else msg(method), "t", MAX)
    assert m.kind == "token" and m.check is not None and m.check.action == method


def test_a_client_answer_is_token_only_under_respond() -> None:
    m = read_message(msg(None, id=3, result={}), "t", MAX)
    assert m.kind == "token" and m.check is not None and m.check.action == "respond"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([msg("ping", id=1)], "batches"),
        ({"method": "ping", "id": 1}, "JSON-RPC 2.0"),
        (msg("tools/call", {"arguments": {}}, id=1), "params.name"),
        (msg("tools/call", {"name": "x", "arguments": [1]}, id=1), "params.arguments"),
        (msg("tools/call", [1], id=1), "params must be an object"),
        (msg("tools/frobnicate", {}, id=1), "not one pep knows"),
        (msg("ping", id=True), "id"),
        (msg("ping", id={"a": 1}), "id"),
        (msg(None, id=1), "needs a method"),
        ("text", "JSON-RPC 2.0"),
    ],
)
def test_messages_pep_cannot_judge_say_why(data: Any, problem: str) -> None:
    m = read_message(data, "t", MAX)
    assert m.kind == ("unknown" if "not one pep knows" in problem else "invalid") and problem in m.problem


def test_a_tools_call_notification_is_not_decided_as_a_call() -> None:
    # Without an id it is not a request: no tool runs for it, and pep does not know such a notification.
    assert read_message(msg("tools/call", {"name": "x"}), "t", MAX).kind == "invalid"


# --- arguments in Cedar --------------------------------------------------------------------


def dec(text: str) -> dict[str, Any]:
    return {"__extn": {"fn": "decimal", "arg": text}}


@pytest.mark.parametrize(
    ("value", "cedar"),
    [
        (True, True),
        ("x", "x"),
        (5, 5),
        (100.0, 100),
        (-(2**63), -(2**63)),
        (2**63, str(2**63)),
        (99.5, dec("99.5")),
        (0.1, dec("0.1")),
        (-12.25, dec("-12.25")),
        (1.23456, "1.23456"),
        (1e-05, "1e-05"),
        (1e300, "1e+300"),
        (922337203685477.5, dec("922337203685477.5")),
        ([1, None, "a"], [1, "a"]),
        ({"a": None, "b": {"c": 1}}, {"b": {"c": 1}}),
        ({"__entity": {"type": "User", "id": "admin"}}, '{"__entity":{"type":"User","id":"admin"}}'),
        ({"x": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}}}, {"x": '{"__extn":{"fn":"ip","arg":"1.2.3.4"}}'}),
    ],
)
def test_argument_values(value: Any, cedar: Any) -> None:
    assert argument_value(value) == cedar


def test_deep_arguments_become_text_within_the_depth_limit() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 5):
        deep = {"a": deep}
    mapped = argument_value(deep)
    cedar_value(mapped, "context")  # the pipeline's own walk accepts it


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_every_json_argument_is_a_value_cedar_accepts(value: Any) -> None:
    """The rule never makes a valid tool call unauthorizable: Cedar takes whatever the mapping gives."""
    context = cedar_value({"arguments": argument_value({"v": value})}, "context")
    request = {
        "principal": {"type": "A", "id": "a"},
        "action": {"type": "Action", "id": "call_tool"},
        "resource": {"type": "Tool", "id": "t"},
        "context": context,
    }
    result = cedarpy.is_authorized(request, "permit(principal, action, resource);", "[]")
    assert result.allowed, result.diagnostics.errors


def test_a_policy_compares_whole_amounts_with_long_operators() -> None:
    policy = "permit(principal, action, resource) when { context.arguments.amount <= 100 };"

    def allowed(amount: Any) -> bool:
        context = {"arguments": argument_value({"amount": amount})}
        request = {
            "principal": {"type": "A", "id": "a"},
            "action": {"type": "Action", "id": "call_tool"},
            "resource": {"type": "Tool", "id": "t"},
            "context": context,
        }
        return cedarpy.is_authorized(request, policy, "[]").allowed

    assert allowed(50) and allowed(100.0) and not allowed(101) and not allowed(99.5)


# --- lists and SSE ---------------------------------------------------------------------------


def test_filter_keeps_only_shown_named_items() -> None:
    answer = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "a"}, {"name": "b"}, {"x": 1}], "nextCursor": "c"},
    }
    assert listed_names(answer, "tools/list") == ["a", "b"]
    out = filter_result(answer, "tools/list", frozenset({"b"}))
    assert out["result"] == {"tools": [{"name": "a"}], "nextCursor": "c"}
    assert answer["result"]["tools"][1] == {"name": "b"}  # the upstream's answer is not changed in place


def test_sse_reader_splits_events_across_chunks_and_line_endings() -> None:
    reader = SseReader(1024)
    stream = (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"x"}\r\n\r\n'
        b'id: 7\ndata: {"jsonrpc":"2.0",\ndata: "id":1,"result":{}}\n\n'
    )
    events = []
    for i in range(0, len(stream), 5):
        events.extend(reader.feed(stream[i : i + 5]))
    assert len(events) == 2 and reader.rest() == b""
    assert b"".join(e.raw for e in events) == stream
    assert answer_to(events[0].data, 1) is None
    assert answer_to(events[1].data, 1) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    rewritten = events[1].with_data(json.dumps({"id": 1}))
    assert rewritten.startswith(b"id: 7\n") and rewritten.endswith(b"\n\n")


def test_sse_reader_bounds_one_event() -> None:
    reader = SseReader(16)
    with pytest.raises(ValueError, match="larger than 16 bytes"):
        reader.feed(b"data: " + b"x" * 32)


# --- config --------------------------------------------------------------------------------

BASE = {"listen": "127.0.0.1:0", "upstream": "http://127.0.0.1:9/mcp", "resource": "https://t.example/mcp"}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"server_id": ""}, "mcp.server_id"),
        ({"server_id": "a b"}, "mcp.server_id"),
        ({"upstream": "ftp://x/mcp"}, "mcp.upstream"),
        ({"resource": "https://t.example/mcp#f"}, "mcp.resource"),
        ({"path": "mcp"}, "mcp.path"),
        ({"public_url": "http://h:1/base"}, "mcp.public_url"),
        ({"authorization_servers": ["not a url"]}, "mcp.authorization_servers[0]"),
        ({"timeout_seconds": float("nan")}, "mcp.timeout_seconds"),
        ({"threads": 0}, "mcp.threads"),
        ({"listn": "x"}, "mcp.listn"),
    ],
)
def test_config_errors_name_the_key(changes: dict[str, Any], key: str) -> None:
    raw = {**BASE, "server_id": "tools", **changes}
    with pytest.raises(ConfigError) as e:
        parse_config({"mcp": raw})
    assert e.value.key == key


def test_config_defaults() -> None:
    cfg = parse_config({"mcp": {**BASE, "server_id": "tools", "public_url": "https://pep.example/"}}).mcp
    assert (cfg.path, cfg.public_url, cfg.allow_unknown_methods) == ("/mcp", "https://pep.example", False)
    assert parse_config({}).mcp.listen == ""
