"""What every bench module shares: where things are, which core runs what, ports, progress."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU, CLIENT_CPU = "0", "1"
ISSUER, AUDIENCE = "https://bench.invalid", "pep-bench"


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)
