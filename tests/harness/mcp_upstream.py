"""An upstream MCP server for the MCP proxy tests: the official SDK over Streamable HTTP.

Run as `python -m tests.harness.mcp_upstream --port PORT [--stateless] [--json-response]` (cwd: the repo).
It serves `http://127.0.0.1:PORT/mcp`, both protocol eras at once: the SDK routes a request whose
`MCP-Protocol-Version` header names a modern revision (2026-07-28) to its stateless per-request entry and
everything else (no header, or a handshake-era version) to the `initialize`/`Mcp-Session-Id` transport.
`--stateless` makes that handshake-era transport stateless too (no session id, no GET stream);
`--json-response` answers `application/json` instead of `text/event-stream` (progress notifications
then have nowhere to go and are dropped).

Side endpoints, outside /mcp: `GET /_counts` (how often each tool, the resource and the prompt actually
ran), `GET /_headers` (every HTTP request that reached /mcp: method, path, lowercased headers) and
`POST /_reset` (zero both). `tests.harness.mcp.McpUpstream` starts and reads it.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

README_URI = "file:///docs/readme.md"
README_TEXT = "# pep test upstream\n\nA readme served as an MCP resource.\n"
TOOLS = ("read_file", "send_payment", "delete_file", "count_slowly")
COUNT_KEYS = (*TOOLS, f"resource:{README_URI}", "prompt:summarize")
PROGRESS_INTERVAL_SECONDS = 0.05

_counts: Counter[str] = Counter()
_requests: list[dict[str, Any]] = []


def build_server() -> MCPServer:
    server = MCPServer("pep-test-upstream", version="1.0.0", log_level="WARNING")

    @server.tool()
    async def read_file(path: str) -> str:
        """Read a file (it does not: it says what it would have read)."""
        _counts["read_file"] += 1
        return f"contents of {path}"

    @server.tool()
    async def send_payment(amount: float, to: str) -> str:
        """Send a payment."""
        _counts["send_payment"] += 1
        return f"sent {amount} to {to}"

    @server.tool()
    async def delete_file(path: str) -> str:
        """Delete a file."""
        _counts["delete_file"] += 1
        return f"deleted {path}"

    @server.tool()
    async def count_slowly(n: int, ctx: Context) -> str:
        """Count to n, one progress notification per step."""
        _counts["count_slowly"] += 1
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
            await anyio.sleep(PROGRESS_INTERVAL_SECONDS)
        return f"counted {n}"

    @server.resource(README_URI, name="readme", mime_type="text/markdown")
    async def readme() -> str:
        _counts[f"resource:{README_URI}"] += 1
        return README_TEXT

    @server.prompt()
    async def summarize(topic: str) -> str:
        """Ask for a summary of a topic."""
        _counts["prompt:summarize"] += 1
        return f"Summarize {topic} in three sentences."

    @server.custom_route("/_counts", methods=["GET"])
    async def counts(_: Request) -> Response:
        return JSONResponse({key: _counts[key] for key in COUNT_KEYS})

    @server.custom_route("/_headers", methods=["GET"])
    async def headers(_: Request) -> Response:
        return JSONResponse(_requests)

    @server.custom_route("/_reset", methods=["POST"])
    async def reset(_: Request) -> Response:
        _counts.clear()
        _requests.clear()
        return Response(status_code=204)

    return server


class RecordRequests:
    """ASGI middleware: remembers method, path and headers of every HTTP request to /mcp."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/mcp" or path.startswith("/mcp/"):
                headers: dict[str, str] = {}
                for raw_name, raw_value in scope["headers"]:
                    name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                _requests.append({"method": scope["method"], "path": path, "headers": headers})
        await self.app(scope, receive, send)


def build_app(*, stateless: bool, json_response: bool) -> ASGIApp:
    starlette_app = build_server().streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        json_response=json_response,
        # A proxy in front forwards its own Host/Origin: accept any (DNS-rebinding protection is for browsers).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return RecordRequests(starlette_app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id on the handshake era")
    parser.add_argument("--json-response", action="store_true", help="application/json instead of SSE")
    args = parser.parse_args(argv)
    app = build_app(stateless=args.stateless, json_response=args.json_response)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Open SSE streams (the handshake-era GET stream) must not hold up a SIGTERM for long.
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.Server(config).run()  # handles SIGTERM/SIGINT: graceful shutdown, then returns


if __name__ == "__main__":
    main()
