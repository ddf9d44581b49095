"""The MCP proxy's front door: tokens, the protected resource metadata, DPoP, no token passthrough."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from pep.config.sections import TokenConfig
from tests.harness.mcp import DpopSigner, ProtocolEra, RawResponse, run, tool_text
from tests.harness.mcp_estate import RESOURCE
from tests.harness.mcp_proxy import AUTHORIZATION_SERVERS, HANDSHAKE, METADATA, Proxy, is_uuid, rpc
from tests.harness.server import AUDIENCE

ERAS: list[ProtocolEra] = ["handshake", "modern"]
INITIALIZE = rpc(
    "initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
)


def _refused(proxy: Proxy, response: RawResponse, reason: str) -> dict[str, Any]:
    """A 401 from pep with its JSON-RPC error body; nothing reached the upstream. Returns the log line."""
    assert response.status == 401, response
    body = response.json()
    assert body["error"]["code"] == -32003 and body["error"]["message"].startswith(reason)
    assert body["error"]["data"]["reason"] == reason and is_uuid(body["error"]["data"]["decision_id"])
    assert response.headers["x-pep-decision-id"] == body["error"]["data"]["decision_id"]
    assert proxy.seen() == [] and proxy.ran() == {}
    line = proxy.line(body["error"]["data"]["decision_id"])
    assert (line["decision"], line["reason"]) == ("deny", reason)
    return line


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    return ".".join([header, payload, signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]])


def test_no_token_is_challenged_with_the_metadata_url(proxy: Proxy) -> None:
    response = run(proxy.post(INITIALIZE))
    _refused(proxy, response, "token_missing")
    challenge = response.headers["www-authenticate"]
    assert f'Bearer resource_metadata="{proxy.public_url}{METADATA}/mcp"' in challenge
    assert proxy.public_url == proxy.base  # no public_url configured: the bound listener
    assert "error=" not in challenge  # no credentials, no error code (RFC 6750 3.1)
    assert 'DPoP resource_metadata="' in challenge  # DPoP is offered too


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda p: _tampered(p.token()), "token_signature_invalid", id="tampered-signature"),
        pytest.param(
            lambda p: p.token(now=time.time() - 3600, ttl_seconds=300), "token_expired", id="expired-an-hour-ago"
        ),
        pytest.param(lambda p: "not-a-jwt", "token_malformed", id="not-a-jwt"),
    ],
)
def test_bad_token_is_invalid_token(proxy: Proxy, make: Any, reason: str) -> None:
    response = run(proxy.post(INITIALIZE, proxy.bearer(make(proxy))))
    _refused(proxy, response, reason)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{proxy.resource_metadata}"')
    assert 'error="invalid_token"' in challenge


def test_grpc_audience_is_not_the_resource(proxy: Proxy) -> None:
    grpc_token = proxy.token(audience=AUDIENCE)
    response = run(proxy.post(INITIALIZE, proxy.bearer(grpc_token)))
    _refused(proxy, response, "token_audience_invalid")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # The other way round: the issuer's `audiences` govern gRPC, and the MCP resource is not among them.
    mcp_token = proxy.token()
    assert proxy.h.authorize(mcp_token, "call_tool", ("Tool", "read_file")).reason == "token_audience_invalid"
    assert not proxy.h.authorize(grpc_token, "call_tool", ("Tool", "read_file")).reason.startswith("token_")


@pytest.mark.parametrize("path", [METADATA, f"{METADATA}/mcp"])
def test_protected_resource_metadata(proxy: Proxy, path: str) -> None:
    response = run(proxy.request("GET", path=path))
    assert response.status == 200 and response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["resource"] == RESOURCE
    assert doc["authorization_servers"] == AUTHORIZATION_SERVERS
    assert doc["bearer_methods_supported"] == ["header"]
    assert doc["dpop_signing_alg_values_supported"] == list(TokenConfig().dpop_algorithms)
    assert isinstance(doc.get("resource_name"), str)
    assert run(proxy.request("POST", {}, path=path)).status == 405
    assert proxy.seen() == []


@pytest.mark.parametrize("era", ERAS)
def test_no_token_passthrough_and_pep_sets_identity(proxy: Proxy, era: ProtocolEra) -> None:
    tag = uuid.uuid4().hex
    forged = {
        "x-test-run": tag,
        "x-pep-agent": "evil",
        "x-pep-on-behalf-of": "mallory",
        "x-pep-decision-id": "forged",
        "x-forwarded-client-cert": "Hash=deadbeef",
    }

    async def scenario() -> str:
        async with proxy.connect(era, headers=forged) as s:
            await s.list_tools()
            return tool_text(await s.call_tool("read_file", {"path": "/a"}))

    mark = proxy.mark()
    assert run(scenario()) == "contents of /a"
    allowed = {e["decision_id"] for e in proxy.since(mark) if e["decision"] == "allow"}
    seen = proxy.seen(tag)
    assert seen
    for r in seen:
        headers = r["headers"]
        assert not {"authorization", "dpop", "x-forwarded-client-cert"} & set(headers), headers
        assert headers["x-pep-agent"] == "assistant"
        assert headers["x-pep-on-behalf-of"] == "alice"
        assert headers.get("x-pep-decision-id", "") != "forged"
    relayed = [r["headers"]["x-pep-decision-id"] for r in seen if "x-pep-decision-id" in r["headers"]]
    assert relayed and set(relayed) <= allowed


@pytest.mark.parametrize("era", ERAS)
def test_dpop_bound_token_through_the_sdk(proxy: Proxy, era: ProtocolEra) -> None:
    tag, signer = uuid.uuid4().hex, DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)

    async def scenario() -> str:
        async with proxy.connect(era, token=token, dpop=signer, headers={"x-test-run": tag}) as s:
            return tool_text(await s.call_tool("read_file", {"path": "/a"}))

    mark = proxy.mark()
    assert run(scenario()) == "contents of /a"
    assert proxy.ran() == {"read_file": 1}
    assert len(set(signer.proofs)) == len(signer.proofs) >= 1  # a fresh proof per HTTP request
    lines = proxy.since(mark)
    (call,) = [e for e in lines if e["action"] == "call_tool"]
    assert (call["decision"], call["binding"]) == ("allow", "dpop")
    assert all(e["decision"] == "allow" for e in lines)
    seen = proxy.seen(tag)
    assert seen and all(not {"authorization", "dpop"} & set(r["headers"]) for r in seen)


def test_dpop_bound_token_as_bearer_is_refused(proxy: Proxy) -> None:
    signer = DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)
    response = run(proxy.post(INITIALIZE, proxy.bearer(token)))
    _refused(proxy, response, "pop_binding_mismatch")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_dpop_scheme_without_a_proof_is_refused(proxy: Proxy) -> None:
    signer = DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)
    response = run(proxy.post(INITIALIZE, {"authorization": f"DPoP {token}"}))
    _refused(proxy, response, "dpop_proof_missing")


def test_dpop_proof_for_another_url_is_refused(proxy: Proxy) -> None:
    signer = DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)
    proof = signer.proof("POST", proxy.up.url, token)  # the upstream's URL, not pep's
    response = run(proxy.post(INITIALIZE, {"authorization": f"DPoP {token}", "dpop": proof}))
    _refused(proxy, response, "dpop_proof_invalid")


def test_replayed_dpop_proof_is_refused(proxy: Proxy) -> None:
    signer = DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)
    headers = {"authorization": f"DPoP {token}", "dpop": signer.proof("POST", proxy.url, token)}
    first = run(proxy.post(INITIALIZE, headers))
    assert first.status == 200 and first.headers["mcp-session-id"]
    assert len(proxy.seen()) == 1
    proxy.up.reset()
    second = run(proxy.post(INITIALIZE, headers))
    _refused(proxy, second, "dpop_replay")
    assert 'error="invalid_dpop_proof"' in second.headers["www-authenticate"]
