"""A `pep serve` process of a fleet: its own ports, config and decision log, over a shared estate."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from pep._proto.pep.v1 import admin_pb2_grpc
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.dev import tokens as devtoken
from tests.harness.waits import free_port

ISSUER, AUDIENCE = "https://idp.test", "pep-test"


class Replica:
    """One `pep serve` over `root/policies`, with `state` as its shared-state section (and `extra` sections)."""

    def __init__(self, root: Path, name: str, keys: tuple[str, str], state: dict[str, Any], **extra: Any) -> None:
        self.name, self.dir = name, root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = keys[0]
        self.listen, self.admin_listen, self.metrics_listen = (f"127.0.0.1:{free_port()}" for _ in range(3))
        self.log = self.dir / "decisions.log"
        config = {
            "listen": self.listen,
            "admin_listen": self.admin_listen,
            "metrics_listen": self.metrics_listen,
            "policies": str(root / "policies"),
            "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": keys[1], "algorithms": ["ES256"]}],
            "decision_log": {"sink": str(self.log)},
            "state": state,
            **extra,
        }
        (self.dir / "pep.yaml").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def spawn(self) -> Replica:
        argv = [sys.executable, "-m", "pep", "serve", "--config", str(self.dir / "pep.yaml"), "--log-level", "WARNING"]
        self.proc = subprocess.Popen(argv, stderr=open(self.dir / "stderr.log", "wb"))
        return self

    def ready(self) -> Replica:
        self.channel = grpc.insecure_channel(self.listen)
        grpc.channel_ready_future(self.channel).result(timeout=60)
        return self

    def token(self, agent: str, **claims: Any) -> str:
        return devtoken.mint_token(self.key, issuer=ISSUER, audience=AUDIENCE, sub="alice", act_chain=[agent], **claims)

    def call(self, agent: str, **fields: Any) -> pb.AuthorizeResponse:
        assert self.channel is not None
        token = fields.pop("token", None) or self.token(agent)
        req = pb.AuthorizeRequest(token=token, action="read", resource=pb.Resource(type="Doc", id="plan"), **fields)
        return pb_grpc.AuthorizerStub(self.channel).Authorize(req, timeout=10)

    def decide(self, agent: str) -> str:
        return str(self.call(agent).reason)

    def admin(self) -> admin_pb2_grpc.AdminStub:
        return admin_pb2_grpc.AdminStub(grpc.insecure_channel(self.admin_listen))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str) -> float:
        """An unlabelled sample's value, or NaN when it is not exported."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def events(self) -> list[dict[str, Any]]:
        """The admin event lines of its decision log."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [e for e in map(json.loads, lines) if e.get("event") == "admin"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            self.proc.wait(20)
