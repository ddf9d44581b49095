"""A small MCP tool server to put behind pep's MCP proxy (the official `mcp` SDK, Streamable HTTP).

    .venv/bin/python examples/mcp_server.py      # serves http://127.0.0.1:9000/mcp

Its tools are the ones the example estate's policies/mcp.cedar names. Enable the `mcp:` section
of pep.dev.yaml, run `make run`, and point an MCP client at http://127.0.0.1:8090/mcp with a
token for the resource (examples/mcp_client.py does it all).
"""

from __future__ import annotations

import os

import uvicorn
from mcp.server.mcpserver import MCPServer

PORT = int(os.environ.get("MCP_PORT", "9000"))

server = MCPServer("example-tools", version="1.0.0", log_level="WARNING")


@server.tool()
async def search_docs(query: str) -> str:
    """Search the documentation."""
    return f"3 documents match {query!r}"


@server.tool()
async def read_file(path: str) -> str:
    """Read a file."""
    return f"<contents of {path}>"


@server.tool()
async def write_file(path: str, content: str) -> str:
    """Write a file."""
    return f"wrote {len(content)} characters to {path}"


@server.tool()
async def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@server.tool()
async def send_payment(amount: int, to: str) -> str:
    """Send a payment (amount in whole units)."""
    return f"sent {amount} to {to}"


if __name__ == "__main__":
    uvicorn.run(server.streamable_http_app(streamable_http_path="/mcp"), host="127.0.0.1", port=PORT, log_level="warning")
