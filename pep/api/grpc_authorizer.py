"""gRPC <-> plain data for `pep.v1.Authorizer`. Maps outcomes to status codes; nothing else lives here.

Every request pep answers reaches the pipeline, the refused ones too, so each leaves one
decision-log line and one count: a message that cannot be decoded, a Struct holding a value
Cedar cannot have (NaN, Infinity, nesting past the limit), an empty or oversized batch. A
refused batch is one line; a batch pep judges is one line per check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.api.ingress import traceparent
from pep.decision import Decision, Fault
from pep.errors import RequestError
from pep.pipeline import Pipeline, Request
from pep.policy.request import MAX_DEPTH, Check, ResourceRef, shown
from pep.tokens.verifier import Credentials

MAX_BATCH = 1000
SERVICE = "pep.v1.Authorizer"

_STATUS = {
    Fault.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Fault.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Fault.INTERNAL: grpc.StatusCode.INTERNAL,
}


class Undecodable:
    """What the deserializer hands on for bytes that are not a valid message (too deep, say)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def decoder(message: Any) -> Callable[[bytes], Any]:
    """`message.FromString`, but a decode failure becomes an `Undecodable` the handler answers."""

    def decode(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception as e:  # protobuf raises DecodeError, RecursionError or others
            return Undecodable(f"the request is not a valid {message.DESCRIPTOR.full_name}: {type(e).__name__}")

    return decode


def struct_value(value: struct_pb2.Value, where: str, depth: int = 0) -> Any:
    """A protobuf Value as plain JSON-like data; non-finite numbers and deep nesting are refused."""
    if depth > MAX_DEPTH:
        raise RequestError(f"{shown(where)}: nested deeper than {MAX_DEPTH}")
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise RequestError(f"{shown(where)}: {number!r} is not a finite number")
        return number
    if kind == "struct_value":
        return struct_dict(value.struct_value, where, depth + 1)
    if kind == "list_value":
        return [struct_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value.list_value.values)]
    return None  # null_value, or no kind set: the pipeline refuses nulls with the field's name


def struct_dict(struct: struct_pb2.Struct, where: str, depth: int = 0) -> dict[str, Any]:
    return {k: struct_value(v, f"{where}.{k}", depth) for k, v in struct.fields.items()}


def _resource(msg: pb.Resource, present: bool) -> ResourceRef:
    if not present:
        return ResourceRef("", "")
    attributes = struct_dict(msg.attributes, "resource.attributes") if msg.HasField("attributes") else {}
    return ResourceRef(msg.type, msg.id, attributes, tuple((p.type, p.id) for p in msg.parents))


def _check(msg: pb.AuthorizeRequest | pb.Check, request_id: str) -> tuple[Check, RequestError | None]:
    """The check, or the check as far as it could be read and why it is refused."""
    rid = msg.request_id or request_id
    try:
        resource = _resource(msg.resource, msg.HasField("resource"))
        context = struct_dict(msg.context, "context") if msg.HasField("context") else {}
    except RequestError as e:
        bare = ResourceRef(msg.resource.type, msg.resource.id) if msg.HasField("resource") else ResourceRef("", "")
        return Check(msg.action, bare, {}, rid), e
    return Check(msg.action, resource, context, rid), None


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
        dpop_nonce=d.dpop_nonce,
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
            # The reason and the decision's id also travel as trailers, as ext_authz sends them as headers.
            context.set_trailing_metadata((("x-pep-reason", d.reason.value), ("x-pep-decision-id", d.decision_id)))
            context.abort(_STATUS[d.fault], detail[:4096])


class AuthorizerService:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def _refuse(self, why: RequestError, check: Check, context: grpc.ServicerContext) -> None:
        """A request refused whole: one line in the log and one count, then INVALID_ARGUMENT."""
        decisions = self._pipeline.authorize(Request([check], refusal=why, traceparent=_traceparent(context)))
        _abort_on_fault(decisions, context)

    def Authorize(self, request: Any, context: grpc.ServicerContext) -> pb.AuthorizeResponse:
        if isinstance(request, Undecodable):
            self._refuse(RequestError(request.problem), Check("", ResourceRef("", "")), context)
        check, refused = _check(request, "")
        ask = Request([check], _credentials(request), traceparent=_traceparent(context), refusal=refused)
        decisions = self._pipeline.authorize(ask)
        _abort_on_fault(decisions, context)
        return to_response(decisions[0])

    def AuthorizeBatch(self, request: Any, context: grpc.ServicerContext) -> pb.AuthorizeBatchResponse:
        if isinstance(request, Undecodable):
            self._refuse(RequestError(request.problem), Check("", ResourceRef("", "")), context)
        whole = Check("", ResourceRef("", ""), request_id=request.request_id)
        if not request.checks:
            self._refuse(RequestError("checks must not be empty"), whole, context)
        if len(request.checks) > MAX_BATCH:
            self._refuse(
                RequestError(f"at most {MAX_BATCH} checks per batch, got {len(request.checks)}"), whole, context
            )
        read = [_check(c, request.request_id) for c in request.checks]
        refused = next((why for _, why in read if why is not None), None)
        ask = Request([c for c, _ in read], _credentials(request), traceparent=_traceparent(context), refusal=refused)
        decisions = self._pipeline.authorize(ask)
        _abort_on_fault(decisions, context)
        return pb.AuthorizeBatchResponse(responses=[to_response(d) for d in decisions])


def add_to_server(service: AuthorizerService, server: grpc.Server) -> None:
    """Register like the generated `add_AuthorizerServicer_to_server`, with decoders that never raise."""
    handlers = {
        "Authorize": grpc.unary_unary_rpc_method_handler(
            service.Authorize,
            request_deserializer=decoder(pb.AuthorizeRequest),
            response_serializer=pb.AuthorizeResponse.SerializeToString,
        ),
        "AuthorizeBatch": grpc.unary_unary_rpc_method_handler(
            service.AuthorizeBatch,
            request_deserializer=decoder(pb.AuthorizeBatchRequest),
            response_serializer=pb.AuthorizeBatchResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
