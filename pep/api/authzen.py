"""The OpenID AuthZEN Authorization API 1.0 over HTTP (README, "AuthZEN"): JSON <-> plain data.

Like `grpc_authorizer.py` for gRPC, this module only translates. It parses a request into checks,
asks the pipeline (which logs and counts every decision, exactly as for gRPC) and
renders the decisions as AuthZEN responses:

- `POST /access/v1/evaluation`: one subject/action/resource/context 4-tuple.
- `POST /access/v1/evaluations`: top-level members are defaults each item of `evaluations`
  may replace, with `options.evaluations_semantic` `execute_all` (default),
  `deny_on_first_deny` or `permit_on_first_permit` (the answer stops at the first deny or
  permit; later items are neither evaluated nor logged).
- `GET /.well-known/authzen-configuration`: the metadata document.

Who the subject is: a `trust_subject` listener (loopback or Unix socket, checked in
config) takes the body's subject as given. Any other listener takes it from the
`Authorization` header's token (and the `DPoP` header) through the full pipeline; the
body's subject must then name the principal that token resolves to (`Agent::"<current
actor>"`), or the decision is a deny (`invalid_request`).

HTTP errors (a JSON body `{"error": {"status", "message"}}`) are for requests pep cannot
judge: malformed JSON or a missing member (400), too large (413), not JSON (415), no
policy loaded (503), internal faults (500). Every judgeable request answers 200 with a
decision, bad tokens included, as over gRPC. The listener (framing, deadlines, connection
and worker bounds) is `authzen_server.py`; this module never sees a socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pep.api.authzen_body import HTTPError, ParsedRequest, bad_request, load_json, parse_request
from pep.api.ingress import traceparent
from pep.config import AuthzenConfig
from pep.decision import Decision, Fault
from pep.pipeline import Pipeline, Request, Subject
from pep.policy.request import Check
from pep.tokens.verifier import Credentials

log = logging.getLogger(__name__)

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
METADATA_PATH = "/.well-known/authzen-configuration"
_MAX_REQUEST_ID = 256
_FAULT_STATUS = {Fault.INVALID_ARGUMENT: 400, Fault.UNAVAILABLE: 503, Fault.INTERNAL: 500}
_STOP: dict[str, Callable[[bool], bool] | None] = {
    "execute_all": None,
    "deny_on_first_deny": lambda allowed: not allowed,
    "permit_on_first_permit": lambda allowed: allowed,
}


def decision_body(d: Decision, *, identity: bool) -> dict[str, Any]:
    """One AuthZEN decision. `context` carries pep's reason, determining policies and decision id."""
    context: dict[str, Any] = {
        "reason": d.reason.value,
        "policies": list(d.policies),
        "decision_id": d.decision_id,
        "policy_version": d.policy_version,
    }
    if d.errors:
        context["errors"] = list(d.errors)
    if identity and d.agent:  # who the token resolved to, as gRPC's AuthorizeResponse says
        context["agent"] = d.agent
        context["on_behalf_of"] = d.on_behalf_of
        context["delegation_chain"] = list(d.delegation_chain)
    if d.fault is Fault.INVALID_ARGUMENT:
        context["error"] = {"status": 400, "message": _fault_message(d)}
    return {"decision": d.answer_allowed, "context": context}


def _fault_message(d: Decision) -> str:
    if d.fault is Fault.INTERNAL:
        return "internal error"  # no details leak, as over gRPC
    return "; ".join(d.errors) or d.reason.value


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


def render(parsed: ParsedRequest, decisions: Sequence[Decision], *, identity: bool) -> dict[str, Any]:
    """The response body; raises HTTPError when a fault concerns the whole request."""
    for d in decisions:
        if d.fault in (Fault.UNAVAILABLE, Fault.INTERNAL):
            raise HTTPError(_FAULT_STATUS[d.fault], _fault_message(d))
    if not parsed.batch:
        d = decisions[0]
        if d.fault is not None:
            raise HTTPError(_FAULT_STATUS[d.fault], _fault_message(d))
        return decision_body(d, identity=identity)
    # Errors in one evaluation are answered in that evaluation (spec 7.2.1): decision false.
    return {"evaluations": [decision_body(d, identity=identity) for d in decisions]}


# --- the application: a request's head, then its body -----------------------------------------

# Headers pep reads: each must come at most once, or which one counts would be a guess.
_READ_ONCE = {"authorization", "dpop", "x-request-id", "traceparent", "content-type"} | {
    f"x-forwarded-{name}" for name in ("method", "uri", "host", "proto")
}


@dataclass
class Answer:
    """A response: status, JSON body and headers (Content-Type and Content-Length are the listener's)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    # True when the pipeline decided (and so logged and counted) what this answer says.
    decided: bool = False


@dataclass
class Pending:
    """A routed POST whose body is still to be read (at most `limit` bytes) and then decided."""

    path: str
    headers: Mapping[str, str]
    request_id: str
    reply_headers: list[tuple[str, str]]
    limit: int


def request_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header name (lower case) to value; a header pep reads sent twice is a 400."""
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in out and key in _READ_ONCE:
            raise bad_request(f"the {name} header is sent more than once")
        out.setdefault(key, value)
    return out


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _request_id(headers: Mapping[str, str]) -> str:
    value = headers.get("x-request-id", "")
    if len(value) > _MAX_REQUEST_ID or not value.isprintable() or not value.isascii():
        raise bad_request(f"X-Request-ID must be at most {_MAX_REQUEST_ID} printable ASCII characters")
    return value


def _forwarded_uri(headers: Mapping[str, str]) -> str:
    """The URI of the request a DPoP proof was made for (X-Forwarded-Uri, with -Proto and -Host)."""
    uri = headers.get("x-forwarded-uri", "")
    if uri.startswith(("https://", "http://")) or not uri.startswith("/"):
        return uri
    host = headers.get("x-forwarded-host", "")
    proto = headers.get("x-forwarded-proto") or "https"
    return f"{proto}://{host}{uri}" if host else uri


def credentials(headers: Mapping[str, str]) -> Credentials:
    """The token (`Authorization`), its DPoP proof and the request that proof was made for."""
    return Credentials(
        token=headers.get("authorization", ""),
        dpop_proof=headers.get("dpop", ""),
        http_method=headers.get("x-forwarded-method", ""),
        http_uri=_forwarded_uri(headers),
    )


def error_answer(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    return Answer(status, json.dumps(error_body(status, message)).encode(), list(headers))


class AuthzenApp:
    """Routing, limits and the mapping to pipeline requests. `head` runs on the listener's event
    loop and never blocks; `finish` runs the pipeline, on one of the listener's worker threads."""

    def __init__(self, pipeline: Pipeline, config: AuthzenConfig, base_url: str) -> None:
        self._pipeline = pipeline
        self._config = config
        self._trust_subject = config.trust_subject
        self._metadata = json.dumps(
            {
                "policy_decision_point": base_url,
                "access_evaluation_endpoint": base_url + EVALUATION_PATH,
                "access_evaluations_endpoint": base_url + EVALUATIONS_PATH,
            }
        ).encode()

    def head(self, method: str, path: str, pairs: Iterable[tuple[str, str]], length: int | None) -> Answer | Pending:
        """Everything that can be answered before the body is read; `length` is the Content-Length (None: chunked)."""
        reply: list[tuple[str, str]] = []
        try:
            headers = request_headers(pairs)
            request_id = _request_id(headers)
            if request_id:
                reply.append(("X-Request-ID", request_id))
            if path == METADATA_PATH:
                if method != "GET":
                    raise HTTPError(405, f"{path} answers GET only", [("Allow", "GET")])
                return Answer(200, self._metadata, [*reply, ("Cache-Control", "max-age=300")])
            if path not in (EVALUATION_PATH, EVALUATIONS_PATH):
                raise HTTPError(404, f"no such endpoint: {path}")
            if method != "POST":
                raise HTTPError(405, f"{path} answers POST only", [("Allow", "POST")])
            if _media_type(headers) != "application/json":
                raise HTTPError(415, "the body must be sent as Content-Type: application/json")
            if length is not None and length > self._config.max_body_bytes:
                raise self.too_large()
        except HTTPError as e:
            return error_answer(e.status, e.message, [*reply, *e.headers])
        return Pending(path, headers, request_id, reply, self._config.max_body_bytes)

    def too_large(self) -> HTTPError:
        return HTTPError(413, f"the body is larger than {self._config.max_body_bytes} bytes")

    def finish(self, pending: Pending, body: bytes) -> Answer:
        """Parse the body, ask the pipeline, render the decisions. Never raises."""
        try:
            return self._decide(pending, body)
        except HTTPError as e:
            return error_answer(e.status, e.message, [*pending.reply_headers, *e.headers])
        except Exception:  # a bug answers 500 without details, never a decision
            log.exception("authzen: internal error")
            return error_answer(500, "internal error", pending.reply_headers)

    def _decide(self, pending: Pending, body: bytes) -> Answer:
        parsed = parse_request(
            load_json(body),
            batch_endpoint=pending.path == EVALUATIONS_PATH,
            max_evaluations=self._config.max_evaluations,
        )
        checks = [Check(c.action, c.resource, c.context, pending.request_id) for c in parsed.checks]
        trace = traceparent(pending.headers.get("traceparent"))
        if self._trust_subject:
            ask = Request(checks, subjects=parsed.subjects, traceparent=trace)
        else:
            expect = _token_subject(parsed.subjects)
            ask = Request(checks, credentials(pending.headers), expect=expect, traceparent=trace)
        stop = _STOP[parsed.semantic]
        if stop is None:
            decisions = self._pipeline.authorize(ask)
        else:
            # The batch ends at the first deny (or permit): later items are neither evaluated nor logged.
            decisions = stop_after(self._pipeline.decide(ask), stop)
        # The server's DPoP nonce (RFC 9449 8.2), for the caller to send in its next proof.
        reply = [*pending.reply_headers, *(("DPoP-Nonce", n) for n in {d.dpop_nonce for d in decisions} - {""})]
        try:
            answer = render(parsed, decisions, identity=not self._trust_subject)
        except HTTPError as e:  # a fault of the whole request: decided, logged and counted already
            return replace(error_answer(e.status, e.message, reply), decided=True)
        headers = [*reply, ("Cache-Control", "no-store")]
        return Answer(200, json.dumps(answer).encode(), headers, decided=True)


def stop_after(decisions: Iterable[Decision], stop: Callable[[bool], bool]) -> list[Decision]:
    """Decisions up to and including the first whose answer `stop` ends the batch on; the
    pipeline decides lazily, so the checks after it are never admitted, evaluated or logged."""
    out: list[Decision] = []
    for d in decisions:
        out.append(d)
        if stop(d.answer_allowed):
            break
    return out


def _token_subject(subjects: Sequence[Subject]) -> tuple[str, str]:
    """The one subject a token request names; the token's principal must be it."""
    if any(s.properties for s in subjects):
        raise bad_request("subject.properties cannot be sent with a token: the principal's attributes come from pep")
    named = {(s.type, s.id) for s in subjects}
    if len(named) > 1:
        raise bad_request("with a token every evaluation names the same subject: the token's principal")
    return named.pop()
