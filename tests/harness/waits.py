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


# Ports handed out in this process: the kernel may offer a just-closed port again, and two
# servers configured before either binds would then clash.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, never one this process handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
