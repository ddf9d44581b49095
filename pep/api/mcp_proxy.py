"""The MCP authorization proxy: Streamable HTTP in front of one MCP server (docs/mcp.md).

Each POST carries one JSON-RPC message; pep decides it (`mcp_rpc`) on a worker thread and only
an allowed message reaches the upstream, without the client's credentials. Answers stream back as
they arrive; a list answer is read (one bounded message, or SSE events up to the answer) and
filtered first. GET (the server's stream) and DELETE (the session's end) need a valid token.

Bounds (docs/mcp.md, "Limits"): the request head within `header_timeout_seconds`, a body of at
most `max_body_bytes` within `timeout_seconds`; connections per client and in all as for AuthZEN;
at most QUEUED_PER_THREAD x `threads` messages waiting for a decision (more: 503); the upstream's
answer must begin within `upstream_timeout_seconds` (else 504) and each write to the client finish
within `timeout_seconds` (else the connection closes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from pep.api.authzen_body import HTTPError, load_json
from pep.api.client_cert import certificate_thumbprint
from pep.api.http_listener import BodiesFull, BodyBudget, BodyTooLarge, Connections, Listener
from pep.api.ingress import traceparent
from pep.api.mcp_http import (
    METADATA_PATH,
    denial,
    json_response,
    metadata,
    metadata_url,
    plain_error,
)
from pep.api.mcp_relay import ListAnswer, Relay
from pep.api.mcp_rpc import (
    END_SESSION,
    OPEN_STREAM,
    SERVER,
    Message,
    read_message,
)
from pep.config import McpConfig
from pep.decision import Decision
from pep.errors import RequestError
from pep.pipeline import Listing, Pipeline, Request
from pep.policy.lru import LRU
from pep.policy.request import Check, ResourceRef
from pep.tokens.verifier import Credentials, split_scheme

log = logging.getLogger(__name__)

QUEUED_PER_THREAD = 16
MAX_SESSIONS = 10_000  # session owners remembered; the least recently used is forgotten
SESSION_HEADER = "Mcp-Session-Id"
CONNECTIONS_PER_THREAD = 64  # SSE streams stay open: more than AuthZEN's
_CHUNK = 64 * 1024


class McpProxy:
    """A running MCP proxy. `address` is where it listens, `public_url` how clients reach it."""

    def __init__(
        self,
        config: McpConfig,
        pipeline: Pipeline,
        *,
        dpop_algorithms: Sequence[str] = (),
        shutdown_timeout: float = 5.0,
        refused: Callable[[int], None] = lambda _status: None,
        upstream_failed: Callable[[int], None] = lambda _status: None,
    ) -> None:
        connections = Connections(config.max_connections_per_client, CONNECTIONS_PER_THREAD * config.threads, refused)
        self._listener = Listener(
            "mcp",
            config.listen,
            header_timeout=config.header_timeout_seconds,
            linger=config.timeout_seconds,
            connections=connections,
            error_response=plain_error,
            shutdown_timeout=shutdown_timeout,
        )
        self.address = self._listener.address
        self.public_url = config.public_url or self._listener.base_url
        self._executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pep-mcp")
        self._handler = _Handler(
            config, pipeline, self.public_url, tuple(dpop_algorithms), self._executor, refused, upstream_failed
        )
        try:
            self._listener.start(self._handler)
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise

    @property
    def held_bytes(self) -> int:
        """Bytes of message bodies held right now (bounded by threads x max_body_bytes)."""
        return self._handler.held

    def stop(self) -> None:
        self._listener.stop(before_close=self._handler.close)
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Handler:
    def __init__(
        self,
        config: McpConfig,
        pipeline: Pipeline,
        public_url: str,
        dpop_algorithms: tuple[str, ...],
        executor: ThreadPoolExecutor,
        refused: Callable[[int], None],
        upstream_failed: Callable[[int], None],
    ) -> None:
        self._config = config
        self._pipeline = pipeline
        self._public_url = public_url
        self._htu = public_url + config.path
        self._resource_metadata = metadata_url(public_url, config.path)
        self._metadata = json.dumps(metadata(config, public_url, dpop_algorithms)).encode()
        self._algorithms = dpop_algorithms
        self._executor = executor
        self._refused = refused
        self._server = ResourceRef(SERVER, config.server_id)
        self._admitted = 0
        self._max_admitted = config.threads * (1 + QUEUED_PER_THREAD)
        self._bodies = BodyBudget(config.threads * config.max_body_bytes)
        # Mcp-Session-Id -> (agent, user) that opened it: another principal naming it is refused.
        self._sessions: LRU[str, tuple[str, str]] = LRU(MAX_SESSIONS)
        self._relay = Relay(config, upstream_failed)
        self.close = self._relay.close

    @property
    def held(self) -> int:
        return self._bodies.held

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if getattr(request.protocol, "refusal", ""):
            return self._refuse(503, request.protocol.refusal, close=True)  # type: ignore[attr-defined]
        path = request.path
        if path in (METADATA_PATH, METADATA_PATH + self._config.path):
            if request.method not in ("GET", "HEAD"):
                return self._refuse(405, "the metadata document is read with GET")
            return json_response(200, self._metadata, [("Cache-Control", "max-age=300")])
        if path != self._config.path:
            return self._refuse(404, f"nothing here: the MCP endpoint is {self._config.path}")
        if request.method not in ("POST", "GET", "DELETE"):
            resp = self._refuse(405, "the MCP endpoint takes POST, GET and DELETE")
            resp.headers["Allow"] = "POST, GET, DELETE"
            return resp
        try:
            if request.method == "POST":
                return await self._post(request)
            action = OPEN_STREAM if request.method == "GET" else END_SESSION
            ask = Request([Check(action, self._server)], self._credentials(request), policies=False)
            decision = await self._decide(ask, request)
            if not decision.answer_allowed:
                return self._deny(decision, request, None, False)
            return self._bound(request, decision, await self._relay.relay(request, decision, b""))
        except _Busy as e:
            return self._refuse(503, f"pep is busy: {e}", close=True)

    def _refuse(self, status: int, message: str, *, close: bool = False) -> web.Response:
        self._refused(status)
        resp = plain_error(status, message)
        if close:
            resp.force_close()
        return resp

    def _credentials(self, request: web.BaseRequest) -> Credentials:
        headers = request.headers
        xfcc = headers.get("x-forwarded-client-cert", "") if self._config.trust_xfcc else ""
        return Credentials(
            token=headers.get("Authorization", ""),
            dpop_proof=headers.get("DPoP", ""),
            http_method=request.method,
            http_uri=self._htu,
            client_cert_thumbprint=certificate_thumbprint("", xfcc),
            audience=self._config.resource,
        )

    async def _decide(self, ask: Request, request: web.BaseRequest) -> Decision:
        if self._admitted >= self._max_admitted:
            raise _Busy(f"{self._max_admitted} messages are waiting for a decision")
        session = request.headers.get(SESSION_HEADER, "")
        ask = replace(
            ask,
            traceparent=traceparent(request.headers.get("traceparent", "")),
            owner=self._sessions.get(session) if session else None,
        )
        self._admitted += 1
        try:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self._executor, self._pipeline.authorize, ask)
        finally:
            self._admitted -= 1
        return decisions[0]

    def _bound(self, request: web.BaseRequest, decision: Decision, out: web.StreamResponse) -> web.StreamResponse:
        """A session the upstream opened belongs to the principal that opened it, from now on."""
        opened = out.headers.get(SESSION_HEADER, "")
        if opened and not request.headers.get(SESSION_HEADER) and decision.answer_allowed:
            self._sessions.put(opened, (decision.agent, decision.on_behalf_of))
        return out

    def _deny(self, decision: Decision, request: web.BaseRequest, msg_id: Any, has_id: bool) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        return denial(
            decision,
            msg_id,
            has_id,
            token=authorization,
            scheme=split_scheme(authorization)[0] if authorization else "",
            resource_metadata=self._resource_metadata,
            dpop_algorithms=self._algorithms,
        )

    async def _post(self, request: web.BaseRequest) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return self._refuse(415, "an MCP message is sent as application/json")
        held = [0]
        try:
            try:
                async with asyncio.timeout(self._config.timeout_seconds):
                    body = await self._bodies.read(request.content, self._config.max_body_bytes, held)
            except TimeoutError:
                late = f"the body did not arrive within {self._config.timeout_seconds:g} seconds"
                return self._refuse(408, late, close=True)
            except BodiesFull:
                raise _Busy(f"{self._bodies.budget} bytes of messages are held") from None
            except BodyTooLarge:
                return self._refuse(413, f"a message is at most {self._config.max_body_bytes} bytes", close=True)
            except (aiohttp.ClientPayloadError, ConnectionError) as e:
                return self._refuse(400, f"the body could not be read: {e}", close=True)
            return await self._message(request, body)
        finally:
            self._bodies.release(held)

    async def _message(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        try:
            message = read_message(load_json(body), self._config.server_id, self._config.max_body_bytes)
        except HTTPError as e:
            message = Message("invalid", "", problem=e.message)
        creds = self._credentials(request)
        if message.kind == "unknown" and self._config.allow_unknown_methods and message.method:
            message = Message("token", message.method, message.id, message.has_id, Check(message.method, self._server))
        if message.kind in ("unknown", "invalid") or message.check is None:
            check = Check(message.method or "invalid_message", self._server)
            ask = Request([check], creds, refusal=RequestError(message.problem))
        elif message.kind == "decide":
            ask = Request([message.check], creds, validate_context=False)
        elif message.kind == "list":
            held = ListAnswer()
            loop = asyncio.get_running_loop()
            listing = Listing(lambda who: self._relay.fetch_list(loop, request, body, message, held, who))
            ask = Request([message.check], creds, listing=listing)
        else:
            ask = Request([message.check], creds, policies=False)
        decision = await self._decide(ask, request)
        if message.kind == "list":
            return await self._relay.answer_list(
                request, decision, message, held, lambda: self._deny(decision, request, message.id, message.has_id)
            )
        if not decision.answer_allowed:
            return self._deny(decision, request, message.id, message.has_id)
        return self._bound(request, decision, await self._relay.relay(request, decision, body))


class _Busy(Exception):
    pass
