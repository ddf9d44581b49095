"""The MCP proxy's cost: the official SDK client calling a tool directly, and through pep.

    .venv/bin/python -m bench.mcp [--calls 300] [--reps 3]

The tool server (examples/mcp_server.py) and pep run pinned to core 0, the client to core 1.
Each repetition times `--calls` sequential `tools/call`s (and `tools/list`s) after a warm-up,
first against the server directly, then through pep (a bearer token, the example policies, the
decision log to a file). Printed: the medians, and what pep adds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import CLIENT_CPU, ROOT, SERVER_CPU, free_port, pinned, progress

RESOURCE = "https://tools.example.com/mcp"
ISSUER = "https://bench.invalid"


async def _measure(url: str, token: str, calls: int) -> dict[str, float]:
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    out: dict[str, list[float]] = {"call": [], "list": []}
    async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
        for _ in range(20):
            await client.call_tool("read_file", {"path": "/home/alice/notes.md"})
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("read_file", {"path": "/home/alice/notes.md"})
            out["call"].append((time.perf_counter() - started) * 1000)
        for _ in range(max(10, calls // 5)):
            started = time.perf_counter()
            await client.list_tools()
            out["list"].append((time.perf_counter() - started) * 1000)
    calls_ms = sorted(out["call"])
    return {
        "call_p50_ms": statistics.median(calls_ms),
        "call_p99_ms": calls_ms[int(len(calls_ms) * 0.99) - 1],
        "list_p50_ms": statistics.median(out["list"]),
    }


def _wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _client(url: str, token: str, calls: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.mcp", "--client", url, "--token", token, "--calls", str(calls)]
    done = subprocess.run(pinned(CLIENT_CPU, argv), cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(calls: int, reps: int) -> dict[str, Any]:
    from pep.dev import tokens as devtoken

    tmp = Path(tempfile.mkdtemp(prefix="pep-bench-mcp-"))
    key_path, jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
    token = devtoken.mint_token(
        key_path, issuer=ISSUER, audience=RESOURCE, sub="alice", act_chain=("assistant",), ttl_seconds=3600
    )
    tool_port, pep_port, grpc_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{tool_port}/mcp"
    config = {
        "listen": f"127.0.0.1:{grpc_port}",
        "metrics_listen": "",
        "admin_listen": "",
        "policies": str(ROOT / "policies"),
        "issuers": [{"issuer": ISSUER, "audiences": ["pep"], "jwks_file": jwks, "algorithms": ["ES256"]}],
        "decision_log": {"sink": str(tmp / "decisions.log")},
        "mcp": {"listen": f"127.0.0.1:{pep_port}", "upstream": upstream, "resource": RESOURCE, "server_id": "tools"},
    }
    (tmp / "pep.yaml").write_text(json.dumps(config))
    env = {**os.environ, "MCP_PORT": str(tool_port)}
    tool = subprocess.Popen(pinned(SERVER_CPU, [sys.executable, "examples/mcp_server.py"]), cwd=ROOT, env=env)
    pep_argv = [str(Path(sys.executable).parent / "pep"), "serve", "--config", str(tmp / "pep.yaml")]
    pep = subprocess.Popen(pinned(SERVER_CPU, pep_argv), cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{tool_port}/mcp")
        _wait_http(f"http://127.0.0.1:{pep_port}/.well-known/oauth-protected-resource")
        direct, proxied = [], []
        for rep in range(reps):
            progress(f"mcp rep {rep + 1}/{reps}: direct")
            direct.append(_client(upstream, "", calls))
            progress(f"mcp rep {rep + 1}/{reps}: through pep")
            proxied.append(_client(f"http://127.0.0.1:{pep_port}/mcp", token, calls))
    finally:
        for proc in (pep, tool):
            proc.terminate()
            proc.wait(timeout=10)
    med = {k: statistics.median(r[k] for r in direct) for k in direct[0]}
    via = {k: statistics.median(r[k] for r in proxied) for k in proxied[0]}
    return {"direct": med, "pep": via}


def report(result: dict[str, Any]) -> None:
    d, p = result["direct"], result["pep"]
    print(f"\n{'MCP (SDK client, sequential)':34s} {'call p50 ms':>12s} {'call p99 ms':>12s} {'list p50 ms':>12s}")
    for name, m in (("tool server directly", d), ("through pep", p)):
        print(f"{name:34s} {m['call_p50_ms']:12.3f} {m['call_p99_ms']:12.3f} {m['list_p50_ms']:12.3f}")
    print(
        f"pep adds {p['call_p50_ms'] - d['call_p50_ms']:+.3f} ms per tools/call (p50), "
        f"{p['list_p50_ms'] - d['list_p50_ms']:+.3f} ms per filtered tools/list"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_measure(args.client, args.token, args.calls))))
        return
    report(run(args.calls, args.reps))


if __name__ == "__main__":
    main()
