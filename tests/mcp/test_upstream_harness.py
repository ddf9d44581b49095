"""The MCP harness against the upstream directly (no pep in between): the SDK client in both eras."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mcp_types import TextResourceContents

from pep.config.sections import TokenConfig
from pep.tokens.dpop import DPoPVerifier
from tests.harness.mcp import (
    DpopSigner,
    McpError,
    McpUpstream,
    ProtocolEra,
    Session,
    connect,
    raw_post,
    run,
    sse_messages,
    tool_text,
)

ERAS: list[ProtocolEra] = ["handshake", "modern"]
TOOLS = {"read_file", "send_payment", "delete_file", "count_slowly"}
README = "file:///docs/readme.md"


@pytest.fixture(scope="module")
def upstream() -> Iterator[McpUpstream]:
    with McpUpstream() as up:
        yield up


def _delta(up: McpUpstream, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in up.counts().items() if v != before.get(k, 0)}


def _tagged(up: McpUpstream, tag: str) -> list[dict[str, Any]]:
    """The requests the upstream recorded that carry `x-test-run: tag`."""
    return [r for r in up.headers() if r["headers"].get("x-test-run") == tag]


@pytest.mark.parametrize("era", [*ERAS, "auto"])
def test_lists_tools_in_each_era(upstream: McpUpstream, era: ProtocolEra) -> None:
    async def scenario() -> tuple[list[str], str, str | None]:
        async with connect(upstream.url, protocol=era) as s:
            return await s.list_tools(), s.protocol_version, s.session_id

    names, version, session_id = run(scenario())
    assert set(names) == TOOLS
    if era == "handshake":
        assert version == "2025-11-25" and session_id
    else:  # "auto" probes server/discover and lands on the modern era
        assert version == "2026-07-28" and session_id is None


@pytest.mark.parametrize("era", ERAS)
def test_each_tool_runs_once_per_call(upstream: McpUpstream, era: ProtocolEra) -> None:
    async def scenario() -> list[str]:
        async with connect(upstream.url, protocol=era) as s:
            results = [
                await s.call_tool("read_file", {"path": "/etc/motd"}),
                await s.call_tool("send_payment", {"amount": 12.5, "to": "bob"}),
                await s.call_tool("delete_file", {"path": "/tmp/x"}),
                await s.call_tool("count_slowly", {"n": 1}),
            ]
            assert not any(r.is_error for r in results)
            return [tool_text(r) for r in results]

    before = upstream.counts()
    texts = run(scenario())
    assert texts == ["contents of /etc/motd", "sent 12.5 to bob", "deleted /tmp/x", "counted 1"]
    assert _delta(upstream, before) == {"read_file": 1, "send_payment": 1, "delete_file": 1, "count_slowly": 1}


@pytest.mark.parametrize("era", ERAS)
def test_progress_notifications_stream_over_sse(upstream: McpUpstream, era: ProtocolEra) -> None:
    async def scenario() -> tuple[str, list[Any], Session]:
        progress: list[Any] = []
        async with connect(upstream.url, protocol=era) as s:
            result = await s.call_tool("count_slowly", {"n": 3}, progress=progress)
            return tool_text(result), progress, s

    text, progress, session = run(scenario())
    assert text == "counted 3"
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    (call,) = [e for e in session.exchanges if (e.message() or {}).get("method") == "tools/call"]
    assert call.response_headers["content-type"].startswith("text/event-stream")
    assert call.message()["params"]["_meta"]["progressToken"] is not None


@pytest.mark.parametrize("era", ERAS)
def test_resource_and_prompt(upstream: McpUpstream, era: ProtocolEra) -> None:
    async def scenario() -> tuple[str, str]:
        async with connect(upstream.url, protocol=era) as s:
            contents = (await s.read_resource(README)).contents
            assert isinstance(contents[0], TextResourceContents)
            prompt = await s.get_prompt("summarize", {"topic": "pep"})
            return contents[0].text, prompt.messages[0].content.text  # type: ignore[union-attr]

    before = upstream.counts()
    readme, prompt = run(scenario())
    assert readme.startswith("# pep test upstream")
    assert prompt == "Summarize pep in three sentences."
    assert _delta(upstream, before) == {f"resource:{README}": 1, "prompt:summarize": 1}


@pytest.mark.parametrize("era", ERAS)
def test_jsonrpc_errors_raise_mcp_error(upstream: McpUpstream, era: ProtocolEra) -> None:
    async def scenario() -> tuple[McpError, Any]:
        async with connect(upstream.url, protocol=era) as s:
            with pytest.raises(McpError) as caught:
                await s.read_resource("file:///nope")
            # An unknown tool is a tool error (isError result), not a JSON-RPC error.
            return caught.value, await s.call_tool_or_error("no_such_tool", {})

    error, unknown_tool = run(scenario())
    assert (error.code, error.message, error.data) == (
        -32602,
        "Unknown resource: file:///nope",
        {"uri": "file:///nope"},
    )
    assert not isinstance(unknown_tool, McpError) and unknown_tool.is_error


def test_handshake_headers_recorded(upstream: McpUpstream) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> str | None:
        async with connect(upstream.url, token="tok-1", headers={"x-test-run": tag}) as s:
            await s.call_tool("read_file", {"path": "/a"})
            return s.session_id

    session_id = run(scenario())
    seen = _tagged(upstream, tag)
    assert seen and all(r["headers"]["authorization"] == "Bearer tok-1" for r in seen)
    assert all(r["path"] == "/mcp" for r in seen)
    initialize, *rest = seen
    assert "mcp-session-id" not in initialize["headers"] and "mcp-protocol-version" not in initialize["headers"]
    assert rest and all(r["headers"]["mcp-session-id"] == session_id for r in rest)
    assert all(r["headers"]["mcp-protocol-version"] == "2025-11-25" for r in rest)
    assert {r["method"] for r in seen} >= {"POST", "DELETE"}  # DELETE ends the session on close


def test_modern_headers_recorded(upstream: McpUpstream) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> None:
        async with connect(upstream.url, token="tok-2", headers={"x-test-run": tag}, protocol="modern") as s:
            await s.list_tools()
            await s.call_tool("delete_file", {"path": "/b"})

    run(scenario())
    seen = _tagged(upstream, tag)
    assert [r["method"] for r in seen] == ["POST", "POST"]  # no handshake, no GET stream, no DELETE
    for r in seen:
        assert r["headers"]["authorization"] == "Bearer tok-2"
        assert r["headers"]["mcp-protocol-version"] == "2026-07-28"
        assert "mcp-session-id" not in r["headers"]
    assert [(r["headers"]["mcp-method"], r["headers"].get("mcp-name")) for r in seen] == [
        ("tools/list", None),
        ("tools/call", "delete_file"),
    ]


@pytest.mark.parametrize("era", ERAS)
def test_dpop_fresh_proof_on_every_request(upstream: McpUpstream, era: ProtocolEra) -> None:
    tag, signer, token = uuid.uuid4().hex, DpopSigner(), "an-opaque-access-token"

    async def scenario() -> None:
        async with connect(upstream.url, token=token, dpop=signer, headers={"x-test-run": tag}, protocol=era) as s:
            await s.call_tool("read_file", {"path": "/c"})

    run(scenario())
    seen = _tagged(upstream, tag)
    assert seen and len({r["headers"]["dpop"] for r in seen}) == len(seen)
    verifier = DPoPVerifier(TokenConfig())  # pep's own check, replay cache included
    for r in seen:
        assert r["headers"]["authorization"] == f"DPoP {token}"
        verifier.check(
            r["headers"]["dpop"],
            access_token=token,
            method=r["method"],
            uri=upstream.url,
            jkt=signer.jkt,
            now=time.time(),
        )


def test_stateless_upstream() -> None:
    with McpUpstream(stateless=True) as up:

        async def scenario() -> tuple[str | None, str]:
            async with connect(up.url, headers={"x-test-run": "stateless"}) as s:
                return s.session_id, tool_text(await s.call_tool("read_file", {"path": "/d"}))

        session_id, text = run(scenario())
        seen = _tagged(up, "stateless")
        assert session_id is None and text == "contents of /d"
        assert up.counts()["read_file"] == 1
        assert {r["method"] for r in seen} == {"POST"}  # no GET stream, nothing to DELETE
        assert not any("mcp-session-id" in r["headers"] for r in seen)


def test_json_response_upstream() -> None:
    with McpUpstream(json_response=True) as up:

        async def scenario(era: ProtocolEra) -> tuple[list[Any], Session]:
            progress: list[Any] = []
            async with connect(up.url, protocol=era) as s:
                assert tool_text(await s.call_tool("count_slowly", {"n": 2}, progress=progress)) == "counted 2"
                return progress, s

        for era in ERAS:
            progress, session = run(scenario(era))
            posts = [e for e in session.exchanges if e.method == "POST" and e.status == 200]
            assert posts and all(e.response_headers["content-type"] == "application/json" for e in posts)
            assert progress == []  # JSON responses have no room for notifications: the SDK drops them
        assert up.counts()["count_slowly"] == 2


def test_raw_post(upstream: McpUpstream) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    status, headers, body = run(raw_post(upstream.url, initialize))
    assert status == 200 and headers["content-type"].startswith("text/event-stream") and headers["mcp-session-id"]
    (reply,) = sse_messages(body)
    assert reply["id"] == 1 and reply["result"]["protocolVersion"] == "2025-11-25"

    listing: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {}}}
    modern = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    response = run(raw_post(upstream.url, listing, modern))  # envelope keys missing from _meta
    assert response.status == 400 and response.json()["error"]["code"] == -32602

    listing["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    response = run(raw_post(upstream.url, listing, modern))
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    assert {t["name"] for t in response.messages()[0]["result"]["tools"]} == TOOLS
