"""What the sync and asyncio clients share: request and answer types, the fail-closed
mapping of gRPC errors to denies, and the retry budget."""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2

from pep._proto.pep.v1 import authorizer_pb2 as pb

DEFAULT_TIMEOUT = 0.5
DEFAULT_RETRIES = 2
_BACKOFF = 0.025  # first retry delay; doubles, with jitter, within the call's budget
CHANNEL_OPTIONS = (
    # A local sidecar comes back fast: try to reconnect soon, not after gRPC's default 1 s+.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# Reasons that mean the caller's credentials failed (answered UNAUTHENTICATED by the interceptor).
TOKEN_REASONS = frozenset(
    {
        "token_missing",
        "token_malformed",
        "token_signature_invalid",
        "token_expired",
        "token_not_yet_valid",
        "token_issuer_untrusted",
        "token_audience_invalid",
        "token_algorithm_rejected",
        "token_type_invalid",
        "token_claims_missing",
        "token_revoked",
        "dpop_proof_missing",
        "dpop_proof_invalid",
        "dpop_replay",
        "dpop_nonce_required",
        "pop_binding_mismatch",
    }
)
# pep's closed set of reasons (pep/reasons.py, which the client may not import; a test keeps them equal).
REASONS = frozenset(
    {
        "allowed",
        "policy_forbid",
        "policy_no_permit",
        "evaluation_error",
        "invalid_request",
        *TOKEN_REASONS,
        "chain_too_deep",
        "chain_cycle",
        "chain_unknown_agent",
        "chain_delegation_forbidden",
        "agent_disabled",
        "agent_expired",
        "rate_limited",
        "policy_unavailable",
        "internal_error",
    }
)
# What pep itself answers with UNAVAILABLE when it has no policy set (docs/reasons.md).
NO_POLICY_DETAIL = "no valid policy set is loaded"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Credentials:
    """What the agent presents: the access token, and its proof of possession if bound."""

    token: str
    dpop_proof: str = ""
    http_method: str = ""
    http_uri: str = ""
    client_cert_thumbprint: str = ""


@dataclass(frozen=True)
class Resource:
    type: str
    id: str
    attributes: Mapping[str, Any] | None = None
    parents: Sequence[tuple[str, str]] = ()


ResourceLike = Resource | tuple[str, str]
CredentialsLike = Credentials | str


@dataclass(frozen=True)
class Decision:
    """pep's answer, or a deny standing in for one when pep could not answer."""

    allowed: bool
    reason: str
    decision_id: str = ""
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    policy_version: str = ""
    agent: str = ""
    on_behalf_of: str = ""
    delegation_chain: tuple[str, ...] = ()
    # OK when pep answered; otherwise the gRPC status of the failed call (always a deny).
    status: grpc.StatusCode = grpc.StatusCode.OK
    detail: str = ""
    # pep's current DPoP nonce (RFC 9449 8): send it as the `nonce` claim of the next proof. "" if none.
    dpop_nonce: str = ""

    @property
    def answered(self) -> bool:
        """True when pep itself decided (the call succeeded)."""
        return self.status is grpc.StatusCode.OK


class Denied(PermissionError):
    """Raised by `enforce` and `guard` when pep did not allow the action."""

    def __init__(self, decision: Decision, action: str = "") -> None:
        what = f" {action}" if action else ""
        status = "" if decision.answered else f", gRPC {decision.status.name}"
        super().__init__(f"pep denied{what}: {decision.reason}{status}")
        self.decision = decision


_credentials: contextvars.ContextVar[Credentials | None] = contextvars.ContextVar("pep_credentials", default=None)


@contextlib.contextmanager
def use_credentials(credentials: CredentialsLike) -> Iterator[None]:
    """Make `credentials` the default for `guard`-ed calls in this thread or task."""
    reset = _credentials.set(as_credentials(credentials))
    try:
        yield
    finally:
        _credentials.reset(reset)


def as_credentials(value: CredentialsLike) -> Credentials:
    return value if isinstance(value, Credentials) else Credentials(token=value)


def as_resource(value: ResourceLike) -> Resource:
    return value if isinstance(value, Resource) else Resource(value[0], value[1])


def build_request(
    credentials: CredentialsLike,
    action: str,
    resource: ResourceLike,
    context: Mapping[str, Any] | None = None,
    request_id: str = "",
) -> pb.AuthorizeRequest:
    creds, res = as_credentials(credentials), as_resource(resource)
    req = pb.AuthorizeRequest(
        token=creds.token,
        dpop_proof=creds.dpop_proof,
        http_method=creds.http_method,
        http_uri=creds.http_uri,
        client_cert_thumbprint=creds.client_cert_thumbprint,
        action=action,
        request_id=request_id,
    )
    req.resource.type, req.resource.id = res.type, res.id
    if res.attributes is not None:
        req.resource.attributes.CopyFrom(json_format.ParseDict(dict(res.attributes), struct_pb2.Struct()))
    for ptype, pid in res.parents:
        req.resource.parents.add(type=ptype, id=pid)
    if context is not None:
        req.context.CopyFrom(json_format.ParseDict(dict(context), struct_pb2.Struct()))
    return req


def decision_of(resp: pb.AuthorizeResponse) -> Decision:
    return Decision(
        allowed=resp.decision == pb.DECISION_ALLOW,
        reason=resp.reason,
        decision_id=resp.decision_id,
        policies=tuple(resp.policies),
        errors=tuple(resp.errors),
        policy_version=resp.policy_version,
        agent=resp.agent,
        on_behalf_of=resp.on_behalf_of,
        delegation_chain=tuple(resp.delegation_chain),
        dpop_nonce=resp.dpop_nonce,
    )


def reason_of(code: grpc.StatusCode, detail: str, trailer: str = "") -> str:
    """The reason of a call pep did not answer with a decision: only what pep said itself,
    never a guess. `invalid_request` is pep refusing a malformed request (or the client not
    sending one), `policy_unavailable` pep saying it has no policy set; everything else (pep
    unreachable, a deadline, any other status) is `internal_error`."""
    if trailer in REASONS and trailer != "allowed":
        return trailer
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return "invalid_request"
    if code is grpc.StatusCode.UNAVAILABLE and detail == NO_POLICY_DETAIL:
        return "policy_unavailable"
    return "internal_error"


def error_decision(code: grpc.StatusCode, detail: str, trailer: str = "") -> Decision:
    return Decision(False, reason_of(code, detail, trailer), status=code, detail=detail)


def rpc_error(e: grpc.RpcError) -> Decision:
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
    details = e.details() if callable(getattr(e, "details", None)) else ""
    return error_decision(code or grpc.StatusCode.UNKNOWN, details or "", _reason_trailer(e))


def _reason_trailer(e: grpc.RpcError) -> str:
    """`x-pep-reason` from the trailing metadata, when pep sent one."""
    trailing = getattr(e, "trailing_metadata", None)
    try:
        pairs = trailing() if callable(trailing) else ()
    except Exception:  # an error raised before any metadata arrived
        return ""
    for key, value in pairs or ():
        if key == "x-pep-reason" and isinstance(value, str):
            return value
    return ""


@dataclass
class Budget:
    """The call's total deadline and how many retries are left."""

    deadline: float
    retries: int
    attempt: int = field(default=0)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def next_delay(self, decision: Decision) -> float | None:
        """Seconds to wait before retrying, or None when this answer is final."""
        if decision.status not in _RETRYABLE or self.attempt >= self.retries:
            return None
        delay = _BACKOFF * (2**self.attempt) * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
        self.attempt += 1
        return delay if delay < self.remaining() - 0.005 else None


def resolve(
    credentials: Any, resource: Any, context: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[CredentialsLike | None, ResourceLike, Mapping[str, Any] | None]:
    creds = credentials() if callable(credentials) else credentials
    if creds is None:
        creds = _credentials.get()
    res = resource(*args, **kwargs) if callable(resource) else resource
    ctx = context(*args, **kwargs) if callable(context) else context
    return creds, res, ctx


@dataclass
class Call:
    """One `authorize` call ready to send: the request and its budget."""

    request: pb.AuthorizeRequest
    budget: Budget


def prepare(
    credentials: CredentialsLike,
    action: str,
    resource: ResourceLike,
    context: Mapping[str, Any] | None,
    request_id: str,
    timeout: float,
    retries: int,
) -> Call | Decision:
    """The call to make, or the deny that stands for a request that cannot be sent."""
    try:
        request = build_request(credentials, action, resource, context, request_id)
    except (ValueError, TypeError, json_format.ParseError) as e:
        return error_decision(grpc.StatusCode.INVALID_ARGUMENT, f"request not sent: {e}")
    return Call(request, Budget(time.monotonic() + timeout, retries))


DEADLINE_PASSED = Decision(
    False,
    "internal_error",
    status=grpc.StatusCode.DEADLINE_EXCEEDED,
    detail="deadline exceeded before pep answered",
)
