"""Envoy ext_authz v3 (`envoy.service.auth.v3.Authorization/Check`) <-> the decision core.

What pep reads from Envoy's `CheckRequest`:

- the access token from the `authorization` header (`Bearer` or `DPoP` scheme) and the
  proof from the `dpop` header; `htm`/`htu` from the HTTP attributes (`method`, and
  `scheme://host/path` with the query removed), never from client `X-Forwarded-*`;
- the client certificate from `source.certificate` (URL-encoded PEM, sent when the
  filter has `include_peer_certificate: true`), else from `x-forwarded-client-cert`
  `Hash=` (hex SHA-256 of the DER), both turned into the RFC 8705 base64url thumbprint;
- the action and resource, first found wins, each on its own: the route's
  `context_extensions` `pep_action`/`pep_resource` (set in Envoy's config, a client
  cannot send them), then the first `ext_authz.rules` entry matching method and path,
  then the `x-pep-action`/`x-pep-resource` headers.

It answers with a `CheckResponse`, never a gRPC error, so Envoy denies even when
`failure_mode_allow` is on: status OK (`x-pep-*` headers added upstream and downstream) or
PERMISSION_DENIED with an HTTP status (401 and a `WWW-Authenticate` challenge per RFC 6750
/ RFC 9449 for token failures, 429 when rate limited, 503 when no policy is loaded, 403
otherwise), the `x-pep-decision-id` and `x-pep-reason` headers and a small JSON body.
A request pep cannot map to an action and a resource is denied (`invalid_request`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pep._proto.envoy.config.core.v3 import base_pb2
from pep._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from pep._proto.envoy.type.v3 import http_status_pb2
from pep._proto.google.rpc import status_pb2
from pep.api.client_cert import certificate_thumbprint
from pep.api.grpc_authorizer import Undecodable, decoder
from pep.api.ingress import traceparent
from pep.config import ExtAuthzConfig
from pep.config.routes import Route, compile_route, first_match, parse_entity_ref
from pep.decision import Decision, Fault
from pep.errors import RequestError
from pep.pipeline import Pipeline, Request
from pep.policy.request import Check, ResourceRef
from pep.reasons import Reason
from pep.tokens.jws import b64url_decode
from pep.tokens.verifier import Credentials, split_scheme

log = logging.getLogger(__name__)

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
ACTION_EXTENSION = "pep_action"
RESOURCE_EXTENSION = "pep_resource"
DECISION_ID_HEADER = "x-pep-decision-id"
REASON_HEADER = "x-pep-reason"
NONCE_HEADER = "dpop-nonce"  # RFC 9449 8.1
AGENT_HEADER = "x-pep-agent"
ON_BEHALF_OF_HEADER = "x-pep-on-behalf-of"
MAX_HEADER_VALUE = 16 * 1024

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

# Reasons that mean "the credentials failed", answered 401 with a challenge.
TOKEN_REASONS = frozenset(
    {
        Reason.TOKEN_MISSING,
        Reason.TOKEN_MALFORMED,
        Reason.TOKEN_SIGNATURE_INVALID,
        Reason.TOKEN_EXPIRED,
        Reason.TOKEN_NOT_YET_VALID,
        Reason.TOKEN_ISSUER_UNTRUSTED,
        Reason.TOKEN_AUDIENCE_INVALID,
        Reason.TOKEN_ALGORITHM_REJECTED,
        Reason.TOKEN_TYPE_INVALID,
        Reason.TOKEN_CLAIMS_MISSING,
        Reason.TOKEN_REVOKED,
        Reason.DPOP_PROOF_MISSING,
        Reason.DPOP_PROOF_INVALID,
        Reason.DPOP_REPLAY,
        Reason.DPOP_NONCE_REQUIRED,
        Reason.POP_BINDING_MISMATCH,
    }
)
_DPOP_PROOF_REASONS = frozenset({Reason.DPOP_PROOF_MISSING, Reason.DPOP_PROOF_INVALID, Reason.DPOP_REPLAY})
# Fixed texts: nothing from the request ever reaches a challenge.
_DESCRIPTIONS = {
    Reason.TOKEN_MALFORMED: "The access token is malformed",
    Reason.TOKEN_SIGNATURE_INVALID: "The access token signature is invalid",
    Reason.TOKEN_EXPIRED: "The access token expired",
    Reason.TOKEN_NOT_YET_VALID: "The access token is not yet valid",
    Reason.TOKEN_ISSUER_UNTRUSTED: "The access token issuer is not trusted",
    Reason.TOKEN_AUDIENCE_INVALID: "The access token is not meant for this service",
    Reason.TOKEN_ALGORITHM_REJECTED: "The access token algorithm is not accepted",
    Reason.TOKEN_TYPE_INVALID: "The access token type is not at+jwt",
    Reason.TOKEN_CLAIMS_MISSING: "The access token lacks required claims",
    Reason.DPOP_PROOF_MISSING: "A DPoP proof is required",
    Reason.DPOP_PROOF_INVALID: "The DPoP proof is invalid",
    Reason.DPOP_REPLAY: "The DPoP proof was already used",
    Reason.DPOP_NONCE_REQUIRED: "Resource server requires nonce in DPoP proof",
    Reason.TOKEN_REVOKED: "The access token was revoked",
}
_HTTP_STATUS = {
    Reason.RATE_LIMITED: http_status_pb2.TooManyRequests,
    Reason.POLICY_UNAVAILABLE: http_status_pb2.ServiceUnavailable,
    Reason.INTERNAL_ERROR: http_status_pb2.InternalServerError,
}


@dataclass(frozen=True)
class Mapped:
    """What pep understood of one HTTP request."""

    credentials: Credentials
    check: Check
    scheme: str  # "bearer", "dpop" or "" (no Authorization header)
    problem: str = ""  # why the request has no action or resource, when it has none
    traceparent: str = ""


def request_headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    """Lower-case header map from `headers` or, with `encode_raw_headers`, `header_map`."""
    headers = {k.lower(): v for k, v in http.headers.items()}
    for h in http.header_map.headers:
        value = h.value or h.raw_value.decode("utf-8", errors="replace")
        key = h.key.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def target_uri(http: attribute_context_pb2.AttributeContext.HttpRequest) -> str:
    """`htu` for DPoP: scheme://authority/path, query and fragment removed (RFC 9449 4.3)."""
    path = http.path.split("?", 1)[0].split("#", 1)[0] or "/"
    scheme = (http.scheme or "http").lower()
    return f"{scheme}://{http.host}{path}"


def map_request(request: external_auth_pb2.CheckRequest, config: ExtAuthzConfig, routes: Sequence[Route]) -> Mapped:
    attrs = request.attributes
    http = attrs.request.http
    headers = request_headers(http)
    authorization = headers.get("authorization", "")
    scheme, _ = split_scheme(authorization) if authorization else ("", "")
    credentials = Credentials(
        token=authorization,
        dpop_proof=headers.get("dpop", ""),
        http_method=http.method,
        http_uri=target_uri(http),
        client_cert_thumbprint=certificate_thumbprint(
            attrs.source.certificate, headers.get("x-forwarded-client-cert", "") if config.trust_xfcc else ""
        ),
    )
    path = http.path.split("?", 1)[0]
    extensions = attrs.context_extensions
    routed = first_match(routes, http.method, path)
    action = extensions.get(ACTION_EXTENSION) or (routed[0] if routed else "")
    if not action and config.action_header:
        action = headers.get(config.action_header, "").strip()
    resource_text = extensions.get(RESOURCE_EXTENSION, "")
    problem = ""
    resource = ResourceRef("", "")
    if resource_text:
        resource, problem = _resource(resource_text, f"context extension {RESOURCE_EXTENSION}")
    elif routed:
        resource = ResourceRef(routed[1], routed[2])
    elif config.resource_header and headers.get(config.resource_header):
        resource, problem = _resource(headers[config.resource_header], f"header {config.resource_header}")
    if not problem and (not action or not resource.type):
        missing = " and ".join(w for w, gap in (("action", not action), ("resource", not resource.type)) if gap)
        problem = (
            f"no {missing} for {http.method[:16] or '?'} {path[:200] or '/'}: set the "
            f"{ACTION_EXTENSION}/{RESOURCE_EXTENSION} context extensions on the route, an ext_authz rule in "
            f"pep's config, or the "
            f"{config.action_header or 'action'}/{config.resource_header or 'resource'} headers"
        )
    check = Check(action=action, resource=resource, request_id=http.id or headers.get("x-request-id", ""))
    return Mapped(credentials, check, scheme, problem, traceparent(headers.get("traceparent", "")))


def _resource(text: str, where: str) -> tuple[ResourceRef, str]:
    try:
        rtype, rid = parse_entity_ref(text)
    except ValueError as e:
        return ResourceRef("", ""), f"{where}: {e}"
    return ResourceRef(rtype, rid), ""


def _unverified_jkt(token: str) -> bool:
    """Whether the token claims a DPoP binding. Only picks the challenge scheme: the
    token is verified (or refused) by the pipeline, never trusted from here."""
    try:
        payload = json.loads(b64url_decode(split_scheme(token)[1].split(".")[1]))
        return isinstance(payload, dict) and isinstance(payload.get("cnf"), dict) and "jkt" in payload["cnf"]
    except Exception:  # any malformed token: no binding to speak of
        return False


def challenges(reason: Reason, scheme: str, token: str, *, realm: str, dpop_algorithms: Sequence[str]) -> list[str]:
    """WWW-Authenticate values for a token failure (RFC 6750 3, RFC 9449 7.1 and 12.2)."""
    realm_param = [f'realm="{realm}"'] if realm else []
    algs = [f'algs="{" ".join(dpop_algorithms)}"'] if dpop_algorithms else []
    if reason == Reason.TOKEN_MISSING:
        # No credentials: offer both schemes, with no error code (RFC 6750 3.1).
        bearer = "Bearer" + (" " + ", ".join(realm_param) if realm_param else "")
        return [bearer, " ".join(["DPoP", ", ".join(realm_param + algs)]).rstrip()]
    dpop = scheme == "dpop" or reason in _DPOP_PROOF_REASONS or _unverified_jkt(token)
    if dpop:
        if reason == Reason.DPOP_NONCE_REQUIRED:  # RFC 9449 9: the answer carries DPoP-Nonce
            error = "use_dpop_nonce"
        elif reason in _DPOP_PROOF_REASONS:
            error = "invalid_dpop_proof"
        else:
            error = "invalid_token"
        description = (
            "Invalid DPoP key binding"
            if reason == Reason.POP_BINDING_MISMATCH
            else _DESCRIPTIONS.get(reason, "Invalid token")
        )
        params = [*realm_param, f'error="{error}"', f'error_description="{description}"', *algs]
        return ["DPoP " + ", ".join(params)]
    description = (
        "The client certificate does not match the token"
        if reason == Reason.POP_BINDING_MISMATCH
        else _DESCRIPTIONS.get(reason, "Invalid token")
    )
    return ["Bearer " + ", ".join([*realm_param, 'error="invalid_token"', f'error_description="{description}"'])]


def _header(
    key: str, value: str, action: base_pb2.HeaderValueOption.HeaderAppendAction = _OVERWRITE
) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value[:MAX_HEADER_VALUE]), append_action=action
    )


def _metadata(decision: Decision) -> struct_pb2.Struct:
    meta = struct_pb2.Struct()
    meta.update(
        {
            "decision_id": decision.decision_id,
            "decision": "allow" if decision.answer_allowed else "deny",
            "reason": decision.reason.value,
            "agent": decision.agent,
            "on_behalf_of": decision.on_behalf_of,
            "policy_version": decision.policy_version,
        }
    )
    return meta


def to_check_response(
    decision: Decision, mapped: Mapped, *, realm: str = "", dpop_algorithms: Sequence[str] = ()
) -> external_auth_pb2.CheckResponse:
    common = [_header(DECISION_ID_HEADER, decision.decision_id), _header(REASON_HEADER, decision.reason.value)]
    # The server's DPoP nonce for the client (RFC 9449 8.2, 9), on the denial and on the allowed response.
    nonce = [_header(NONCE_HEADER, decision.dpop_nonce)] if decision.dpop_nonce else []
    if decision.answer_allowed:
        upstream = list(common)
        removed = []
        for key, value in ((AGENT_HEADER, decision.agent), (ON_BEHALF_OF_HEADER, decision.on_behalf_of)):
            if value:
                upstream.append(_header(key, value))
            else:
                removed.append(key)  # never let a client-sent value through
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=upstream, headers_to_remove=removed, response_headers_to_add=[*common, *nonce]
            ),
            dynamic_metadata=_metadata(decision),
        )
    headers = [*common, *nonce, _header("content-type", "application/json")]
    message = ""
    if decision.reason in TOKEN_REASONS:
        http_code = http_status_pb2.Unauthorized
        for i, value in enumerate(
            challenges(
                decision.reason,
                mapped.scheme,
                mapped.credentials.token,
                realm=realm,
                dpop_algorithms=dpop_algorithms,
            )
        ):
            headers.append(_header("www-authenticate", value, _OVERWRITE if i == 0 else _APPEND))
        message = _DESCRIPTIONS.get(decision.reason, "The credentials were refused")
    elif decision.fault is Fault.UNAVAILABLE:
        http_code = http_status_pb2.ServiceUnavailable
        message = "No valid policy set is loaded"
    elif decision.fault is Fault.INTERNAL:
        http_code = http_status_pb2.InternalServerError
        message = "Internal error"
    else:
        http_code = _HTTP_STATUS.get(decision.reason, http_status_pb2.Forbidden)
        if mapped.problem:
            message = mapped.problem
    body: dict[str, Any] = {"decision": "deny", "reason": decision.reason.value, "decision_id": decision.decision_id}
    if message:
        body["message"] = message
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=grpc.StatusCode.PERMISSION_DENIED.value[0], message=f"denied by pep: {decision.reason.value}"
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_code),
            headers=headers,
            body=json.dumps(body, separators=(",", ":")) + "\n",
        ),
        dynamic_metadata=_metadata(decision),
    )


def _internal_error() -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=grpc.StatusCode.PERMISSION_DENIED.value[0], message="denied by pep: internal"),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.InternalServerError),
            headers=[_header(REASON_HEADER, Reason.INTERNAL_ERROR.value)],
            body='{"decision":"deny","reason":"internal_error"}\n',
        ),
    )


def compile_routes(config: ExtAuthzConfig) -> tuple[Route, ...]:
    return tuple(compile_route(r.methods, r.path, r.action, r.resource) for r in config.rules)


def add_to_server(service: ExtAuthzService, server: grpc.Server) -> None:
    """Register like the generated code, with a decoder that never raises (Envoy always gets an answer)."""
    handler = grpc.unary_unary_rpc_method_handler(
        service.Check,
        request_deserializer=decoder(external_auth_pb2.CheckRequest),
        response_serializer=external_auth_pb2.CheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": handler}),))


class ExtAuthzService:
    """`envoy.service.auth.v3.Authorization` over the same decision core as pep.v1."""

    def __init__(self, pipeline: Pipeline, config: ExtAuthzConfig, dpop_algorithms: Sequence[str] = ()) -> None:
        self._pipeline = pipeline
        self._config = config
        self._routes = compile_routes(config)
        self._dpop_algorithms = tuple(dpop_algorithms)

    def Check(self, request: Any, context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
        try:
            if isinstance(request, Undecodable):  # answered like a request pep cannot map, and logged
                mapped = Mapped(Credentials(""), Check("", ResourceRef("", "")), "", request.problem)
                refused = Request([mapped.check], refusal=RequestError(request.problem))
                decision = self._pipeline.authorize(refused)[0]
                return to_check_response(decision, mapped, realm=self._config.realm, dpop_algorithms=())
            mapped = map_request(request, self._config, self._routes)
            ask = Request([mapped.check], mapped.credentials, traceparent=mapped.traceparent)
            decision = self._pipeline.authorize(ask)[0]
            return to_check_response(decision, mapped, realm=self._config.realm, dpop_algorithms=self._dpop_algorithms)
        except Exception:  # fail closed: Envoy gets a deny, never an error it might fail open on
            log.exception("ext_authz: internal error")
            return _internal_error()
