"""pep's MCP proxy under test: a real pep in front of a real SDK upstream (tests/harness/mcp.py).

- `start_proxy(root, upstream, **mcp)`: a pep over the MCP estate (tests/harness/mcp_estate.py) whose
  `mcp` listener fronts `upstream`; returns a `Proxy`.
- `Proxy`: the proxy's URLs, tokens for it, the upstream's counters, the decision log read
  exactly (`mark()` / `since(mark)`), an SDK session (`connect`) and raw HTTP (`post`, `request`).
- `raw_session(proxy)`: a handshake-era session opened by hand (initialize + initialized),
  for raw messages the upstream will answer.
- `GzipUpstream`: the same upstream behind Starlette's GZipMiddleware (a server that compresses).

Every wait is bounded by `TIMEOUT` (env PEP_TEST_MCP_TIMEOUT, default 30 s); no test asserts
on how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pep._proto.pep.v1 import admin_pb2_grpc
from tests.harness.decision_log import read_entries
from tests.harness.mcp import (
    REPO_ROOT,
    DpopSigner,
    McpUpstream,
    ProtocolEra,
    RawResponse,
    Session,
    connect,
    raw_request,
)
from tests.harness.mcp_estate import RESOURCE, SERVER_ID, write_mcp_estate
from tests.harness.server import Harness, request, start_pep, stop_pep
from tests.harness.waits import free_port

TIMEOUT = float(os.environ.get("PEP_TEST_MCP_TIMEOUT", "30"))
AUTHORIZATION_SERVERS = ["https://idp.test"]
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
METADATA = "/.well-known/oauth-protected-resource"


def mcp_section(upstream_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "upstream": upstream_url,
        "resource": RESOURCE,
        "server_id": SERVER_ID,
        "authorization_servers": AUTHORIZATION_SERVERS,
        **extra,
    }


def modern_meta() -> dict[str, Any]:
    """The `_meta` envelope a modern-era (2026-07-28) request carries in its params."""
    return {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def rpc(method: str, params: Mapping[str, Any] | None = None, msg_id: Any = 1, *, notify: bool = False) -> dict:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if not notify:
        message["id"] = msg_id
    if params is not None:
        message["params"] = dict(params)
    return message


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@dataclass
class Proxy:
    """One pep (`h`) with its MCP listener in front of `up`."""

    h: Harness
    up: McpUpstream
    root: Path
    _sentinels: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"http://{self.h.server.mcp_address}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def public_url(self) -> str:
        return str(self.h.server.mcp.public_url)  # type: ignore[union-attr]

    @property
    def resource_metadata(self) -> str:
        return f"{self.public_url}{METADATA}/mcp"

    def admin(self) -> admin_pb2_grpc.AdminStub:
        import grpc

        return admin_pb2_grpc.AdminStub(grpc.insecure_channel(self.h.server.admin_address))

    # --- tokens ---------------------------------------------------------------------------

    def token(self, sub: str = "alice", agent: str = "assistant", **kw: Any) -> str:
        """A token for the MCP resource: `agent` acting for user `sub`."""
        kw.setdefault("audience", RESOURCE)
        return self.h.token(sub=sub, act_chain=(agent,), **kw)

    def bearer(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or self.token()}"}

    # --- the upstream ---------------------------------------------------------------------

    def ran(self) -> dict[str, int]:
        """What ran upstream since the last reset (non-zero counters only)."""
        return {k: v for k, v in self.up.counts().items() if v}

    def seen(self, tag: str | None = None) -> list[dict[str, Any]]:
        """The requests the upstream recorded (those tagged `x-test-run: tag` when given)."""
        got = self.up.headers()
        return got if tag is None else [r for r in got if r["headers"].get("x-test-run") == tag]

    # --- the decision log -----------------------------------------------------------------

    def _flush(self) -> list[dict[str, Any]]:
        """Every decision line so far: a sentinel decision is made over gRPC and, the log being one
        FIFO queue with one writer, everything decided before it is written once it is."""
        sentinel = self.h.stub.Authorize(request("sentinel"), timeout=TIMEOUT).decision_id
        self._sentinels.add(sentinel)
        deadline = time.monotonic() + TIMEOUT
        while True:
            lines = [e for e in read_entries(self.h.log_path) if "event" not in e]
            if any(e["decision_id"] == sentinel for e in lines) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert any(e["decision_id"] == sentinel for e in lines), "the decision log did not catch up"
        return [e for e in lines if e["decision_id"] not in self._sentinels]

    def mark(self) -> int:
        return len(self._flush())

    def since(self, mark: int) -> list[dict[str, Any]]:
        """The decision lines written after `mark()` (gRPC sentinels left out)."""
        return self._flush()[mark:]

    def line(self, decision_id: str) -> dict[str, Any]:
        found = [e for e in self._flush() if e["decision_id"] == decision_id]
        assert len(found) == 1, f"{len(found)} log lines for decision {decision_id}"
        return found[0]

    # --- clients --------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(
        self,
        protocol: ProtocolEra,
        *,
        token: str | None = None,
        dpop: DpopSigner | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Session]:
        async with connect(
            self.url,
            token=token or self.token(),
            dpop=dpop,
            headers=headers,
            protocol=protocol,
            timeout=TIMEOUT,
        ) as session:
            yield session

    async def request(
        self,
        method: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        path: str = "/mcp",
    ) -> RawResponse:
        return await raw_request(method, self.base + path, body, headers, timeout=TIMEOUT)

    async def post(self, body: Any, headers: Mapping[str, str] | None = None, *, path: str = "/mcp") -> RawResponse:
        return await self.request("POST", body, headers, path=path)

    def close(self) -> None:
        stop_pep(self.h)


def start_proxy(root: Path, up: McpUpstream, **mcp: Any) -> Proxy:
    root.mkdir(parents=True, exist_ok=True)
    h = start_pep(root, write_mcp_estate(root / "policies"), mcp=mcp_section(up.url, **mcp))
    return Proxy(h, up, root)


async def raw_session(proxy: Proxy, token: str | None = None) -> dict[str, str]:
    """Open a handshake-era session through the proxy by hand; the headers later requests need."""
    auth = proxy.bearer(token)
    init = rpc(
        "initialize",
        {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
        msg_id=0,
    )
    response = await proxy.post(init, auth)
    assert response.status == 200, response
    session = {**auth, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": HANDSHAKE}
    initialized = await proxy.post(rpc("notifications/initialized", notify=True), session)
    assert initialized.status == 202, initialized
    return session


# --- an upstream that compresses ---------------------------------------------------------------

_GZIP_MAIN = """
import sys, uvicorn
from starlette.middleware.gzip import GZipMiddleware
from tests.harness.mcp_upstream import build_app
app = GZipMiddleware(build_app(stateless=False, json_response=False), minimum_size=200)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=2)
"""


class GzipUpstream(McpUpstream):
    """`tests.harness.mcp_upstream` wrapped in Starlette's GZipMiddleware: it gzips every answer of
    200 bytes or more to a client whose Accept-Encoding names gzip (SSE streams excepted)."""

    def start(self) -> GzipUpstream:
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-c", _GZIP_MAIN, str(self.port)]
        with open(self.workdir / "mcp_upstream.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.base}/_counts", timeout=5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop(keep_workdir=True)
        raise RuntimeError(f"the gzip upstream did not start (logs in {self.workdir}):\n{self.log()}")
