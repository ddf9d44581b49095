"""The AuthZEN HTTP listener, on the shared listener machinery (`pep.api.http_listener`).

Bounds (README, "AuthZEN (HTTP)"): the whole request head within `header_timeout_seconds` of
connecting or of the previous response, else the connection is closed; the body within
`timeout_seconds`, else 408; the response written within `timeout_seconds`, else closed. At most
`max_connections_per_client` connections from one address (more: 503) and CONNECTIONS_PER_THREAD x
`threads` in all (more: closed at once). The pipeline, synchronous and CPU-bound, runs on `threads`
worker threads; QUEUED_PER_THREAD x `threads` more requests may wait for one, then 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pep.api.authzen import Answer, AuthzenApp, Pending, error_answer
from pep.api.http_listener import (
    STATUS_TEXT,
    BodiesFull,
    BodyBudget,
    BodyTooLarge,
    Connection,
    Connections,
    Listener,
)
from pep.config import AuthzenConfig
from pep.pipeline import Pipeline

log = logging.getLogger(__name__)

QUEUED_PER_THREAD = 16
CONNECTIONS_PER_THREAD = 32


def _response(answer: Answer, *, close: bool) -> web.Response:
    resp = web.Response(
        status=answer.status,
        reason=STATUS_TEXT.get(answer.status),
        headers=answer.headers,
        body=answer.body,
        content_type="application/json",
    )
    resp.headers["Server"] = "pep"
    if close:
        resp.force_close()
    return resp


class _Handler:
    """Reads the head, admits, reads the body, decides on a worker thread, writes the answer."""

    def __init__(
        self, app: AuthzenApp, config: AuthzenConfig, executor: ThreadPoolExecutor, refused: Callable[[int], None]
    ) -> None:
        self._refused = refused
        self._app = app
        self._timeout = config.timeout_seconds
        self._executor = executor
        self._admitted = 0
        self._max_admitted = config.threads * (1 + QUEUED_PER_THREAD)
        self._bodies = BodyBudget(config.threads * config.max_body_bytes)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        refusal = getattr(request.protocol, "refusal", "")
        if refusal:
            return await self._send(request, error_answer(503, refusal), close=True)
        head = self._app.head(request.method, request.path, request.headers.items(), request.content_length)
        if isinstance(head, Answer):
            # A request refused before its body is read ends its connection: the body is discarded, not kept.
            return await self._send(request, head, close=request.body_exists and head.status != 200)
        if self._admitted >= self._max_admitted:
            busy = error_answer(503, f"pep is busy: {self._max_admitted} requests in progress", head.reply_headers)
            return await self._send(request, busy, close=True)
        self._admitted += 1
        try:
            return await self._admit(request, head)
        finally:
            self._admitted -= 1

    async def _admit(self, request: web.BaseRequest, head: Pending) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn = request.protocol
        if isinstance(conn, Connection):
            conn.body = request.content  # so a client that goes away while this waits is noticed
        held = [0]
        try:
            return await self._work(request, head, conn, held)
        finally:
            self._bodies.release(held)

    async def _work(self, request: web.BaseRequest, head: Pending, conn: Any, held: list[int]) -> web.StreamResponse:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._bodies.read(request.content, head.limit, held)
        except TimeoutError:
            late = error_answer(408, f"the body did not arrive within {self._timeout:g} seconds", head.reply_headers)
            return await self._send(request, late, close=True)
        except BodiesFull:
            held_all = self._bodies.budget
            busy = error_answer(503, f"pep is busy: {held_all} bytes of request bodies held", head.reply_headers)
            return await self._send(request, busy, close=True)
        except BodyTooLarge:
            too_large = self._app.too_large()
            return await self._send(request, error_answer(413, too_large.message, head.reply_headers), close=True)
        except (HttpProcessingError, ConnectionError) as e:
            bad = error_answer(400, f"the body could not be read: {e}", head.reply_headers)
            return await self._send(request, bad, close=True)
        finally:
            if isinstance(conn, Connection):
                conn.body = None
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, self._app.finish, head, body)
        return await self._send(request, answer, close=False)

    async def _send(self, request: web.BaseRequest, answer: Answer, *, close: bool) -> web.StreamResponse:
        """Write the answer within the timeout; a client that does not read it loses the connection."""
        if not answer.decided and answer.status >= 400:
            self._refused(answer.status)
        resp = _response(answer, close=close)
        try:
            async with asyncio.timeout(self._timeout):
                await resp.prepare(request)
                await resp.write_eof()
        except TimeoutError:
            log.debug("authzen: a response was not read within %s seconds; closing", self._timeout)
            request.protocol.force_close()
        return resp


class AuthzenServer:
    """A running AuthZEN listener. `address` is where it listens (port 0 resolved)."""

    def __init__(
        self,
        config: AuthzenConfig,
        pipeline: Pipeline,
        *,
        shutdown_timeout: float = 5.0,
        refused: Callable[[int], None] = lambda _status: None,
    ) -> None:
        connections = Connections(config.max_connections_per_client, CONNECTIONS_PER_THREAD * config.threads, refused)
        self._listener = Listener(
            "authzen",
            config.listen,
            header_timeout=config.header_timeout_seconds,
            linger=config.timeout_seconds,
            connections=connections,
            error_response=lambda status, message: _response(error_answer(status, message), close=True),
            shutdown_timeout=shutdown_timeout,
        )
        self.address = self._listener.address
        self._executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pep-authzen")
        app = AuthzenApp(pipeline, config, config.base_url or self._listener.base_url)
        try:
            self._listener.start(_Handler(app, config, self._executor, refused))
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        self._listener.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
