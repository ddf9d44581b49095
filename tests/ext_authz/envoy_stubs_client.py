"""A Check client built only from Envoy's own generated stubs (the `xds-protos` package).

Run as a separate process: pep's vendored subset and xds-protos register the same proto
files, so one process cannot load both. Reads {"target", "requests": [...]} as JSON on
stdin, writes one JSON result per request on stdout.
"""

from __future__ import annotations

import json
import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc


def main() -> None:
    job = json.load(sys.stdin)
    out = []
    with grpc.insecure_channel(job["target"]) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for spec in job["requests"]:
            req = external_auth_pb2.CheckRequest()
            http = req.attributes.request.http
            http.method, http.path, http.host, http.scheme = spec["method"], spec["path"], spec["host"], "https"
            http.id = "envoy-stub"
            http.headers.update(spec.get("headers", {}))
            req.attributes.source.certificate = spec.get("certificate", "")
            req.attributes.context_extensions.update(spec.get("extensions", {}))
            resp = stub.Check(req, timeout=10)
            result = {"code": resp.status.code, "kind": resp.WhichOneof("http_response")}
            if result["kind"] == "denied_response":
                d = resp.denied_response
                result["http_status"] = d.status.code
                result["headers"] = [[h.header.key, h.header.value] for h in d.headers]
                result["body"] = json.loads(d.body)
            else:
                ok = resp.ok_response
                result["headers"] = [[h.header.key, h.header.value] for h in ok.headers]
                result["removed"] = list(ok.headers_to_remove)
            result["metadata"] = {k: v for k, v in resp.dynamic_metadata.items()}
            out.append(result)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
