"""The MCP proxy's controls: the kill switch mid-session, what it refuses before deciding, and one
decision-log line for every POST it decides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pep._proto.pep.v1 import admin_pb2
from tests.harness.mcp import McpError, McpUpstream, ProtocolEra, raw_request, run, sse_messages, tool_text
from tests.harness.mcp_proxy import TIMEOUT, Proxy, is_uuid, raw_session, rpc, start_proxy
from tests.harness.waits import free_port

ERAS: list[ProtocolEra] = ["handshake", "modern"]
SMALL_BODY = 4096
BATCH = [rpc("tools/call", {"name": "delete_file", "arguments": {"path": "/x"}}, 1), rpc("ping", msg_id=2)]


@pytest.fixture(scope="module")
def module_lenient(mcp_upstream: McpUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A second pep on the same upstream: unknown methods pass on a token, bodies of 4 KiB at most."""
    proxy = start_proxy(
        tmp_path_factory.mktemp("pep-lenient"), mcp_upstream, allow_unknown_methods=True, max_body_bytes=SMALL_BODY
    )
    yield proxy
    proxy.close()


@pytest.fixture
def lenient(module_lenient: Proxy) -> Proxy:
    module_lenient.up.reset()
    return module_lenient


@pytest.fixture(scope="module")
def session(module_proxy: Proxy) -> dict[str, str]:
    """Headers of a handshake-era session opened by hand through the default pep."""
    return run(raw_session(module_proxy))


def _answer(response: Any) -> Any:
    (message,) = response.messages()
    return message


# --- the kill switch ----------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
def test_kill_switch_stops_an_agent_mid_session(proxy: Proxy, era: ProtocolEra) -> None:
    admin = proxy.admin()
    agent = admin_pb2.KILL_KIND_AGENT
    tag = uuid.uuid4().hex

    async def scenario() -> tuple[str, Any, str, str | None]:
        async with proxy.connect(era, headers={"x-test-run": tag}) as s:
            before = tool_text(await s.call_tool("read_file", {"path": "/1"}))
            admin.Disable(admin_pb2.DisableRequest(kind=agent, id="assistant", reason="incident 7"), timeout=TIMEOUT)
            try:
                denied = await s.call_tool_or_error("read_file", {"path": "/2"})
            finally:
                admin.Enable(admin_pb2.EnableRequest(kind=agent, id="assistant"), timeout=TIMEOUT)
            after = tool_text(await s.call_tool("read_file", {"path": "/3"}))
            return before, denied, after, s.session_id

    before, denied, after, session_id = run(scenario())
    assert (before, after) == ("contents of /1", "contents of /3")
    assert isinstance(denied, McpError), denied
    assert denied.code == -32003 and denied.message.startswith("agent_disabled")
    assert denied.data["reason"] == "agent_disabled"
    assert proxy.ran() == {"read_file": 2}  # /2 never ran
    line = proxy.line(denied.data["decision_id"])
    assert (line["decision"], line["reason"], line["action"]) == ("deny", "agent_disabled", "call_tool")
    assert line["agent"] == "assistant"
    if era == "handshake":  # the same session before and after
        assert session_id and {r["headers"].get("mcp-session-id") for r in proxy.seen(tag)[1:]} == {session_id}


def test_a_disabled_agent_list_never_reaches_the_upstream(proxy: Proxy, session: dict[str, str]) -> None:
    """A list is admitted (token, kill switch, delegation) before pep asks the upstream for it."""
    admin, agent = proxy.admin(), admin_pb2.KILL_KIND_AGENT
    admin.Disable(admin_pb2.DisableRequest(kind=agent, id="assistant", reason="incident 8"), timeout=TIMEOUT)
    try:
        response = run(proxy.post(rpc("tools/list", {}, 3), session))
    finally:
        admin.Enable(admin_pb2.EnableRequest(kind=agent, id="assistant"), timeout=TIMEOUT)
    assert response.status == 200
    assert response.json()["error"]["data"]["reason"] == "agent_disabled"
    assert proxy.seen() == []
    line = proxy.line(response.headers["x-pep-decision-id"])
    assert (line["action"], line["reason"]) == ("list_tools", "agent_disabled")


def test_an_agent_the_user_may_not_delegate_to_is_refused_before_the_upstream(proxy: Proxy) -> None:
    outsider = proxy.bearer(proxy.token(agent="outsider"))
    for message in (rpc("tools/list", {}, 4), rpc("ping", msg_id=5)):
        response = run(proxy.post(message, outsider))
        assert response.status == 200
        data = response.json()["error"]["data"]
        assert data["reason"] == "chain_delegation_forbidden"
        line = proxy.line(data["decision_id"])
        assert (line["decision"], line["agent"], line["on_behalf_of"]) == ("deny", "outsider", "alice")
    assert proxy.seen() == []


def test_unreachable_upstream_is_502(tmp_path_factory: pytest.TempPathFactory) -> None:
    nowhere = McpUpstream()
    nowhere.port = free_port()  # nothing listens there
    proxy = start_proxy(tmp_path_factory.mktemp("pep-nowhere"), nowhere)
    try:
        mark = proxy.mark()
        response = run(proxy.post(rpc("ping"), proxy.bearer()))
        listing = run(proxy.post(rpc("tools/list", {}, 2), proxy.bearer()))
        lines = proxy.since(mark)
    finally:
        proxy.close()
    assert (response.status, listing.status) == (502, 502)
    assert [(e["action"], e["decision"]) for e in lines] == [("ping", "allow"), ("list_tools", "allow")]


# --- refused before anything reaches the upstream ------------------------------------------------


@pytest.mark.parametrize("which", ["default", "allow_unknown_methods"])
def test_batch_is_refused(proxy: Proxy, lenient: Proxy, which: str) -> None:
    target = proxy if which == "default" else lenient
    response = run(target.post(BATCH, target.bearer()))
    assert response.status == 400
    error = response.json()["error"]
    assert error["data"]["reason"] == "invalid_request" and error["message"].startswith("invalid_request")
    assert "batch" in error["message"]
    assert target.seen() == [] and target.ran() == {}
    line = target.line(error["data"]["decision_id"])
    assert (line["decision"], line["reason"]) == ("deny", "invalid_request")


def test_unknown_method_is_refused(proxy: Proxy, session: dict[str, str]) -> None:
    response = run(proxy.post(rpc("vendor/frobnicate", {}, 5), session))
    assert response.status == 200
    message = response.json()
    assert message["id"] == 5 and message["error"]["code"] == -32003
    assert message["error"]["data"]["reason"] == "invalid_request"
    assert proxy.seen() == []


def test_unknown_method_passes_with_allow_unknown_methods(lenient: Proxy) -> None:
    session = run(raw_session(lenient))
    lenient.up.reset()
    mark = lenient.mark()
    response = run(lenient.post(rpc("vendor/frobnicate", {}, 5), session))
    (relayed,) = lenient.seen()
    assert relayed["method"] == "POST"
    assert relayed["headers"]["x-pep-decision-id"] == response.headers["x-pep-decision-id"]
    answer = _answer(response)
    assert answer["id"] == 5 and answer["error"]["code"] == -32601  # the upstream's "method not found"
    (line,) = lenient.since(mark)
    assert (line["action"], line["decision"], line["policies"]) == ("vendor/frobnicate", "allow", [])


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(rpc("tools/call", {"name": "delete_file", "arguments": {"path": "/x"}}, notify=True), id="call"),
        pytest.param(rpc("resources/read", {"uri": "file:///docs/readme.md"}, notify=True), id="read"),
        pytest.param(rpc("tools/list", {}, notify=True), id="list"),
    ],
)
@pytest.mark.parametrize("which", ["default", "allow_unknown_methods"])
def test_decided_method_without_id_is_never_token_only(
    proxy: Proxy, lenient: Proxy, which: str, message: dict[str, Any]
) -> None:
    """A tools/call (resources/read, a list) sent as a notification is no "unknown method": like a
    batch it would reach the upstream on a token alone, past every policy, so it is refused even
    with allow_unknown_methods."""
    target = proxy if which == "default" else lenient
    session = run(raw_session(target))
    target.up.reset()
    mark = target.mark()
    response = run(target.post(message, session))
    (line,) = target.since(mark)
    assert (line["decision"], line["reason"]) == ("deny", "invalid_request"), line
    assert response.status == 400
    assert target.seen() == [] and target.ran() == {}


def test_notification_passes(proxy: Proxy, session: dict[str, str]) -> None:
    mark = proxy.mark()
    response = run(proxy.post(rpc("notifications/cancelled", {"requestId": 999}, notify=True), session))
    assert response.status == 202 and response.body == b""
    (relayed,) = proxy.seen()
    assert relayed["headers"]["mcp-session-id"] == session["mcp-session-id"]
    (line,) = proxy.since(mark)
    assert (line["action"], line["decision"]) == ("notifications/cancelled", "allow")
    assert line["decision_id"] == relayed["headers"]["x-pep-decision-id"] == response.headers["x-pep-decision-id"]


def test_get_without_token_is_401(proxy: Proxy) -> None:
    response = run(proxy.request("GET", headers={"accept": "text/event-stream", "content-type": ""}))
    assert response.status == 401
    assert f'Bearer resource_metadata="{proxy.resource_metadata}"' in response.headers["www-authenticate"]
    assert response.json()["error"]["data"]["reason"] == "token_missing"
    line = proxy.line(response.headers["x-pep-decision-id"])
    assert (line["action"], line["reason"]) == ("open_stream", "token_missing")
    assert proxy.seen() == []


def test_delete_with_a_token_is_relayed(proxy: Proxy) -> None:
    session = run(raw_session(proxy))
    proxy.up.reset()
    response = run(proxy.request("DELETE", headers={**session, "content-type": ""}))
    assert response.status == 200
    (relayed,) = proxy.seen()
    assert relayed["method"] == "DELETE" and relayed["headers"]["mcp-session-id"] == session["mcp-session-id"]
    assert "authorization" not in relayed["headers"]
    line = proxy.line(response.headers["x-pep-decision-id"])
    assert (line["action"], line["decision"]) == ("end_session", "allow")
    # The session is gone upstream: a call on it is the upstream's 404.
    gone = run(proxy.post(rpc("tools/call", {"name": "read_file", "arguments": {"path": "/a"}}, 2), session))
    assert gone.status == 404 and proxy.ran() == {}


@pytest.mark.parametrize(("method", "path"), [("POST", "/other"), ("GET", "/mcp/extra"), ("GET", "/"), ("POST", "/")])
def test_other_paths_are_404(proxy: Proxy, method: str, path: str) -> None:
    mark = proxy.mark()
    response = run(proxy.request(method, rpc("ping"), proxy.bearer(), path=path))
    assert response.status == 404
    assert proxy.seen() == [] and proxy.since(mark) == []


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_other_methods_are_405(proxy: Proxy, method: str) -> None:
    mark = proxy.mark()
    response = run(proxy.request(method, rpc("ping"), proxy.bearer()))
    assert response.status == 405 and response.headers["allow"] == "POST, GET, DELETE"
    assert proxy.seen() == [] and proxy.since(mark) == []


def test_text_plain_post_is_415(proxy: Proxy, session: dict[str, str]) -> None:
    mark = proxy.mark()
    response = run(proxy.post(rpc("ping"), {**session, "content-type": "text/plain"}))
    assert response.status == 415
    assert proxy.seen() == [] and proxy.since(mark) == []


def test_body_over_max_body_bytes_is_413(lenient: Proxy) -> None:
    session = run(raw_session(lenient))
    lenient.up.reset()

    def ping(size: int) -> bytes:
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"%s"}}'
        return body % (b"x" * (size - len(body % b"")))

    mark = lenient.mark()
    assert len(ping(SMALL_BODY)) == SMALL_BODY
    at_limit = run(lenient.post(ping(SMALL_BODY), session))
    assert at_limit.status == 200 and _answer(at_limit)["result"] == {}
    assert len(lenient.since(mark)) == 1 and len(lenient.seen()) == 1
    mark = lenient.mark()
    over = run(lenient.post(ping(SMALL_BODY + 1), session))
    assert over.status == 413
    over = run(lenient.post(ping(4 * SMALL_BODY), session))
    assert over.status == 413
    assert len(lenient.seen()) == 1 and lenient.since(mark) == []


# --- one decision-log line per decided POST -----------------------------------------------------

_CALL = {"name": "read_file", "arguments": {"path": "/a"}}
_PROMPT = rpc("prompts/get", {"name": "summarize", "arguments": {"topic": "x"}})
_CANCEL = rpc("notifications/cancelled", {"requestId": 1}, notify=True)
ONE_LINE = [
    # (id, body, credentials: "session" | "none" | "expired", status, action, decision)
    ("ping", rpc("ping"), "session", 200, "ping", "allow"),
    ("allowed-call", rpc("tools/call", _CALL), "session", 200, "call_tool", "allow"),
    ("denied-call", rpc("tools/call", {"name": "delete_file", "arguments": {}}), "session", 200, "call_tool", "deny"),
    ("list", rpc("tools/list", {}), "session", 200, "list_tools", "allow"),
    ("read", rpc("resources/read", {"uri": "file:///docs/readme.md"}), "session", 200, "read_resource", "allow"),
    ("prompt", _PROMPT, "session", 200, "get_prompt", "allow"),
    ("notification", _CANCEL, "session", 202, "notifications/cancelled", "allow"),
    ("client-answer", {"jsonrpc": "2.0", "id": "s-1", "result": {}}, "session", 202, "respond", "allow"),
    ("batch", BATCH, "session", 400, "invalid_message", "deny"),
    ("unknown-method", rpc("vendor/frobnicate"), "session", 200, "vendor/frobnicate", "deny"),
    ("invalid-json", b'{"jsonrpc": "2.0", "id": 1,', "session", 400, "invalid_message", "deny"),
    ("not-jsonrpc-2", {"id": 1, "method": "ping"}, "session", 400, "invalid_message", "deny"),
    ("no-token", rpc("ping"), "none", 401, "ping", "deny"),
    ("expired-token", rpc("tools/call", _CALL), "expired", 401, "call_tool", "deny"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "credentials", "status", "action", "decision"), [pytest.param(*c[1:], id=c[0]) for c in ONE_LINE]
)
def test_every_decided_post_leaves_one_line(
    proxy: Proxy, session: dict[str, str], body: Any, credentials: str, status: int, action: str, decision: str
) -> None:
    headers = {
        "session": session,
        "none": {"mcp-session-id": session["mcp-session-id"]},
        "expired": {**session, **proxy.bearer(proxy.token(now=0, ttl_seconds=60))},
    }[credentials]
    mark = proxy.mark()
    response = run(proxy.post(body, headers))
    assert response.status == status, response
    (line,) = proxy.since(mark)
    assert (line["action"], line["decision"]) == (action, decision)
    assert line["decision_id"] == response.headers["x-pep-decision-id"]
    relayed = proxy.seen()
    if decision == "allow":
        (request,) = relayed
        assert request["headers"].get("x-pep-decision-id") in (None, line["decision_id"])
    else:
        assert relayed == [] and proxy.ran() == {}
        if response.headers["content-type"].startswith("application/json"):
            data = response.json()["error"]["data"]
            assert data["decision_id"] == line["decision_id"] and is_uuid(data["decision_id"])
    if action == "call_tool" and decision == "allow":
        assert proxy.ran() == {"read_file": 1}
        assert sse_messages(response.body)[-1]["result"]["content"][0]["text"] == "contents of /a"


def test_a_session_belongs_to_the_principal_that_opened_it(proxy: Proxy, session: dict[str, str]) -> None:
    """Another agent, or the same agent for another user, naming alice's session is refused before the upstream."""
    for token in (proxy.token(agent="outsider"), proxy.token(sub="bob")):
        borrowed = {**session, **proxy.bearer(token)}
        for message in (
            rpc("tools/call", {"name": "read_file", "arguments": {"path": "/a"}}, 6),
            rpc("ping", msg_id=7),
        ):
            response = run(proxy.post(message, borrowed))
            data = response.json()["error"]["data"]
            assert data["reason"] == "invalid_request"
            assert "another agent or for another user" in response.json()["error"]["message"]
        stream = run(raw_request("GET", proxy.url, headers={**borrowed, "accept": "text/event-stream"}))
        assert stream.status == 403
    assert proxy.seen() == [] and proxy.ran() == {}
    # The owner's own next message still goes through.
    own = run(proxy.post(rpc("tools/call", {"name": "read_file", "arguments": {"path": "/a"}}, 8), session))
    assert own.status == 200 and "error" not in own.messages()[-1]
    assert proxy.ran() == {"read_file": 1}
