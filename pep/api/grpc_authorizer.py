"""gRPC <-> plain data. Maps outcomes to status codes; nothing else lives here."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import json_format, struct_pb2

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.api.ingress import traceparent
from pep.decision import Decision, Fault
from pep.pipeline import Pipeline, Request
from pep.policy.request import Check, ResourceRef
from pep.tokens.verifier import Credentials

MAX_BATCH = 1000

_STATUS = {
    Fault.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.INTERNAL: grpc.StatusCode.INTERNAL,
}


def _struct(value: struct_pb2.Struct, present: bool) -> dict:
    return json_format.MessageToDict(value) if present else {}


def _resource(msg: pb.Resource, present: bool) -> ResourceRef:
    if not present:
        return ResourceRef("", "")
    return ResourceRef(
        type=msg.type,
        id=msg.id,
        attributes=_struct(msg.attributes, msg.HasField("attributes")),
        parents=tuple((p.type, p.id) for p in msg.parents),
    )


def _check(msg: pb.AuthorizeRequest | pb.Check, request_id: str) -> Check:
    return Check(
        action=msg.action,
        resource=_resource(msg.resource, msg.HasField("resource")),
        context=_struct(msg.context, msg.HasField("context")),
        request_id=msg.request_id or request_id,
    )


def _credentials(msg: pb.AuthorizeRequest | pb.AuthorizeBatchRequest) -> Credentials:
    return Credentials(
        token=msg.token,
        dpop_proof=msg.dpop_proof,
        http_method=msg.http_method,
        http_uri=msg.http_uri,
        client_cert_thumbprint=msg.client_cert_thumbprint,
    )


def to_response(d: Decision) -> pb.AuthorizeResponse:
    return pb.AuthorizeResponse(
        decision=pb.DECISION_ALLOW if d.answer_allowed else pb.DECISION_DENY,
        reason=d.reason.value,
        policies=d.policies,
        errors=d.errors,
        decision_id=d.decision_id,
        policy_version=d.policy_version,
        agent=d.agent,
        on_behalf_of=d.on_behalf_of,
        delegation_chain=d.delegation_chain,
    )


def _traceparent(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return traceparent(value)
    return ""


def _abort_on_fault(decisions: Sequence[Decision], context: grpc.ServicerContext) -> None:
    for d in decisions:
        if d.fault is not None:
            # INTERNAL carries no details; the others name what was wrong with the request.
            detail = "internal error" if d.fault is Fault.INTERNAL else "; ".join(d.errors) or d.reason.value
            context.abort(_STATUS[d.fault], detail)


class AuthorizerService(pb_grpc.AuthorizerServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def Authorize(self, request: pb.AuthorizeRequest, context: grpc.ServicerContext) -> pb.AuthorizeResponse:
        ask = Request([_check(request, "")], _credentials(request), traceparent=_traceparent(context))
        decisions = self._pipeline.authorize(ask)
        _abort_on_fault(decisions, context)
        return to_response(decisions[0])

    def AuthorizeBatch(
        self, request: pb.AuthorizeBatchRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizeBatchResponse:
        if not request.checks:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "checks must not be empty")
        if len(request.checks) > MAX_BATCH:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} checks per batch")
        checks = [_check(c, request.request_id) for c in request.checks]
        decisions = self._pipeline.authorize(Request(checks, _credentials(request), traceparent=_traceparent(context)))
        _abort_on_fault(decisions, context)
        return pb.AuthorizeBatchResponse(responses=[to_response(d) for d in decisions])
