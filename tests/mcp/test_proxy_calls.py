"""The MCP proxy end to end: the SDK client -> pep -> the SDK server, in both protocol eras.

Policies (tests/harness/mcp_estate.py): agent `assistant` (group tool-users) may call read_file and
count_slowly, send_payment while arguments.amount <= 100, never a path under /etc, never delete_file;
resources and prompts are allowed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mcp_types import TextContent, TextResourceContents

from tests.harness.mcp import McpError, ProtocolEra, Session, run, tool_text
from tests.harness.mcp_proxy import MODERN, TIMEOUT, GzipUpstream, Proxy, is_uuid, start_proxy

ERAS: list[ProtocolEra] = ["handshake", "modern"]
README = "file:///docs/readme.md"
SHOWN = ["read_file", "send_payment", "count_slowly"]
# The action pep logs for each message the SDK client sends.
ACTIONS = {
    "initialize": "initialize",
    "notifications/initialized": "notifications/initialized",
    "tools/call": "call_tool",
    "tools/list": "list_tools",
    "resources/read": "read_resource",
    "prompts/get": "get_prompt",
}


def _action(method: str, message: Any) -> str:
    if method == "GET":
        return "open_stream"
    if method == "DELETE":
        return "end_session"
    return ACTIONS.get(message["method"], message["method"])


@pytest.mark.parametrize("era", ERAS)
def test_allowed_call_runs_once(proxy: Proxy, era: ProtocolEra) -> None:
    async def scenario() -> Any:
        async with proxy.connect(era) as s:
            return await s.call_tool("read_file", {"path": "/home/alice/notes.txt"})

    mark = proxy.mark()
    result = run(scenario())
    assert not result.is_error
    assert tool_text(result) == "contents of /home/alice/notes.txt"
    assert proxy.ran() == {"read_file": 1}
    (call,) = [e for e in proxy.since(mark) if e["action"] == "call_tool"]
    assert (call["decision"], call["reason"], call["policies"]) == ("allow", "allowed", ["read-files"])
    assert call["resource"] == {"type": "Tool", "id": "read_file"}
    assert (call["agent"], call["on_behalf_of"]) == ("assistant", "alice")


@pytest.mark.parametrize("era", ERAS)
def test_denied_call_is_a_jsonrpc_error_and_never_runs(proxy: Proxy, era: ProtocolEra) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with proxy.connect(era) as s:
            denied = await s.call_tool_or_error("delete_file", {"path": "/home/alice/notes.txt"})
            after = await s.call_tool("read_file", {"path": "/a"})  # the session goes on
            return denied, after

    denied, after = run(scenario())
    assert isinstance(denied, McpError), denied
    assert denied.code == -32003
    assert denied.message.startswith("policy_no_permit")
    assert denied.data["reason"] == "policy_no_permit" and is_uuid(denied.data["decision_id"])
    assert tool_text(after) == "contents of /a"
    assert proxy.ran() == {"read_file": 1}  # delete_file never ran
    line = proxy.line(denied.data["decision_id"])
    assert (line["decision"], line["reason"], line["action"]) == ("deny", "policy_no_permit", "call_tool")
    assert line["resource"] == {"type": "Tool", "id": "delete_file"}


ARGUMENT_CASES = [
    pytest.param("send_payment", {"amount": 50, "to": "bob"}, "allowed", id="payment-50"),
    pytest.param("send_payment", {"amount": 100.0, "to": "bob"}, "allowed", id="payment-100.0-is-a-long"),
    pytest.param("send_payment", {"amount": 500, "to": "bob"}, "policy_no_permit", id="payment-500"),
    # 99.5 is a Cedar decimal; `decimal <= Long` is a type error: the permit errors, pep fails closed.
    pytest.param("send_payment", {"amount": 99.5, "to": "bob"}, "evaluation_error", id="payment-99.5-decimal"),
    pytest.param("read_file", {"path": "/etc/passwd"}, "policy_forbid", id="read-etc-passwd"),
]


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize(("tool", "arguments", "reason"), ARGUMENT_CASES)
def test_argument_rules(proxy: Proxy, era: ProtocolEra, tool: str, arguments: dict[str, Any], reason: str) -> None:
    async def scenario() -> Any:
        async with proxy.connect(era) as s:
            return await s.call_tool_or_error(tool, arguments)

    mark = proxy.mark()
    result = run(scenario())
    (line,) = [e for e in proxy.since(mark) if e["action"] == "call_tool"]
    assert line["reason"] == reason
    assert line["resource"] == {"type": "Tool", "id": tool}
    if reason == "allowed":
        assert not isinstance(result, McpError) and not result.is_error, result
        assert tool_text(result) == f"sent {float(arguments['amount'])} to bob"
        assert proxy.ran() == {tool: 1}
        assert line["policies"] == ["small-payments"]
        return
    assert isinstance(result, McpError), result
    assert result.code == -32003 and result.message.startswith(reason)
    assert result.data == {"reason": reason, "decision_id": line["decision_id"]}
    assert proxy.ran() == {}
    assert line["decision"] == "deny"
    if reason == "policy_forbid":
        assert line["policies"] == ["no-etc"]
    if reason == "evaluation_error":
        assert "small-payments" in result.message
        assert any("small-payments" in err for err in line["errors"])


@pytest.mark.parametrize("era", ERAS)
def test_tools_list_hides_what_is_never_allowed(proxy: Proxy, era: ProtocolEra) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> tuple[list[str], Session]:
        async with proxy.connect(era, headers={"x-test-run": tag}) as s:
            return await s.list_tools(), s

    mark = proxy.mark()
    names, session = run(scenario())
    assert names == SHOWN
    lines = proxy.since(mark)
    (listing,) = [e for e in lines if e["action"] == "list_tools"]  # ONE line for the list
    assert (listing["decision"], listing["reason"]) == ("allow", "allowed")
    assert listing["hidden"] == ["delete_file"]
    assert listing["resource"] == {"type": "McpServer", "id": "tools"}
    assert not [e for e in lines if e["action"] == "call_tool"]  # the previews are not logged one by one
    (exchange,) = [e for e in session.exchanges if (e.message() or {}).get("method") == "tools/list"]
    assert exchange.response_headers["x-pep-decision-id"] == listing["decision_id"]
    # The upstream got the list without a decision id (its decision is made once the answer is filtered).
    (unmarked,) = [r for r in proxy.seen(tag) if "x-pep-decision-id" not in r["headers"]]
    assert unmarked["method"] == "POST" and unmarked["headers"].get("mcp-method", "tools/list") == "tools/list"


@pytest.mark.parametrize("era", ERAS)
def test_tools_list_hides_even_when_the_upstream_compresses(
    tmp_path_factory: pytest.TempPathFactory, era: ProtocolEra
) -> None:
    """An upstream behind a gzip middleware (common in front of HTTP apps) must not get the list
    past the filter. pep drops the client's Accept-Encoding, but aiohttp then sends its default
    `Accept-Encoding: gzip, deflate`; the gzipped JSON answer (modern era) is not a list answer to
    pep (Content-Encoding != identity) and is relayed unfiltered: delete_file is shown."""
    with GzipUpstream(workdir=tmp_path_factory.mktemp("gzip-upstream")) as up:
        proxy = start_proxy(tmp_path_factory.mktemp("pep-gzip"), up)
        try:

            async def scenario() -> list[str]:
                async with proxy.connect(era) as s:
                    return await s.list_tools()

            names = run(scenario())
            lists = [r for r in up.headers() if r["method"] == "POST"]
            encodings = {r["headers"].get("accept-encoding", "identity") for r in lists}
        finally:
            proxy.close()
    assert names == SHOWN
    assert encodings <= {"identity"}, f"pep asked the upstream for {encodings}: lists must come uncompressed"


@pytest.mark.parametrize("era", ERAS)
def test_resource_and_prompt_are_allowed_and_counted(proxy: Proxy, era: ProtocolEra) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with proxy.connect(era) as s:
            return await s.read_resource(README), await s.get_prompt("summarize", {"topic": "pep"})

    mark = proxy.mark()
    resource, prompt = run(scenario())
    (contents,) = resource.contents
    assert isinstance(contents, TextResourceContents) and contents.text.startswith("# pep test upstream")
    (message,) = prompt.messages
    assert isinstance(message.content, TextContent)
    assert message.content.text == "Summarize pep in three sentences."
    assert proxy.ran() == {f"resource:{README}": 1, "prompt:summarize": 1}
    lines = {e["action"]: e for e in proxy.since(mark) if e["action"] in ("read_resource", "get_prompt")}
    assert lines["read_resource"]["resource"] == {"type": "McpResource", "id": README}
    assert lines["get_prompt"]["resource"] == {"type": "Prompt", "id": "summarize"}
    assert {e["decision"] for e in lines.values()} == {"allow"}
    assert {e["policies"][0] for e in lines.values()} == {"resources-and-prompts"}


@pytest.mark.parametrize("era", ERAS)
def test_resource_and_prompt_lists_show_what_is_allowed(proxy: Proxy, era: ProtocolEra) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with proxy.connect(era) as s:
            resources = [str(r.uri) for r in (await s.client.list_resources()).resources]
            return resources, [p.name for p in (await s.client.list_prompts()).prompts]

    mark = proxy.mark()
    assert run(scenario()) == ([README], ["summarize"])
    lines = {e["action"]: e for e in proxy.since(mark) if e["action"] in ("list_resources", "list_prompts")}
    assert set(lines) == {"list_resources", "list_prompts"}
    assert all(e["decision"] == "allow" and "hidden" not in e for e in lines.values())


@pytest.mark.parametrize("era", ERAS)
def test_progress_notifications_stream_through(proxy: Proxy, era: ProtocolEra) -> None:
    async def scenario() -> tuple[Any, list[Any], Session]:
        progress: list[Any] = []
        async with proxy.connect(era) as s:
            result = await s.call_tool("count_slowly", {"n": 3}, progress=progress, timeout=TIMEOUT)
            return result, progress, s

    result, progress, session = run(scenario())
    assert tool_text(result) == "counted 3"
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert proxy.ran() == {"count_slowly": 1}
    (call,) = [e for e in session.exchanges if (e.message() or {}).get("method") == "tools/call"]
    assert call.status == 200 and call.response_headers["content-type"].startswith("text/event-stream")


def test_session_id_is_relayed_in_the_handshake_era(proxy: Proxy) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> str | None:
        async with proxy.connect("handshake", headers={"x-test-run": tag}) as s:
            await s.call_tool("read_file", {"path": "/a"})
            return s.session_id

    session_id = run(scenario())
    assert session_id
    initialize, *rest = proxy.seen(tag)
    assert "mcp-session-id" not in initialize["headers"]
    assert rest and all(r["headers"]["mcp-session-id"] == session_id for r in rest)
    assert "DELETE" in {r["method"] for r in rest}  # the session's end reached the upstream too


def test_modern_era_has_no_session(proxy: Proxy) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> str | None:
        async with proxy.connect("modern", headers={"x-test-run": tag}) as s:
            await s.call_tool("read_file", {"path": "/a"})
            return s.session_id

    assert run(scenario()) is None
    seen = proxy.seen(tag)
    assert seen and all(r["method"] == "POST" for r in seen)
    assert all(r["headers"]["mcp-protocol-version"] == MODERN and "mcp-session-id" not in r["headers"] for r in seen)


@pytest.mark.parametrize("era", ERAS)
def test_decision_ids_match_what_client_and_upstream_saw(proxy: Proxy, era: ProtocolEra) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> tuple[Any, Session]:
        async with proxy.connect(era, headers={"x-test-run": tag}) as s:
            await s.call_tool("read_file", {"path": "/a"})
            denied = await s.call_tool_or_error("delete_file", {"path": "/a"})
            await s.list_tools()
            return denied, s

    mark = proxy.mark()
    denied, session = run(scenario())
    lines = proxy.since(mark)
    by_id = {e["decision_id"]: e for e in lines}
    assert len(by_id) == len(lines)  # decision ids are unique

    # What the client saw: every answer from pep carries the decision's id, and it is the logged one.
    client_ids = set()
    for exchange in session.exchanges:
        decision_id = exchange.response_headers["x-pep-decision-id"]
        client_ids.add(decision_id)
        assert by_id[decision_id]["action"] == _action(exchange.method, exchange.message())
    assert isinstance(denied, McpError)
    assert by_id[denied.data["decision_id"]]["decision"] == "deny"
    assert denied.data["decision_id"] in client_ids
    # Every line is one the client saw (a GET stream cut short at the session's end may not be).
    assert {i for i, e in by_id.items() if e["action"] != "open_stream"} <= client_ids

    # What the upstream saw: pep's id on each relayed request, naming a logged allow.
    relayed = [r["headers"]["x-pep-decision-id"] for r in proxy.seen(tag) if "x-pep-decision-id" in r["headers"]]
    assert relayed and all(by_id[i]["decision"] == "allow" for i in relayed)
    assert not [i for i in relayed if by_id[i]["action"] == "list_tools"]  # lists are sent without one
    (call,) = [e for e in session.exchanges if (e.message() or {}).get("params", {}).get("name") == "read_file"]
    call_id = call.response_headers["x-pep-decision-id"]
    assert call_id in relayed and by_id[call_id]["resource"] == {"type": "Tool", "id": "read_file"}
