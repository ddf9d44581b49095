"""An MCP client (the official SDK) calling tools through pep's MCP proxy with a development token.

    .venv/bin/python examples/mcp_server.py &   # the tool server on 127.0.0.1:9000/mcp
    make run                                    # pep, with the `mcp:` section of pep.dev.yaml enabled
    .venv/bin/python examples/mcp_client.py

It lists the tools pep lets the agent `assistant` (acting for alice) see, then calls one the
policies allow and one they do not. PEP_MCP_URL (default http://127.0.0.1:8090/mcp), PEP_DEV_DIR
(default .pep/dev) and PEP_MCP_RESOURCE (default https://tools.example.com/mcp) point it elsewhere.
"""

from __future__ import annotations

import asyncio
import os

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from pep.dev import tokens as devtoken

URL = os.environ.get("PEP_MCP_URL", "http://127.0.0.1:8090/mcp")
DEV_DIR = os.environ.get("PEP_DEV_DIR", ".pep/dev")
RESOURCE = os.environ.get("PEP_MCP_RESOURCE", "https://tools.example.com/mcp")


def agent_token() -> str:
    key_path, _ = devtoken.ensure_dev_keys(DEV_DIR)
    return devtoken.mint_token(
        key_path, issuer="https://dev.pep.local", audience=RESOURCE, sub="alice", act_chain=("assistant",)
    )


async def main() -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {agent_token()}"})
    async with http, Client(streamable_http_client(URL, http_client=http)) as client:
        tools = await client.list_tools()
        print("tools/list:", [t.name for t in tools.tools])
        for name, arguments in (("read_file", {"path": "/home/alice/notes.md"}), ("delete_file", {"path": "/x"})):
            try:
                result = await client.call_tool(name, arguments)
                print(f"tools/call {name}: allowed:", result.content[0].text)  # type: ignore[union-attr]
            except MCPError as e:
                print(f"tools/call {name}: denied: {e.code} {e.message} {e.data}")


if __name__ == "__main__":
    asyncio.run(main())
