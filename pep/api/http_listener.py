"""One HTTP listener machinery for AuthZEN and the MCP proxy: aiohttp's low-level server on an
event loop thread of its own, with connections bounded per client and in all.

aiohttp is the one HTTP stack pep keeps (server and client): a strict llhttp parser that itself
refuses duplicate Content-Length (equal values too), Content-Length with Transfer-Encoding, any
Transfer-Encoding but chunked and obs-fold; streaming both ways (StreamResponse writes as it goes,
ClientResponse.content reads as it arrives); bounded lines and header counts; keepalive_timeout
counts from connecting or the last response, not from the last byte, so it is the whole-head
deadline (uvicorn's resets on every byte and hypercorn has no client; neither caps connections per
client, hence `Connections`).
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
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from pep.config import split_address

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4096  # the request line: pep's paths are short
MAX_FIELD_BYTES = 8190  # one header line, name and value (a token with its DPoP proof fits)
MAX_HEADERS = 64
# Unix sockets of listeners that may take what a caller says as given: owner and group only.
SOCKET_MODE = 0o660
STATUS_TEXT = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
ErrorResponse = Callable[[int, str], web.StreamResponse]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class BodyTooLarge(Exception):
    """A request body over its limit."""


class BodiesFull(Exception):
    """The listener's budget of body bytes held at once is spent."""


class BodyBudget:
    """Bytes of request bodies a listener holds at once, read or waiting for a worker (event loop
    thread only). Counted as they arrive, so a client trickling a body holds almost nothing and
    cannot stall others; past the budget, the caller answers 503."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0

    async def read(self, content: StreamReader, limit: int, taken: list[int]) -> bytes:
        """At most `limit` bytes; a chunked body is read to `limit` + 1 and no further. Every byte
        is also counted in `taken`, which the caller hands to `release` once it holds the body no more."""
        data = bytearray()
        while chunk := await content.read(limit + 1 - len(data)):
            if self.held + len(chunk) > self.budget:
                raise BodiesFull
            self.held += len(chunk)
            taken[0] += len(chunk)
            data += chunk
            if len(data) > limit:
                raise BodyTooLarge
        return bytes(data)

    def release(self, taken: list[int]) -> None:
        self.held -= taken[0]
        taken[0] = 0


class Connections:
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


class Connection(RequestHandler):
    """One HTTP connection: counted against the bounds, and framing errors answered in JSON."""

    def __init__(
        self, manager: web.Server, connections: Connections, error_response: ErrorResponse, name: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._error_response = error_response
        self._name = name
        self._client: str | None = None
        self.refusal = ""
        self.body: StreamReader | None = None  # while a handler reads this connection's body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        self.refusal = self._connections.open(self._client)
        if self.refusal.endswith("in all"):
            log.debug("%s: closed a connection from %s: %s", self._name, self._client, self.refusal)
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
            log.error("%s: internal error", self._name, exc_info=exc)
            status, message = 500, "internal error"
        log.debug("%s: refused a request from %s: %s", self._name, self._client, message)
        self._connections.refused(status)
        resp = self._error_response(status, message)
        resp.force_close()
        return resp


def bind(listen: str) -> socket.socket:
    """A listening socket (never SO_REUSEPORT: a second pep on the address fails to start)."""
    if listen.startswith("unix://"):
        path = listen[len("unix://") :]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        claim_stale_socket(path)
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


def claim_stale_socket(path: str) -> None:
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


class Listener:
    """A running listener on its own event loop thread. `address` is where it listens (port 0 resolved)."""

    def __init__(
        self,
        name: str,
        listen: str,
        *,
        header_timeout: float,
        linger: float,
        connections: Connections,
        error_response: ErrorResponse,
        shutdown_timeout: float,
    ) -> None:
        self.name = name
        self._sock = bind(listen)
        self._unix_path = listen[len("unix://") :] if listen.startswith("unix://") else ""
        if self._unix_path:
            self.address, self.base_url = listen, "http://localhost"
        else:
            host, port = self._sock.getsockname()[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.base_url = f"http://{self.address}"
        self._shutdown_timeout = shutdown_timeout
        self._connections = connections
        self._error_response = error_response
        self._options: dict[str, Any] = {
            "keepalive_timeout": header_timeout,
            "lingering_time": linger,  # reading what follows a refused body, then closing
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
            "access_log": None,
        }
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"pep-{name}", daemon=True)
        self._thread.start()

    def start(self, handler: Handler) -> None:
        try:
            self.run(self._start(handler), timeout=10)
        except BaseException:
            self._close_loop()
            raise

    def run(self, coro: Awaitable[Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def _start(self, handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        self._web = web.Server(handler)

        def connection() -> Connection:
            return Connection(self._web, self._connections, self._error_response, self.name, loop=loop, **self._options)

        if self._unix_path:
            self._listener = await loop.create_unix_server(connection, sock=self._sock)
        else:
            self._listener = await loop.create_server(connection, sock=self._sock)

    async def _stop(self) -> None:
        self._listener.close()
        self._web.pre_shutdown()  # idle keep-alive connections close now
        await self._web.shutdown(self._shutdown_timeout)  # in-flight requests get the timeout, then are cut

    def stop(self, before_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        if not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.run(self._stop(), timeout=self._shutdown_timeout + 5)
            if before_close is not None:
                with contextlib.suppress(Exception):
                    self.run(before_close(), timeout=5)
            self._close_loop()
        if self._unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
        self._sock.close()
