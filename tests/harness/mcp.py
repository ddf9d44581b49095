"""MCP test harness: the official SDK's server as an upstream, its Streamable HTTP client in front.

- `McpUpstream`: `tests.harness.mcp_upstream` in a subprocess on a free port (its tools count executions).
- `connect(url, ...)`: an SDK client session (`Session`) over Streamable HTTP, in either protocol era,
  sending a bearer token or a DPoP-bound token (a fresh `DpopSigner` proof on every HTTP request).
- `raw_post` / `raw_request`: one plain HTTP exchange, for protocol-level tests.

The client is async; sync tests wrap a coroutine in `run(...)`:

    with McpUpstream() as up:
        async def scenario() -> str:
            async with connect(up.url, protocol="modern") as s:
                return tool_text(await s.call_tool("read_file", {"path": "/etc/motd"}))
        assert run(scenario()) == "contents of /etc/motd"

Eras: "handshake" is `initialize` + `Mcp-Session-Id` (stateful unless the server is stateless),
"modern" (2026-07-28) is one self-contained POST per request, no session, no handshake; "auto" is the
SDK's default, a `server/discover` probe that falls back to the handshake.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import httpx2
import mcp_types as types
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import LATEST_MODERN_VERSION

from pep.dev.tokens import jwk_thumbprint, mint_dpop_proof, new_dpop_key
from tests.harness.waits import free_port

__all__ = [
    "DpopProver",
    "DpopSigner",
    "Exchange",
    "McpError",
    "McpUpstream",
    "ProtocolEra",
    "RawResponse",
    "Session",
    "connect",
    "raw_post",
    "raw_request",
    "run",
    "sse_messages",
    "tool_text",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
ProtocolEra = Literal["handshake", "modern", "auto"]
_MODES: dict[str, str] = {"handshake": "legacy", "modern": LATEST_MODERN_VERSION, "auto": "auto"}
# The SDK's own error: a JSON-RPC error response (or one the transport synthesized from an HTTP
# error status) raised with `.code`, `.message` and `.data`.
McpError = MCPError
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario from a sync test."""
    return asyncio.run(coro)


# --- The upstream -----------------------------------------------------------------------------


class McpUpstream:
    """`python -m tests.harness.mcp_upstream` on a free port; a context manager.

    `url` is the MCP endpoint (`http://127.0.0.1:PORT/mcp`), `base` the server root. The process's
    stdout and stderr go to files in `workdir` (a temp dir unless given); `log()` reads stderr.
    """

    def __init__(self, *, stateless: bool = False, json_response: bool = False, workdir: Path | None = None) -> None:
        self.stateless, self.json_response = stateless, json_response
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="pep-mcp-upstream-")) if workdir is None else workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "mcp_upstream.stderr"

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> McpUpstream:
        deadline = time.monotonic() + float(os.environ.get("PEP_TEST_MCP_START_SECONDS", "30"))
        for _ in range(3):  # another process may take the free port before the server binds it
            self.port = free_port()
            argv = [sys.executable, "-m", "tests.harness.mcp_upstream", "--port", str(self.port)]
            argv += ["--stateless"] * self.stateless + ["--json-response"] * self.json_response
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.workdir / "mcp_upstream.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    self.counts()
                    return self
                except (OSError, ValueError):
                    time.sleep(0.05)
            if self.proc.poll() is None or "address already in use" not in self.log().lower():
                break
        self.stop(keep_workdir=True)
        raise RuntimeError(f"MCP upstream did not start on port {self.port} (logs in {self.workdir}):\n{self.log()}")

    def stop(self, *, keep_workdir: bool = False) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> McpUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def counts(self) -> dict[str, int]:
        """How often each tool ran, and `resource:<uri>` / `prompt:<name>` reads."""
        return {str(k): int(v) for k, v in self._get("/_counts").items()}

    def headers(self) -> list[dict[str, Any]]:
        """Every HTTP request that reached /mcp, oldest first: `{"method", "path", "headers"}`
        (header names lowercased, repeated headers joined with ", ")."""
        return list(self._get("/_headers"))

    def reset(self) -> None:
        """Zero the counters and forget the recorded requests."""
        req = urllib.request.Request(f"{self.base}/_reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5):
            pass


# --- DPoP -------------------------------------------------------------------------------------


class DpopProver(Protocol):
    """What `connect(dpop=...)` calls for every HTTP request; returns the `DPoP` header value."""

    def proof(self, method: str, url: str) -> str: ...


class DpopSigner:
    """A fresh EC P-256 DPoP key. `jkt` goes in the token's `cnf` claim (`mint_token(dpop_jkt=...)`).

    `connect(token=..., dpop=signer)` signs each request with `for_token(token)`, so proofs carry `ath`;
    `proof(method, url)` alone signs one without `ath`. Every proof made is appended to `proofs`.
    """

    def __init__(self) -> None:
        self.key, self.jwk = new_dpop_key()
        self.jkt = jwk_thumbprint(self.jwk)
        self.proofs: list[str] = []

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        made = mint_dpop_proof(self.key, self.jwk, htm=method, htu=url, access_token=access_token)
        self.proofs.append(made)
        return made

    def for_token(self, access_token: str | None) -> DpopProver:
        return _BoundSigner(self, access_token)


@dataclass
class _BoundSigner:
    signer: DpopSigner
    access_token: str | None

    def proof(self, method: str, url: str) -> str:
        return self.signer.proof(method, url, self.access_token)


# --- The SDK client ---------------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the SDK client made and the response head it got."""

    method: str
    url: str
    request_headers: dict[str, str]
    status: int
    response_headers: dict[str, str]
    request_body: bytes = b""

    def message(self) -> Any:
        """The JSON-RPC message the request carried (None for a GET or DELETE)."""
        return json.loads(self.request_body) if self.request_body else None


def _header_dict(headers: httpx2.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class _PerRequest(httpx2.Auth):
    """Stamps Authorization (Bearer or DPoP) and a fresh DPoP proof on every request; logs exchanges."""

    def __init__(self, token: str | None, dpop: DpopProver | None, log: list[Exchange]) -> None:
        self.token, self.dpop, self.log = token, dpop, log
        self.session_id: str | None = None

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self.token is not None:
            request.headers["Authorization"] = f"{'DPoP' if self.dpop is not None else 'Bearer'} {self.token}"
        if self.dpop is not None:
            htu = str(request.url.copy_with(query=None, fragment=None))  # RFC 9449 4.2: no query, no fragment
            request.headers["DPoP"] = self.dpop.proof(request.method, htu)
        response = yield request
        response_headers = _header_dict(response.headers)
        if "mcp-session-id" in response_headers:
            self.session_id = response_headers["mcp-session-id"]
        body = request.content if request.method == "POST" else b""
        self.log.append(
            Exchange(
                request.method,
                str(request.url),
                _header_dict(request.headers),
                response.status_code,
                response_headers,
                body,
            )
        )


@dataclass
class Session:
    """A connected SDK client (`client`), with a few flat helpers. JSON-RPC errors raise `McpError`."""

    client: Client
    _hook: _PerRequest
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def protocol_version(self) -> str:
        return self.client.protocol_version

    @property
    def session_id(self) -> str | None:
        """The `Mcp-Session-Id` the server assigned (handshake era, stateful server), else None."""
        return self._hook.session_id

    async def list_tools(self) -> list[str]:
        return [tool.name for tool in (await self.client.list_tools()).tools]

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        progress: list[tuple[float, float | None, str | None]] | None = None,
        timeout: float | None = None,
    ) -> types.CallToolResult:
        """`tools/call`; progress notifications for it are appended to `progress` as (progress, total, message).

        A tool that fails returns a result with `is_error`; a JSON-RPC error response raises `McpError`.
        Note the SDK lists tools (`tools/list`) after a successful call to a tool it has not listed yet,
        to validate structured output against the tool's output schema.
        """

        sink = progress

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            assert sink is not None
            sink.append((progress, total, message))

        return await self.client.call_tool(
            name,
            dict(arguments or {}),
            read_timeout_seconds=timeout,
            progress_callback=on_progress if sink is not None else None,
        )

    async def call_tool_or_error(
        self, name: str, arguments: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> types.CallToolResult | McpError:
        """`call_tool`, returning (not raising) the `McpError` of a JSON-RPC error response."""
        try:
            return await self.call_tool(name, arguments, **kwargs)
        except McpError as e:
            return e

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        return await self.client.read_resource(uri)

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None = None) -> types.GetPromptResult:
        return await self.client.get_prompt(name, dict(arguments or {}))


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception inside (nested) single-member groups; the group itself otherwise."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    dpop: DpopSigner | DpopProver | None = None,
    protocol: ProtocolEra = "handshake",
    timeout: float = 30.0,
    exchanges: list[Exchange] | None = None,
    terminate_on_close: bool = True,
) -> AsyncIterator[Session]:
    """An SDK `Client` over Streamable HTTP to `url`, connected in `protocol`'s era.

    `token` goes in `Authorization: Bearer <token>` on every HTTP request, or `DPoP <token>` with
    `dpop`, whose `proof(method, url)` supplies a fresh `DPoP` header per request (a `DpopSigner` is
    bound to `token`, so its proofs carry `ath`). `headers` are added to every request. Every HTTP
    exchange is appended to `exchanges` (also `Session.exchanges`), including those of a connect that
    fails. `timeout` bounds each request. A failure to connect raises the SDK's exception (typically
    `McpError`), unwrapped from the task groups' exception groups.
    """
    log = exchanges if exchanges is not None else []
    prover = dpop.for_token(token) if isinstance(dpop, DpopSigner) else dpop
    hook = _PerRequest(token, prover, log)
    http = httpx2.AsyncClient(
        headers=dict(headers or {}), auth=hook, timeout=httpx2.Timeout(timeout, read=max(timeout, 60.0))
    )
    try:
        async with http:
            transport = streamable_http_client(url, http_client=http, terminate_on_close=terminate_on_close)
            # No response cache: every call must reach the wire (and the proxy in front).
            client = Client(transport, mode=_MODES[protocol], cache=None, read_timeout_seconds=timeout)
            async with client:
                yield Session(client, hook, log)
    except BaseExceptionGroup as group:
        inner = _single(group)
        if inner is group:
            raise
        raise inner from group


# --- Raw HTTP ---------------------------------------------------------------------------------


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def messages(self) -> list[Any]:
        """The JSON-RPC messages in the body: the JSON document, or each SSE `data:` event."""
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return sse_messages(self.body)
        return [self.json()] if self.body else []


def sse_messages(body: bytes) -> list[Any]:
    """The JSON `data` of each event in an SSE body (events without data, e.g. pings, skipped)."""
    out: list[Any] = []
    for event in body.decode().replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if data and any(data):
            out.append(json.loads("\n".join(data)))
    return out


_RAW_DEFAULTS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def raw_request(
    method: str,
    url: str,
    body: Mapping[str, Any] | list[Any] | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> RawResponse:
    """One HTTP request (default `content-type: application/json` and the MCP `accept`, both
    overridable; a header given as "" is left out). The whole body is read, SSE included."""
    merged = {**_RAW_DEFAULTS, **{k.lower(): v for k, v in (headers or {}).items()}}
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with httpx2.AsyncClient(timeout=timeout) as http:
        response = await http.request(
            method, url, content=content, headers={k: v for k, v in merged.items() if v != ""}
        )
    return RawResponse(response.status_code, _header_dict(response.headers), response.content)


async def raw_post(
    url: str, body: Mapping[str, Any] | list[Any] | bytes, headers: Mapping[str, str] | None = None
) -> RawResponse:
    """POST one body (a JSON-RPC message, a batch, or raw bytes): `(status, headers, body)`."""
    return await raw_request("POST", url, body, headers)


def tool_text(result: types.CallToolResult) -> str:
    """The text content of a tool result, joined."""
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))
