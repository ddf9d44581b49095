"""Waiting on a running pep: polling a condition, reading its metrics, finding a free port."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable

from tests.harness.server import Harness


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def metrics_text(h: Harness) -> str:
    with urllib.request.urlopen(f"http://{h.server.metrics_address}/metrics", timeout=5) as resp:
        return resp.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
