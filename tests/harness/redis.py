"""A real Redis for tests: Debian's redis-server on a free port, no persistence, in a temp dir."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.harness.waits import free_port


class RedisServer:
    """One redis-server; `restart()` brings it back on the same port, empty (no persistence)."""

    def __init__(self, binary: str, workdir: Path, password: str = "") -> None:
        self.binary, self.workdir, self.port, self.password = binary, workdir, free_port(), password
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir), *(["--requirepass", self.password] if self.password else [])]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password or None, decode_responses=True, socket_timeout=5
        )
