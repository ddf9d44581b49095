"""A gRPC server interceptor that checks every inbound call with pep."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from pep.client._common import TOKEN_REASONS, Credentials, ResourceLike
from pep.client._sync import Authorizer

_NEVER_CHECKED = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def _default_action(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def _default_resource(method: str, _request: Any) -> ResourceLike:
    return ("Service", method.strip("/").split("/", 1)[0])


class AuthorizationInterceptor(grpc.ServerInterceptor):
    """Check every inbound call of a (sync) gRPC server with pep before its handler runs.

    The caller's token comes from the `authorization` metadata (`Bearer` or `DPoP`), the
    proof from `dpop` (with `htu` = `https://<authority><method>`, `authority` given here),
    and the client certificate from the TLS session. `action(method)` names the action
    (default: the method name; None refuses the call) and `resource(method, request)` the
    resource (default `Service::"<package.Service>"`; `request` is None for client
    streaming calls). A deny aborts the call, its handler never running: UNAUTHENTICATED
    for token failures, UNAVAILABLE when pep could not answer, PERMISSION_DENIED otherwise,
    with `x-pep-decision-id` and `x-pep-reason` (and pep's DPoP nonce as `dpop-nonce`, when it
    names one) in the trailing metadata.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        action: Callable[[str], str | None] | Mapping[str, str] = _default_action,
        resource: Callable[[str, Any], ResourceLike] = _default_resource,
        authority: str = "",
        exempt: Iterable[str] = _NEVER_CHECKED,
    ) -> None:
        self._authorizer = authorizer
        self._action = action.get if isinstance(action, Mapping) else action
        self._resource = resource
        self._authority = authority
        self._exempt = tuple(exempt)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(self._exempt):
            return handler
        pairs = handler_call_details.invocation_metadata or ()
        metadata = {k: v for k, v in pairs if isinstance(v, str)}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._checked(handler.unary_unary, method, metadata, with_request=True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._checked(handler.unary_stream, method, metadata, with_request=True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._checked(handler.stream_unary, method, metadata, with_request=False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._checked(handler.stream_stream, method, metadata, with_request=False),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _checked(
        self, behavior: Callable[..., Any], method: str, metadata: Mapping[str, str], *, with_request: bool
    ) -> Callable[..., Any]:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            self._check(method, metadata, request_or_iterator if with_request else None, context)
            return behavior(request_or_iterator, context)

        return run

    def _check(self, method: str, metadata: Mapping[str, str], request: Any, context: grpc.ServicerContext) -> None:
        action = self._action(method)
        if not action:
            context.set_trailing_metadata((("x-pep-reason", "invalid_request"),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"denied by pep: no action is mapped for {method}")
        try:
            resource = self._resource(method, request)
        except Exception as e:  # a mapping bug denies
            context.set_trailing_metadata((("x-pep-reason", "invalid_request"),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"denied by pep: no resource for {method}: {e}")
        dpop = metadata.get("dpop", "")
        creds = Credentials(
            token=metadata.get("authorization", ""),
            dpop_proof=dpop,
            http_method="POST" if dpop else "",
            http_uri=f"https://{self._authority}{method}" if dpop and self._authority else "",
            client_cert_thumbprint=_peer_thumbprint(context),
        )
        decision = self._authorizer.authorize(creds, str(action), resource, request_id=metadata.get("x-request-id", ""))
        if decision.allowed:
            return
        trailers = [("x-pep-decision-id", decision.decision_id), ("x-pep-reason", decision.reason)]
        if decision.dpop_nonce:  # RFC 9449 8: the nonce the caller's next proof must carry
            trailers.append(("dpop-nonce", decision.dpop_nonce))
        context.set_trailing_metadata(tuple(trailers))
        if not decision.answered:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"denied: pep could not answer ({decision.status.name})")
        code = (
            grpc.StatusCode.UNAUTHENTICATED if decision.reason in TOKEN_REASONS else grpc.StatusCode.PERMISSION_DENIED
        )
        context.abort(code, f"denied by pep: {decision.reason}")


def _peer_thumbprint(context: grpc.ServicerContext) -> str:
    """base64url SHA-256 of the client's DER certificate on a TLS connection, else ""."""
    try:
        pem = context.auth_context().get("x509_pem_cert")
    except Exception:  # no TLS, or a context without auth data
        return ""
    if not pem:
        return ""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(pem[0]).public_bytes(serialization.Encoding.DER)
    # RFC 8705 x5t#S256: unpadded base64url of the certificate's SHA-256.
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")
