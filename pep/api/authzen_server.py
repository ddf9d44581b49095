"""The AuthZEN HTTP listener: aiohttp's low-level server on an event loop thread of its own.

Bounds (README, "AuthZEN (HTTP)"): the whole request head within `header_timeout_seconds` of
connecting or of the previous response, else the connection is closed; the body within
`timeout_seconds`, else 408; the response written within `timeout_seconds`, else closed. At most
`max_connections_per_client` connections from one address (more: 503) and CONNECTIONS_PER_THREAD x
`threads` in all (more: closed at once). The pipeline, synchronous and CPU-bound, runs on `threads`
worker threads; QUEUED_PER_THREAD x `threads` more requests may wait for one, then 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from pep.api.authzen import SOCKET_MODE, Answer, AuthzenApp, Pending, error_answer
from pep.config import AuthzenConfig, split_address
from pep.pipeline import Pipeline

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4096  # the request line: AuthZEN paths are short
MAX_FIELD_BYTES = 8190  # one header line, name and value (a token with its DPoP proof fits)
MAX_HEADERS = 64
QUEUED_PER_THREAD = 16
CONNECTIONS_PER_THREAD = 32
STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Connections:
    """Open connections per client address and in all (event loop thread only)."""

    def __init__(self, per_client: int, total: int, refused: Callable[[int], None]) -> None:
        self.per_client, self.total = per_client, total
        self.refused = refused  # counts an answer that decided nothing
        self._open: Counter[str] = Counter()
        self._count = 0

    def open(self, client: str) -> str:
        """Count a new connection: "" if within bounds, else why not."""
        self._count += 1
        self._open[client] += 1
        if self._count > self.total:
            return f"more than {self.total} connections in all"
        if self._open[client] > self.per_client:
            return f"more than {self.per_client} connections from this client"
        return ""

    def close(self, client: str) -> None:
        self._count -= 1
        self._open[client] -= 1
        if not self._open[client]:
            del self._open[client]


class _Connection(RequestHandler):
    """One HTTP connection: counted against the bounds, and framing errors answered in JSON."""

    def __init__(self, manager: web.Server, connections: _Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._client: str | None = None
        self.refusal = ""
        self.body: StreamReader | None = None  # while a handler reads this connection's body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        self.refusal = self._connections.open(self._client)
        if self.refusal.endswith("in all"):
            log.debug("authzen: closed a connection from %s: %s", self._client, self.refusal)
            self.force_close()
        # else a connection over its client's bound is answered 503 once its head has arrived

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._client is not None:
            self._connections.close(self._client)
            self._client = None
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client closed its side: if idle, close (aiohttp's way); else answer what it sent first."""
        waiter: asyncio.Future[None] | None = getattr(self, "_waiter", None)  # set while awaiting a request
        if not hasattr(self, "_waiter") or (waiter is not None and not waiter.done()):
            return None
        # The head deadline closes it once answered; a body still to come never will, so its read ends now.
        if self.body is not None and not self.body.is_eof():
            self.body.set_exception(ConnectionResetError("the client closed the connection before the body ended"))
        return True

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """What aiohttp answers when the parser refuses a request (always 400) or a handler fails."""
        if isinstance(exc, LineTooLong) and exc.args[1:2] == (MAX_LINE_BYTES,):
            status, message = 400, f"the request line is longer than {MAX_LINE_BYTES} bytes"
        elif isinstance(exc, LineTooLong) or "Too many headers" in str(message):
            status, message = 431, f"at most {MAX_HEADERS} request headers of at most {MAX_FIELD_BYTES} bytes each"
        elif isinstance(exc, HttpProcessingError):
            # The parser's first lines name the fault; the rest quotes the request back.
            status, message = (
                400,
                "malformed HTTP request: " + " ".join(exc.message.split("\n\n")[0].split())[:200].rstrip(":"),
            )
        else:
            log.error("authzen: internal error", exc_info=exc)
            status, message = 500, "internal error"
        log.debug("authzen: refused a request from %s: %s", self._client, message)
        self._connections.refused(status)
        return _response(error_answer(status, message), close=True)


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
        # Bytes of bodies held at once, read or waiting for a worker. Counted as they arrive, so a
        # client trickling a body holds almost nothing and cannot stall others; past it, 503.
        self._budget = config.threads * config.max_body_bytes
        self._held = 0

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
        if isinstance(conn, _Connection):
            conn.body = request.content  # so a client that goes away while this waits is noticed
        held = [0]
        try:
            return await self._work(request, head, conn, held)
        finally:
            self._held -= held[0]

    async def _work(self, request: web.BaseRequest, head: Pending, conn: Any, held: list[int]) -> web.StreamResponse:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._read(request, head.limit, held)
        except TimeoutError:
            late = error_answer(408, f"the body did not arrive within {self._timeout:g} seconds", head.reply_headers)
            return await self._send(request, late, close=True)
        except _Busy:
            busy = error_answer(503, f"pep is busy: {self._budget} bytes of request bodies held", head.reply_headers)
            return await self._send(request, busy, close=True)
        except _TooLarge:
            too_large = self._app.too_large()
            return await self._send(request, error_answer(413, too_large.message, head.reply_headers), close=True)
        except (HttpProcessingError, ConnectionError) as e:
            bad = error_answer(400, f"the body could not be read: {e}", head.reply_headers)
            return await self._send(request, bad, close=True)
        finally:
            if isinstance(conn, _Connection):
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

    async def _read(self, request: web.BaseRequest, limit: int, held: list[int]) -> bytes:
        """At most `limit` bytes of body; a chunked body is read to `limit` + 1 and no further."""
        data = bytearray()
        while chunk := await request.content.read(limit + 1 - len(data)):
            if self._held + len(chunk) > self._budget:
                raise _Busy
            self._held += len(chunk)
            held[0] += len(chunk)
            data += chunk
            if len(data) > limit:
                raise _TooLarge
        return bytes(data)


class _TooLarge(Exception):
    pass


class _Busy(Exception):
    pass


def _bind(listen: str) -> socket.socket:
    """A listening socket (never SO_REUSEPORT: a second pep on the address fails to start)."""
    if listen.startswith("unix://"):
        path = listen[len("unix://") :]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        _claim_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            # Tightened before listen(), so no one connects first: on a trust_subject listener
            # whoever can connect can name any subject.
            os.chmod(path, SOCKET_MODE)
            sock.listen(socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        return sock
    host, port = split_address(listen)
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding past TIME_WAIT only
        sock.bind(addr)
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def _claim_stale_socket(path: str) -> None:
    """Remove a socket file no one listens on; one someone does is an address in use."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # bind() fails on it and says why
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by another process")


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
        # aiohttp is the one HTTP stack pep keeps (server and client): a strict llhttp parser that
        # itself refuses duplicate Content-Length (equal values too), Content-Length with
        # Transfer-Encoding, any Transfer-Encoding but chunked and obs-fold; streaming both ways
        # (StreamResponse writes as it goes, ClientResponse.content reads as it arrives); bounded
        # lines and header counts; keepalive_timeout counts from connecting or the last response, not
        # from the last byte, so it is the whole-head deadline (uvicorn's resets on every byte and
        # hypercorn has no client; neither caps connections per client, hence `_Connections`).
        self._sock = _bind(config.listen)
        self._unix_path = config.listen[len("unix://") :] if config.listen.startswith("unix://") else ""
        if self._unix_path:
            self.address, base = config.listen, "http://localhost"
        else:
            host, port = self._sock.getsockname()[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            base = f"http://{self.address}"
        self._shutdown_timeout = shutdown_timeout
        self._executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pep-authzen")
        handler = _Handler(AuthzenApp(pipeline, config, config.base_url or base), config, self._executor, refused)
        self._connections = _Connections(
            config.max_connections_per_client, CONNECTIONS_PER_THREAD * config.threads, refused
        )
        self._options: dict[str, Any] = {
            "keepalive_timeout": config.header_timeout_seconds,
            "lingering_time": config.timeout_seconds,  # reading what follows a refused body, then closing
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
            "access_log": None,
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pep-authzen", daemon=True)
        self._thread.start()
        try:
            self._run(self._start(handler), timeout=10)
        except BaseException:
            self._close_loop()
            raise

    def _run(self, coro: Awaitable[Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    async def _start(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> None:
        loop = asyncio.get_running_loop()
        self._web = web.Server(handler)

        def connection() -> _Connection:
            return _Connection(self._web, self._connections, loop=loop, **self._options)

        if self._unix_path:
            self._listener = await loop.create_unix_server(connection, sock=self._sock)
        else:
            self._listener = await loop.create_server(connection, sock=self._sock)

    async def _stop(self) -> None:
        self._listener.close()
        self._web.pre_shutdown()  # idle keep-alive connections close now
        await self._web.shutdown(self._shutdown_timeout)  # in-flight requests get the timeout, then are cut

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        if not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._run(self._stop(), timeout=self._shutdown_timeout + 5)
            self._close_loop()
        if self._unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        self._sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
