"""The AuthZEN listener under hostile clients, over raw sockets: slow heads and bodies, too many
connections, ambiguous framing. Each bound is shown by a normal request still being answered."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pep.config import parse_config
from pep.errors import ConfigError, ListenError
from tests.harness.authzen import PIDS, Pep

BODY = json.dumps(
    {
        "subject": {"type": "user", "id": PIDS["morty"]},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "morty@the-citadel.com"}},
    }
).encode()
HEAD = b"POST /access/v1/evaluation HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\n"


def connect(pep: Pep) -> socket.socket:
    host, _, port = pep.server.authzen_address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply


def send(pep: Pep, data: bytes) -> tuple[int, Any]:
    """One raw request on its own connection, asking the server to close after: (status, JSON body)."""
    with connect(pep) as s:
        s.sendall(data.replace(b"\r\nHost: pep\r\n", b"\r\nHost: pep\r\nConnection: close\r\n", 1))
        reply = read_all(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def allowed(pep: Pep) -> bool:
    r = pep.client.evaluation(json.loads(BODY))
    return r.status == 200 and r.body["decision"] is True


@contextmanager
def held(pep: Pep, count: int, first: bytes = b"", drip: bytes = b"") -> Iterator[list[socket.socket]]:
    """`count` open connections that send `first`, then `drip` every half second, until closed."""
    socks = [connect(pep) for _ in range(count)]
    stop = threading.Event()
    for s in socks:
        if first:
            s.sendall(first)

    def dripping() -> None:
        while not stop.wait(0.5):
            for s in socks:
                try:
                    s.sendall(drip)
                except OSError:
                    pass  # closed by the server: what the test waits for

    thread = threading.Thread(target=dripping, daemon=True)
    if drip:
        thread.start()
    try:
        yield socks
    finally:
        stop.set()
        for s in socks:
            s.close()


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:
            pass  # refused while the server has not yet seen the held connections close
        time.sleep(0.1)
    return False


# --- (a) the whole head within header_timeout_seconds -----------------------------------------------


def test_slow_headers_do_not_stall_other_clients_and_are_cut(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(threads=1, header_timeout_seconds=3, max_connections_per_client=64)
    with held(pep, 12, first=HEAD, drip=b"X-Slow: 1\r\n") as slow:
        assert allowed(pep)  # twelve slow heads against one worker thread: still answered
        for s in slow:
            s.settimeout(60)
            reply = read_all(s)  # returns once the server closes the connection
            assert reply == b"" or reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert allowed(pep)


def test_a_connection_that_sends_nothing_is_closed(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(header_timeout_seconds=1)
    with held(pep, 1) as (silent,):
        silent.settimeout(60)
        assert read_all(silent) == b""


def test_the_head_deadline_defaults_to_ten_seconds() -> None:
    assert parse_config({}).authzen.header_timeout_seconds == 10
    assert parse_config({}).authzen.max_connections_per_client == 32


# --- (b) connections per client and in all ------------------------------------------------------------


def test_connections_per_client_are_capped_with_a_json_503(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(max_connections_per_client=3)
    with held(pep, 3):
        status, body = send(pep, HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
        assert status == 503
        assert body == {"error": {"status": 503, "message": "more than 3 connections from this client"}}
    assert wait_until(lambda: allowed(pep))  # once the held connections are gone


def test_connections_in_all_are_capped(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(threads=1, max_connections_per_client=1000, header_timeout_seconds=2)  # 32 x threads in all
    with held(pep, 32):
        with connect(pep) as extra:
            extra.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
            assert read_all(extra) == b""  # closed unanswered
    assert wait_until(lambda: allowed(pep))


def test_requests_past_the_queue_bound_get_a_json_503(pep_factory: Callable[..., Pep]) -> None:
    # One worker: 1 + 16 requests in progress; these 17 never finish their bodies.
    pep = pep_factory(threads=1, timeout_seconds=60)
    with held(pep, 17, first=HEAD + b"Content-Length: 1000\r\n\r\n{"):
        assert wait_until(lambda: send(pep, HEAD + b"Content-Length: 2\r\n\r\n{}")[0] == 503)
        status, body = send(pep, HEAD + b"Content-Length: 2\r\n\r\n{}")
        assert (status, body["error"]["message"]) == (503, "pep is busy: 17 requests in progress")
    assert wait_until(lambda: allowed(pep))


def test_bodies_held_at_once_are_bounded_and_trickling_bodies_stall_no_one(pep_factory: Callable[..., Pep]) -> None:
    # One worker, bodies of at most 1,000 bytes: 1,000 bytes of bodies may be held at once.
    pep = pep_factory(threads=1, max_body_bytes=1000, timeout_seconds=30)
    # Eight clients trickle a body a byte at a time: they hold a few bytes and stall nobody.
    with held(pep, 8, first=HEAD + b"Content-Length: 1000\r\n\r\n{", drip=b" "):
        assert allowed(pep)
    # One client holds 900 bytes of an unfinished body: the next body that does not fit is a 503.
    with held(pep, 1, first=HEAD + b"Content-Length: 1000\r\n\r\n" + b" " * 900):
        time.sleep(0.5)  # let the listener read what was sent
        status, body = send(pep, HEAD + b"Content-Length: 500\r\n\r\n" + b" " * 500)
        assert status == 503 and "bytes of request bodies held" in body["error"]["message"]
    assert wait_until(lambda: allowed(pep))


# --- (c) ambiguous framing: 400 (or 431) with the JSON error body, nothing decided ----------------------

LENGTH = b"Content-Length: %d\r\n" % len(BODY)
FRAMING = {
    "duplicate Content-Length, same value": (HEAD + LENGTH + LENGTH + b"\r\n" + BODY, 400, "Duplicate Content-Length"),
    "duplicate Content-Length, different values": (
        HEAD + LENGTH + b"Content-Length: 2\r\n\r\n" + BODY,
        400,
        "Duplicate Content-Length",
    ),
    "a Content-Length list": (
        HEAD + b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY,
        400,
        "Content-Length",
    ),
    "Content-Length with Transfer-Encoding": (
        HEAD + LENGTH + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
        400,
        "Transfer-Encoding can't be present with Content-Length",
    ),
    "Transfer-Encoding with Content-Length": (
        HEAD + b"Transfer-Encoding: chunked\r\n" + LENGTH + b"\r\n" + BODY,
        400,
        "Content-Length",
    ),
    "Transfer-Encoding other than chunked": (HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + BODY, 400, "Encoding"),
    "chunked, not last": (HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + BODY, 400, "Transfer-Encoding"),
    "Transfer-Encoding twice": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
    "a space before the colon": (HEAD + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, "header"),
    "a bad chunk size": (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
    "obs-fold": (HEAD + b"X-Folded: a\r\n b\r\n" + LENGTH + b"\r\n" + BODY, 400, "malformed HTTP request"),
    "a bare LF": (HEAD.replace(b"\r\n", b"\n") + LENGTH.replace(b"\r\n", b"\n") + b"\n" + BODY, 400, "malformed"),
    "a negative Content-Length": (HEAD + b"Content-Length: -1\r\n\r\n" + BODY, 400, "Content-Length"),
    "a request line over 4 KiB": (
        b"POST /access/v1/evaluation?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: pep\r\n\r\n",
        400,
        "the request line is longer than 4096 bytes",
    ),
    "a header over 8 KiB": (HEAD + b"X-Big: " + b"a" * 9000 + b"\r\n" + LENGTH + b"\r\n" + BODY, 431, "8190 bytes"),
    "more than 64 headers": (
        HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(70)) + LENGTH + b"\r\n" + BODY,
        431,
        "at most 64 request headers",
    ),
    "Authorization twice": (
        HEAD + b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n" + LENGTH + b"\r\n" + BODY,
        400,
        "the Authorization header is sent more than once",
    ),
}


@pytest.mark.parametrize(("raw", "status", "message"), FRAMING.values(), ids=FRAMING.keys())
def test_ambiguous_framing_is_refused_in_json(todo: Pep, raw: bytes, status: int, message: str) -> None:
    marker = f"framing-{zlib.crc32(raw)}"
    tagged = raw.replace(b"\r\nHost: pep\r\n", b"\r\nHost: pep\r\nX-Request-ID: %s\r\n" % marker.encode())
    got, body = send(todo, tagged)
    assert got == status, body
    assert body["error"]["status"] == status
    assert message in body["error"]["message"]
    # Nothing was decided: the log (in order) has the request after it but not this one.
    assert todo.client.evaluation(json.loads(BODY), **{"X-Request-ID": f"after-{marker}"}).body["decision"] is True
    assert todo.logged(f"after-{marker}", 1) and not todo.logged(marker, 0)


def test_a_smuggled_request_behind_a_refused_one_is_never_answered(todo: Pep) -> None:
    smuggled = b"GET /.well-known/authzen-configuration HTTP/1.1\r\nHost: pep\r\n\r\n"
    with connect(todo) as s:
        s.sendall(HEAD + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        reply = read_all(s)
    assert reply.count(b"HTTP/1.") == 1 and b" 400 " in reply.split(b"\r\n")[0]


# --- (d) a body that stops arriving is cut at timeout_seconds ----------------------------------------


def test_a_stalled_body_is_cut_with_a_json_408(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(threads=1, timeout_seconds=1)
    with connect(pep) as s:
        s.sendall(HEAD + b"X-Request-ID: stalled\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:10])
        assert allowed(pep)  # the stalled body holds no worker
        reply = read_all(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"x-request-id: stalled" in head.lower() and b"connection: close" in head.lower()
    assert json.loads(body) == {"error": {"status": 408, "message": "the body did not arrive within 1 seconds"}}


def test_a_chunked_body_that_stops_is_cut(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(timeout_seconds=1)
    with connect(pep) as s:
        s.sendall(HEAD + b'Transfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n')
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 408 ")


def test_keep_alive_and_pipelining_still_work(todo: Pep) -> None:
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    last = HEAD + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    with connect(todo) as s:
        s.sendall(request + request + last)
        replies = read_all(s)
    assert replies.count(b"HTTP/1.1 200 OK") == 3


def test_a_client_that_half_closes_is_still_answered(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(header_timeout_seconds=1)
    with connect(pep) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
        s.shutdown(socket.SHUT_WR)
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 200 OK") and b'"decision": true' in reply


# --- the two config keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authzen", "problem"),
    [
        ({"header_timeout_seconds": 0}, "authzen.header_timeout_seconds: must be a positive number"),
        ({"header_timeout_seconds": float("nan")}, "authzen.header_timeout_seconds: must be a positive number"),
        ({"header_timeout_seconds": "10"}, "authzen.header_timeout_seconds: must be a number"),
        ({"timeout_seconds": float("inf")}, "authzen.timeout_seconds: must be a positive number"),
        ({"max_connections_per_client": 0}, "authzen.max_connections_per_client: must be at least 1"),
        ({"max_connections_per_client": 2.5}, "authzen.max_connections_per_client: must be a whole number"),
    ],
)
def test_config_errors_for_the_listener_bounds(authzen: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"authzen": {"listen": "127.0.0.1:8080", **authzen}})
    assert problem in str(err.value)


# --- closed connections free their slots; one listener per address ---------------------------------


def test_closed_connections_free_their_client_slots(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory(max_connections_per_client=2)
    assert all(allowed(pep) for _ in range(10))  # each on a connection the client then closes


def test_a_second_listener_on_the_same_address_fails(pep_factory: Callable[..., Pep], tmp_path: Path) -> None:
    first = pep_factory()
    with pytest.raises(ListenError, match=re.escape(first.server.authzen_address)):
        pep_factory(listen=first.server.authzen_address)
    path = tmp_path / "authzen.sock"
    unix = pep_factory(listen=f"unix://{path}")
    with pytest.raises(ListenError, match="in use"):
        pep_factory(listen=f"unix://{path}")
    assert allowed(unix)
    unix.server.stop(0)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file no one listens on is taken over
    stale.close()
    assert allowed(pep_factory(listen=f"unix://{path}"))


def test_every_refusal_that_decides_nothing_is_counted(pep_factory: Callable[..., Pep]) -> None:
    pep = pep_factory()

    def refusals(status: int) -> float:
        value = pep.server.metrics.registry.get_sample_value("pep_http_refusals_total", {"status": str(status)})
        return value or 0.0

    assert send(pep, HEAD + b"Content-Length: 3\r\n\r\n{x}")[0] == 400  # not JSON: nothing decided
    assert send(pep, HEAD.replace(b"/access/v1/evaluation", b"/nope") + b"Content-Length: 2\r\n\r\n{}")[0] == 404
    assert send(pep, HEAD + LENGTH + LENGTH + b"\r\n" + BODY)[0] == 400  # framing, refused by the parser
    assert (refusals(400), refusals(404)) == (2, 1)
    nulls = json.loads(BODY)
    nulls["context"] = {"n": None}  # refused by the pipeline: decided, logged and counted as a decision
    assert pep.client.evaluation(nulls).status == 400
    assert refusals(400) == 2
    assert pep.log_lines(1) and len(pep.log_lines()) == 1
