"""DPoP server nonces at the MCP proxy (RFC 9449 9): a proof without the nonce is a 401 with the
`use_dpop_nonce` challenge and `DPoP-Nonce`; the retry with it reaches the upstream, and the relayed
answer carries `DPoP-Nonce` too. Raw HTTP to a real pep in front of the real SDK upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pep.dev import tokens as devtoken
from tests.harness.mcp import DpopSigner, McpUpstream, run
from tests.harness.mcp_estate import write_mcp_estate
from tests.harness.mcp_proxy import HANDSHAKE, Proxy, is_uuid, mcp_section, rpc
from tests.harness.server import ISSUER, start_pep

INITIALIZE = rpc(
    "initialize", {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
)


@pytest.fixture(scope="module")
def nonce_proxy(mcp_upstream: McpUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("pep-mcp-nonce")
    _, jwks = devtoken.ensure_dev_keys(str(root / "keys"))
    issuer = {
        "issuer": ISSUER,
        "audiences": ["pep-test"],
        "jwks_file": jwks,
        "algorithms": ["ES256"],
        "dpop_nonce": True,
    }
    h = start_pep(root, write_mcp_estate(root / "policies"), mcp=mcp_section(mcp_upstream.url), issuers=[issuer])
    proxy = Proxy(h, mcp_upstream, root)
    yield proxy
    proxy.close()


def test_no_nonce_is_a_use_dpop_nonce_challenge_and_the_retry_passes(nonce_proxy: Proxy) -> None:
    proxy = nonce_proxy
    proxy.up.reset()
    signer = DpopSigner()
    token = proxy.token(dpop_jkt=signer.jkt)
    first = run(
        proxy.post(INITIALIZE, {"authorization": f"DPoP {token}", "dpop": signer.proof("POST", proxy.url, token)})
    )
    assert first.status == 401, first
    body = first.json()
    assert body["error"]["data"]["reason"] == "dpop_nonce_required" and is_uuid(body["error"]["data"]["decision_id"])
    challenge = first.headers["www-authenticate"]
    assert challenge.startswith(f'DPoP resource_metadata="{proxy.resource_metadata}", error="use_dpop_nonce"')
    assert 'error_description="Resource server requires nonce in DPoP proof"' in challenge
    nonce = first.headers["dpop-nonce"]
    assert len(nonce) == 32 and proxy.seen() == []
    proof = devtoken.mint_dpop_proof(signer.key, signer.jwk, htm="POST", htu=proxy.url, access_token=token, nonce=nonce)
    second = run(proxy.post(INITIALIZE, {"authorization": f"DPoP {token}", "dpop": proof}))
    assert second.status == 200 and second.headers["mcp-session-id"], second
    assert second.headers["dpop-nonce"] == nonce
    assert len(proxy.seen()) == 1
    line = proxy.line(second.headers["x-pep-decision-id"])
    assert (line["decision"], line["binding"]) == ("allow", "dpop")
    assert nonce not in proxy.h.log_path.read_text()
