"""A real pep server on ephemeral ports, and a real gRPC client to it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.config import parse_config
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.server import Server, build_server
from tests.harness.estate import write_estate

ISSUER = "https://idp.test"
AUDIENCE = "pep-test"


@dataclass
class Harness:
    server: Server
    channel: grpc.Channel
    stub: pb_grpc.AuthorizerStub
    key_path: str
    jwks_path: str
    log_path: Path
    policies: Path

    def token(self, sub: str = "alice", act_chain: tuple[str, ...] = ("worker",), **kw: Any) -> str:
        kw.setdefault("issuer", ISSUER)
        kw.setdefault("audience", AUDIENCE)
        return devtoken.mint_token(self.key_path, sub=sub, act_chain=act_chain, **kw)

    def authorize(
        self,
        token: str,
        action: str = "read",
        resource: tuple[str, str] = ("Doc", "plan"),
        context: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        **fields: Any,
    ) -> pb.AuthorizeResponse:
        return self.stub.Authorize(request(token, action, resource, context, attributes, **fields), timeout=10)

    def log_lines(self, wait_for: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            lines = (
                [json.loads(x) for x in self.log_path.read_text().splitlines() if x.strip()]
                if self.log_path.exists()
                else []
            )
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


def request(
    token: str,
    action: str = "read",
    resource: tuple[str, str] = ("Doc", "plan"),
    context: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> pb.AuthorizeRequest:
    req = pb.AuthorizeRequest(token=token, action=action, **fields)
    if resource:
        req.resource.type, req.resource.id = resource
    if attributes is not None:
        req.resource.attributes.CopyFrom(struct(attributes))
    if context is not None:
        req.context.CopyFrom(struct(context))
    return req


def start(tmp_path: Path, policies: Path, **overrides: Any) -> Server:
    """A server over `policies`, its dev keys and decision log under `tmp_path`; lean metrics."""
    keys = tmp_path / "keys"
    _, jwks_path = devtoken.ensure_dev_keys(str(keys))
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "policies": str(policies),
        "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks_path, "algorithms": ["ES256"]}],
        "decision_log": {"sink": str(tmp_path / "decisions.log")},
        "shutdown_grace_seconds": 0.5,
    }
    raw.update(overrides)
    return build_server(parse_config(raw), metrics=Metrics(process=False), max_workers=4)


def open_harness(tmp_path: Path, policies: Path | None = None, **overrides: Any) -> Harness:
    """`start`, plus a channel and stub to the server (over the fixed estate unless `policies`)."""
    policies = policies or write_estate(tmp_path / "policies")
    server = start(tmp_path, policies, **overrides)
    channel = grpc.insecure_channel(server.addresses[0])
    key_path, jwks_path = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    return Harness(
        server, channel, pb_grpc.AuthorizerStub(channel), key_path, jwks_path, tmp_path / "decisions.log", policies
    )


def start_pep(root: Path, policies: Path | None = None, **overrides: Any) -> Harness:
    """The same set-up with the full `Metrics()` pep serves in production, and a quick reload."""
    key_path, jwks_path = devtoken.ensure_dev_keys(str(root / "keys"))
    log_path = root / "decisions.log"
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "policies": str(policies or write_estate(root / "policies")),
        "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks_path, "algorithms": ["ES256"]}],
        "decision_log": {"sink": str(log_path)},
        "shutdown_grace_seconds": 0.5,
        "reload": {"settle_seconds": 0.05, "poll_seconds": 30},
    }
    raw.update(overrides)
    server = build_server(parse_config(raw), metrics=Metrics(), max_workers=8)
    channel = grpc.insecure_channel(server.addresses[0])
    sink = raw["decision_log"].get("sink", "stdout")
    return Harness(
        server, channel, pb_grpc.AuthorizerStub(channel), key_path, jwks_path, Path(sink), Path(raw["policies"])
    )


def stop_pep(h: Harness) -> None:
    h.channel.close()
    h.server.stop(0)
