"""Every handshake-era protocol version through the proxy, and mTLS-bound tokens behind a TLS proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from tests.harness.certs import make_cert
from tests.harness.mcp import McpUpstream, run
from tests.harness.mcp_proxy import MODERN, Proxy, modern_meta, rpc, start_proxy


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
def test_each_handshake_version_opens_a_session_and_lists_filtered(proxy: Proxy, version: str) -> None:
    init = rpc(
        "initialize",
        {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
        msg_id=0,
    )
    opened = run(proxy.post(init, proxy.bearer()))
    assert opened.status == 200
    assert opened.messages()[-1]["result"]["protocolVersion"] == version
    session = {**proxy.bearer(), "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": version}
    assert run(proxy.post(rpc("notifications/initialized", notify=True), session)).status == 202
    listed = run(proxy.post(rpc("tools/list", {}, 1), session))
    names = [t["name"] for t in listed.messages()[-1]["result"]["tools"]]
    assert "read_file" in names and "delete_file" not in names


@pytest.fixture(scope="module")
def xfcc_proxy(mcp_upstream: McpUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path_factory.mktemp("pep-mcp-xfcc"), mcp_upstream, trust_xfcc=True)
    yield proxy
    proxy.close()


def test_an_mtls_bound_token_needs_the_forwarded_certificate(xfcc_proxy: Proxy, proxy: Proxy) -> None:
    cert, other = make_cert("assistant"), make_cert("mallory")
    token = xfcc_proxy.token(x5t_s256=cert.x5t)
    call = rpc("tools/call", {"name": "read_file", "arguments": {"path": "/home/a"}}, 3)
    modern = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "read_file"}
    call["params"]["_meta"] = modern_meta()

    def send(target: Proxy, cert_hash: str | None) -> tuple[int, dict]:
        headers = {**target.bearer(token), **modern}
        if cert_hash is not None:
            headers["x-forwarded-client-cert"] = f"Hash={cert_hash}"
        response = run(target.post(call, headers))
        return response.status, response.json() if response.status != 200 else response.messages()[-1]

    status, body = send(xfcc_proxy, cert.hex)
    assert status == 200 and "error" not in body, body
    assert send(xfcc_proxy, other.hex)[0] == 401
    assert send(xfcc_proxy, None)[0] == 401
    # Without trust_xfcc the header proves nothing.
    assert send(proxy, cert.hex)[0] == 401
