"""A real pep with the AuthZEN listener on an ephemeral port, and a plain HTTP client to it."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pep.config import parse_config
from pep.metrics import Metrics
from pep.server import Server, build_server

TODO = Path(__file__).resolve().parents[1] / "authzen" / "todo"
# The AuthZEN working group's Todo interop cases, in the shared folder beside the repository.
INTEROP = (
    Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "authzen" / "todo-decisions-1_0-02.json"
)

PIDS = {
    "rick": "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "morty": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "summer": "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "beth": "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "jerry": "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Client:
    """HTTP/1.1 to one pep: each call on a fresh connection, over TCP or a Unix socket."""

    def __init__(self, address: str) -> None:
        self.address = address

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("unix://"):
            path = self.address[len("unix://") :]
            conn = http.client.HTTPConnection("localhost", timeout=10)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            conn.sock = sock
            return conn
        host, _, port = self.address.rpartition(":")
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            parsed = json.loads(raw) if hdrs.get("content-type", "").startswith("application/json") else raw
            return Reply(resp.status, hdrs, parsed)
        finally:
            conn.close()

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})

    def evaluation(self, body: Any, **headers: str) -> Reply:
        return self.post("/access/v1/evaluation", body, headers)

    def evaluations(self, body: Any, **headers: str) -> Reply:
        return self.post("/access/v1/evaluations", body, headers)


@dataclass
class Pep:
    server: Server
    client: Client
    log_path: Path

    def log_lines(self, wait_for: int = 0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            text = self.log_path.read_text() if self.log_path.exists() else ""
            lines = [json.loads(x) for x in text.splitlines() if x.strip()]
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def logged(self, request_id: str, count: int) -> list[dict[str, Any]]:
        """The log entries of one request, once `count` of them are written (the writer is async)."""
        deadline = time.monotonic() + 5
        while True:
            found = [e for e in self.log_lines() if e["request_id"] == request_id]
            if len(found) >= count or time.monotonic() > deadline:
                time.sleep(0.05)  # and no more than that: a short-circuited batch logs nothing after
                return [e for e in self.log_lines() if e["request_id"] == request_id]
            time.sleep(0.02)

    def decisions_total(self, decision: str, reason: str, action: str) -> float:
        labels = {"decision": decision, "reason": reason, "action": action}
        return self.server.metrics.registry.get_sample_value("pep_decisions_total", labels) or 0.0


def start_authzen(tmp: Path, policies: Path, **authzen: Any) -> Pep:
    """A pep whose AuthZEN listener trusts the body's subject (no token issuers configured)."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "decisions.log"
    raw = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "admin_listen": "",
        "policies": str(policies),
        "decision_log": {"sink": str(log_path)},
        "shutdown_grace_seconds": 0.5,
        "authzen": {"listen": "127.0.0.1:0", "trust_subject": True, **authzen},
    }
    server = build_server(parse_config(raw), metrics=Metrics(process=False), max_workers=2)
    return Pep(server, Client(server.authzen_address), log_path)
