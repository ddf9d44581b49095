"""The MCP proxy's upstream side: relaying an allowed message, and reading a list before it is filtered."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from pep.api.mcp_http import SseReader, answer_to, client_headers, plain_error, upstream_headers
from pep.api.mcp_rpc import Message, filter_result, item_check, listed_names
from pep.config import McpConfig
from pep.decision import Decision
from pep.policy.request import Check

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


@dataclass
class ListAnswer:
    """An upstream answer pep holds while it decides a list: what came before the answer, and the rest."""

    response: aiohttp.ClientResponse | None = None
    failure: tuple[int, str] | None = None
    answer: dict[str, Any] | None = None
    prelude: list[bytes] = field(default_factory=list)
    answer_event: Any = None  # the SSE event that carried the answer
    reader: SseReader | None = None


class Relay:
    """Talks to the upstream for one proxy: one client session, made on the listener's loop."""

    def __init__(self, config: McpConfig, upstream_failed: Callable[[int], None] = lambda _status: None) -> None:
        self._config = config
        self._upstream_failed = upstream_failed
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._config.upstream_timeout_seconds)
            # Bytes are relayed as sent (no decompression), and asked for unencoded: aiohttp's own
            # Accept-Encoding would let an upstream gzip a list pep must read.
            self._session = aiohttp.ClientSession(
                timeout=timeout, auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
            )
        return self._session

    async def open(
        self, request: web.BaseRequest, headers: list[tuple[str, str]], body: bytes
    ) -> aiohttp.ClientResponse:
        async with asyncio.timeout(self._config.upstream_timeout_seconds):
            return await self._client().request(
                request.method, self._config.upstream, headers=headers, data=body or None, allow_redirects=False
            )

    async def relay(self, request: web.BaseRequest, decision: Decision, body: bytes) -> web.StreamResponse:
        try:
            headers = upstream_headers(
                request.headers.items(), decision.decision_id, agent=decision.agent, on_behalf_of=decision.on_behalf_of
            )
            upstream = await self.open(request, headers, body)
        except TimeoutError:
            return self.failed(504, "the MCP server did not answer in time", decision)
        except (aiohttp.ClientError, OSError) as e:
            return self.failed(502, f"the MCP server could not be reached: {type(e).__name__}", decision)
        try:
            return await self.stream(request, upstream, decision, (), rest=True)
        finally:
            upstream.release()

    def failed(self, status: int, message: str, decision: Decision) -> web.Response:
        log.warning("mcp: %s (decision %s)", message, decision.decision_id)
        self._upstream_failed(status)
        return plain_error(status, message)

    async def stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        decision: Decision,
        head: Sequence[bytes],
        *,
        rest: bool,
    ) -> web.StreamResponse:
        """The upstream's status and headers, then `head`, then (if `rest`) what is left of its body
        as it arrives; each write within timeout_seconds. A side that goes away ends it early."""
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in client_headers(upstream.headers.items(), decision.decision_id, decision.dpop_nonce):
            out.headers.add(k, v)
        limit = self._config.timeout_seconds
        try:
            async with asyncio.timeout(limit):
                await out.prepare(request)
            for chunk in head:
                if chunk:
                    async with asyncio.timeout(limit):
                        await out.write(chunk)
            if rest:
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    async with asyncio.timeout(limit):
                        await out.write(chunk)
            async with asyncio.timeout(limit):
                await out.write_eof()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:
            log.debug("mcp: a relayed answer ended early: %s", type(e).__name__)
            request.protocol.force_close()
        return out

    # --- lists: fetched from the worker thread once the list itself is admitted ----------------

    def fetch_list(
        self,
        loop: asyncio.AbstractEventLoop,
        request: web.BaseRequest,
        body: bytes,
        message: Message,
        held: ListAnswer,
        who: tuple[str, str],
    ) -> list[tuple[str, Check]] | None:
        deadline = self._config.upstream_timeout_seconds + self._config.timeout_seconds + 5
        future = asyncio.run_coroutine_threadsafe(self._read_list(request, body, message, held, who), loop)
        try:
            future.result(timeout=deadline)
        except Exception as e:  # the answer is the upstream's failure, told to the client
            future.cancel()
            if held.failure is None:
                held.failure = (502, f"the MCP server's list could not be read: {type(e).__name__}")
        if held.answer is None:
            return None
        names = listed_names(held.answer, message.list_of)
        return [(name, item_check(message.list_of, name, self._config.server_id)) for name in names]

    async def _read_list(
        self, request: web.BaseRequest, body: bytes, message: Message, held: ListAnswer, who: tuple[str, str]
    ) -> None:
        try:
            # No x-pep-decision-id: the list's decision is recorded once its answer is filtered.
            headers = upstream_headers(request.headers.items(), None, agent=who[0], on_behalf_of=who[1])
            held.response = upstream = await self.open(request, headers, body)
        except TimeoutError:
            held.failure = (504, "the MCP server did not answer in time")
            return
        except (aiohttp.ClientError, OSError) as e:
            held.failure = (502, f"the MCP server could not be reached: {type(e).__name__}")
            return
        ctype = upstream.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if not 200 <= upstream.status < 300:
            return  # an error answer, relayed as it is
        # Anything but a list pep could read and filter fails closed: never an unfiltered list.
        encoding = upstream.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            held.failure = (502, f"the MCP server answered the list encoded ({encoding[:32]}), which pep cannot filter")
            return
        if ctype not in ("application/json", "text/event-stream"):
            held.failure = (502, f"the MCP server answered the list as {ctype[:64] or 'no content type'}")
            return
        limit = self._config.max_body_bytes
        async with asyncio.timeout(self._config.upstream_timeout_seconds):
            if ctype == "application/json":
                data = await upstream.content.read(limit + 1)
                if len(data) > limit:
                    held.failure = (502, f"the MCP server's list is larger than {limit} bytes")
                    return
                answer = json.loads(data)
                if not isinstance(answer, dict):
                    held.failure = (502, "the MCP server's list answer is not a JSON-RPC message")
                    return
                held.answer = answer
                return
            held.reader = reader = SseReader(limit)
            size = 0
            async for chunk in upstream.content.iter_any():
                for event in reader.feed(chunk):
                    found = answer_to(event.data, message.id)
                    if found is not None:
                        held.answer, held.answer_event = dict(found), event
                        return
                    size += len(event.raw)
                    if size > limit:
                        held.failure = (502, f"the MCP server sent more than {limit} bytes before its list")
                        return
                    held.prelude.append(event.raw)
            held.failure = (502, "the MCP server's stream ended before its list")

    async def answer_list(
        self,
        request: web.BaseRequest,
        decision: Decision,
        message: Message,
        held: ListAnswer,
        deny: Callable[[], web.StreamResponse],
    ) -> web.StreamResponse:
        upstream = held.response
        try:
            if not decision.answer_allowed:
                return deny()
            if held.failure is not None:
                return self.failed(*held.failure, decision)
            if upstream is None:
                return self.failed(502, "the MCP server was not asked", decision)
            if held.answer is None:  # not a list answer (an error status, say): relayed as it is
                return await self.stream(request, upstream, decision, (), rest=True)
            filtered = json.dumps(filter_result(held.answer, message.list_of, frozenset(decision.hidden)))
            if held.answer_event is None:  # one JSON answer, read whole
                return await self.stream(request, upstream, decision, (filtered.encode(),), rest=False)
            # SSE: the events before the answer, the answer filtered, what followed it, the rest of the stream
            rest_read = held.reader.rest() if held.reader is not None else b""
            head = (*held.prelude, held.answer_event.with_data(filtered), rest_read)
            return await self.stream(request, upstream, decision, head, rest=True)
        finally:
            if upstream is not None:
                upstream.release()
