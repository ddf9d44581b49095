"""Fixtures for the MCP proxy tests: one SDK upstream and one pep in front of it per module.

The helpers are in tests/harness/mcp_proxy.py (Proxy, start_proxy, raw_session) and
tests/harness/mcp.py (the upstream, the SDK client, raw HTTP). `proxy` zeroes the upstream's
counters and recorded requests before each test; the decision log is read with `proxy.mark()` and
`proxy.since(mark)`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.mcp import McpUpstream
from tests.harness.mcp_proxy import Proxy, start_proxy


@pytest.fixture(scope="module")
def mcp_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpUpstream]:
    with McpUpstream(workdir=tmp_path_factory.mktemp("mcp-upstream")) as up:
        yield up


@pytest.fixture(scope="module")
def module_proxy(mcp_upstream: McpUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """pep with the default `mcp` section (unknown methods refused, 4 MiB bodies) over the MCP estate."""
    proxy = start_proxy(tmp_path_factory.mktemp("pep-mcp"), mcp_upstream)
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(module_proxy: Proxy) -> Proxy:
    module_proxy.up.reset()
    return module_proxy
