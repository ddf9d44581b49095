"""The proxy's bounds against a client or an upstream that stalls: 408, 504, the head deadline."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.mcp import raw_post, run
from tests.harness.mcp_estate import RESOURCE, write_mcp_estate
from tests.harness.server import Harness, start_pep, stop_pep
from tests.harness.waits import metrics_text, wait_for

# Short bounds so a stall is seen quickly; the waits below allow far more than these.
BOUND_SECONDS = 1.0
GENEROUS = 30.0


class HangingUpstream:
    """A TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture(scope="module")
def hanging() -> Iterator[HangingUpstream]:
    up = HangingUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def pep(hanging: HangingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root: Path = tmp_path_factory.mktemp("pep-mcp-edges")
    mcp = {
        "listen": "127.0.0.1:0",
        "upstream": f"http://127.0.0.1:{hanging.port}/mcp",
        "resource": RESOURCE,
        "server_id": "tools",
        "timeout_seconds": BOUND_SECONDS,
        "upstream_timeout_seconds": BOUND_SECONDS,
        "header_timeout_seconds": BOUND_SECONDS,
    }
    h = start_pep(root, write_mcp_estate(root / "policies"), mcp=mcp)
    yield h
    stop_pep(h)


def _url(h: Harness) -> str:
    return f"http://{h.server.mcp_address}/mcp"


def test_an_upstream_that_never_answers_is_504_after_the_decision(pep: Harness) -> None:
    token = pep.token(sub="alice", act_chain=("assistant",), audience=RESOURCE)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {}}}
    response = run(raw_post(_url(pep), call, {"authorization": f"Bearer {token}"}))
    assert response.status == 504
    assert "did not answer in time" in response.json()["error"]["message"]
    # The call was decided (and logged) before the upstream was asked.
    assert any(line["action"] == "call_tool" and line["decision"] == "allow" for line in pep.log_lines(1))


def _timeouts_counted(h: Harness) -> float:
    for line in metrics_text(h).splitlines():
        if line.startswith('pep_mcp_upstream_errors_total{status="504"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_list_from_an_upstream_that_never_answers_is_504(pep: Harness) -> None:
    token = pep.token(sub="alice", act_chain=("assistant",), audience=RESOURCE)
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    before = _timeouts_counted(pep)
    response = run(raw_post(_url(pep), listing, {"authorization": f"Bearer {token}"}))
    assert response.status == 504
    assert _timeouts_counted(pep) == before + 1


def _connect(h: Harness) -> socket.socket:
    host, port = h.server.mcp_address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=GENEROUS)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_a_head_that_never_ends_loses_its_connection(pep: Harness) -> None:
    conn = _connect(pep)
    conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\n")
    closed = threading.Event()

    def watch() -> None:
        _read_all(conn)
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    assert wait_for(closed.is_set, timeout=GENEROUS)
    conn.close()


def test_a_body_that_never_arrives_is_408(pep: Harness) -> None:
    conn = _connect(pep)
    head = b"POST /mcp HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    conn.sendall(head + b'{"jsonrpc"')
    answer = _read_all(conn)
    conn.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408")
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert "did not arrive" in body["error"]["message"]


def test_bodies_held_at_once_are_bounded(hanging: HangingUpstream, tmp_path: Path) -> None:
    """threads x max_body_bytes of bodies may be held at once; a body past that is refused 503."""
    mcp = {
        "listen": "127.0.0.1:0",
        "upstream": f"http://127.0.0.1:{hanging.port}/mcp",
        "resource": RESOURCE,
        "server_id": "tools",
        "threads": 1,
        "max_body_bytes": 1000,
        "timeout_seconds": GENEROUS,
    }
    h = start_pep(tmp_path, write_mcp_estate(tmp_path / "policies"), mcp=mcp)
    try:
        held = _connect(h)  # 900 of its 1,000 bytes arrive, the rest never does
        held.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        held.sendall(b" " * 900)
        answered = threading.Event()
        result: dict[str, int] = {}

        def second() -> None:
            body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}' + b" " * 150
            conn = _connect(h)
            conn.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: pep\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            result["status"] = int(_read_all(conn).split(b" ", 2)[1])
            conn.close()
            answered.set()

        # The held body must have reached pep first: wait until pep counts it, then send the second.
        assert wait_for(lambda: h.server.mcp is not None and h.server.mcp.held_bytes >= 900, timeout=GENEROUS)
        threading.Thread(target=second, daemon=True).start()
        assert answered.wait(GENEROUS)
        assert result["status"] == 503
        held.close()
    finally:
        stop_pep(h)
