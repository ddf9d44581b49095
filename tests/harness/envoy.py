"""Envoy ext_authz CheckRequests as Envoy's filter sends them, and a pep to send them to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pep._proto.envoy.service.auth.v3 import external_auth_pb2 as ea
from pep._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from tests.harness.server import Harness

HOST = "api.example.com"


def check_request(
    method: str = "GET",
    path: str = "/docs/plan",
    *,
    headers: dict[str, str] | None = None,
    host: str = HOST,
    scheme: str = "https",
    certificate: str = "",
    extensions: dict[str, str] | None = None,
    request_id: str = "req-1",
) -> ea.CheckRequest:
    req = ea.CheckRequest()
    http = req.attributes.request.http
    http.id, http.method, http.path, http.host, http.scheme = request_id, method, path, host, scheme
    http.protocol = "HTTP/1.1"
    for k, v in (headers or {}).items():
        http.headers[k] = v
    req.attributes.source.certificate = certificate
    for k, v in (extensions or {}).items():
        req.attributes.context_extensions[k] = v
    return req


def mapped_headers(
    headers: dict[str, str] | None = None, action: str = "read", resource: str = 'Doc::"plan"'
) -> dict[str, str]:
    return {"x-pep-action": action, "x-pep-resource": resource, **(headers or {})}


def header_values(options: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for option in options:
        out.setdefault(option.header.key, []).append(option.header.value)
    return out


@dataclass
class Ext:
    h: Harness
    stub: ea_grpc.AuthorizationStub

    def check(self, req: ea.CheckRequest) -> ea.CheckResponse:
        return self.stub.Check(req, timeout=10)
