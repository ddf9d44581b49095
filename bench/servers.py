"""The servers make bench measures, one at a time on the server core, and what they cost.

Each yields a `Running`: the gRPC address, the server's CPU seconds so far (`cpu_s`: its
process and children, from /proc), and `tally()`: decision-log entries and denies, read after
the server stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import AUDIENCE, ISSUER, ROOT, SERVER_CPU, free_port, pinned

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of pid and its descendants (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += process_cpu_s(int(child))
        return total
    except (OSError, IndexError, ValueError):
        return 0.0


def core_busy() -> dict[str, float]:
    """Busy CPU seconds per core since boot, from /proc/stat: user, nice and system, what processes
    are charged with (interrupt time, where the kernel does much of loopback TCP, is left out)."""
    busy = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name.startswith("cpu") and name != "cpu":
                user, nice, system = (int(t) for t in ticks[:3])
                busy[name[3:]] = (user + nice + system) / TICKS
    except OSError:
        pass
    return busy


class Running:
    def __init__(
        self, address: str, pid: int, tally: Callable[[], dict[str, int]] | None = None, metrics: str = ""
    ) -> None:
        self.address, self.pid, self._tally, self.metrics = address, pid, tally, metrics

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def tally(self) -> dict[str, int]:
        """After the server stopped: what its log holds."""
        return self._tally() if self._tally else {}

    def memo(self) -> dict[str, int]:
        """While it runs: pep's decision memo hits and misses so far."""
        return memo_counts(self.metrics) if self.metrics else {}


def memo_counts(metrics: str) -> dict[str, int]:
    """pep_decision_memo_total by result, read off pep's /metrics."""
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()
    found = re.findall(r'^pep_decision_memo_total\{result="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    return {f"memo_{result}": int(float(n)) for result, n in found}


def pep_tally(log: Path) -> Callable[[], dict[str, int]]:
    def tally() -> dict[str, int]:
        logged = denied = 0
        with open(log) as f:
            for line in f:
                logged += 1
                denied += '"decision": "deny"' in line or '"decision":"deny"' in line
        log.unlink()
        return {"logged": logged, "denied": denied}

    return tally


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, int] | None]:
    """A throwaway redis-server on the server core (no persistence): its URL and pid; None when
    it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis  # a pep dependency; imported here so the rest of the bench does not need it

    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=subprocess.DEVNULL)
    try:
        client, deadline = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2), time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Server kinds that differ from `pep` only in the decision log's settings.
LOG_MODES = {"pep-required": {"required": True}, "pep-fsync": {"required": True, "sync": "fsync"}}


@contextmanager
def grpc_server(kind: str, tmp: Path, jwks: str, policies: Path, redis_url: str | None = None) -> Iterator[Running]:
    """kind: noop (bench/noop_server.py), pep, pep-shared (state in Redis at redis_url), or one
    of LOG_MODES (pep with the decision log required)."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp / "decisions.log"
    metrics = f"127.0.0.1:{free_port()}"
    if kind == "noop":
        argv = [sys.executable, "-m", "bench.noop_server", "--listen", address]
    else:
        log.unlink(missing_ok=True)
        config = tmp / "pep.yaml"
        config.write_text(
            json.dumps(
                {
                    "listen": address,
                    "metrics_listen": metrics,
                    "admin_listen": "",
                    "policies": str(policies),
                    "issuers": [
                        {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"]}
                    ],
                    "decision_log": {"sink": str(log), **LOG_MODES.get(kind, {})},
                    **({"state": {"redis_url": redis_url, "timeout_ms": 200}} if kind == "pep-shared" else {}),
                }
            )
        )
        argv = [sys.executable, "-m", "pep.cli", "serve", "--config", str(config), "--log-level", "WARNING"]
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            if kind != "noop":
                health = health_pb2_grpc.HealthStub(channel)
                deadline = time.monotonic() + 30
                while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
                    if time.monotonic() > deadline:
                        raise RuntimeError("pep did not become ready")
                    time.sleep(0.1)
        yield Running(address, proc.pid, None if kind == "noop" else pep_tally(log), "" if kind == "noop" else metrics)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
