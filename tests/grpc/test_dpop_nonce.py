"""DPoP server nonces through a real pep (RFC 9449 8 and 9): an issuer with `dpop_nonce: true`.

Over gRPC (`dpop_nonce` on AuthorizeResponse, the batch's responses and the Python client's
Decision), AuthZEN HTTP (`DPoP-Nonce` header) and Envoy ext_authz (the `use_dpop_nonce` challenge
and `DPoP-Nonce` on the denied and the allowed response); the nonce never reaches the decision log;
and a nonce rotates on the server's clock (a one-second period, polled with a generous deadline).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from pep._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.cli import main
from pep.cli.runtime_commands import _dev_dpop_key
from pep.client import AuthorizationInterceptor, Authorizer, Credentials
from pep.dev import tokens as devtoken
from tests.harness.authzen import Client
from tests.harness.envoy import HOST, check_request, header_values, mapped_headers
from tests.harness.server import AUDIENCE, ISSUER, Harness, open_harness

URI = "https://pep.test/pep.v1.Authorizer/Authorize"
DEADLINE = float(os.environ.get("PEP_TEST_NONCE_SECONDS", "20"))


def _serve(root: Path, **tokens: Any) -> Harness:
    _, jwks = devtoken.ensure_dev_keys(str(root / "keys"))
    issuer = {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"], "dpop_nonce": True}
    return open_harness(root, issuers=[issuer], tokens=tokens, authzen={"listen": "127.0.0.1:0"})


@pytest.fixture(scope="module")
def pep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = _serve(tmp_path_factory.mktemp("nonce"))
    yield h
    h.close()


class Holder:
    """A DPoP key and a token bound to it."""

    def __init__(self, h: Harness) -> None:
        self.key, self.jwk = devtoken.new_dpop_key()
        self.token = h.token(dpop_jkt=devtoken.jwk_thumbprint(self.jwk))

    def proof(self, nonce: str | None = None, *, htm: str = "POST", htu: str = URI) -> str:
        return devtoken.mint_dpop_proof(self.key, self.jwk, htm=htm, htu=htu, access_token=self.token, nonce=nonce)

    def fields(self, nonce: str | None = None) -> dict[str, str]:
        return {"dpop_proof": self.proof(nonce), "http_method": "POST", "http_uri": URI}


def test_no_nonce_is_refused_with_one_and_the_retry_is_allowed(pep: Harness) -> None:
    who = Holder(pep)
    first = pep.authorize("DPoP " + who.token, request_id="nonce-1", **who.fields())
    assert (first.decision, first.reason) == (pb.DECISION_DENY, "dpop_nonce_required")
    assert list(first.errors) == ["DPoP proof needs the server's nonce"]
    nonce = first.dpop_nonce
    assert len(nonce) == 32
    second = pep.authorize("DPoP " + who.token, request_id="nonce-2", **who.fields(nonce))
    assert (second.decision, second.reason, second.dpop_nonce) == (pb.DECISION_ALLOW, "allowed", nonce)
    # A policy deny to a verified token names the nonce too (RFC 9449 8.2: every answer).
    denied = pep.authorize("DPoP " + who.token, action="delete", request_id="nonce-3", **who.fields(nonce))
    assert (denied.decision, denied.dpop_nonce) == (pb.DECISION_DENY, nonce)
    # Bearer tokens of the same issuer need no nonce and get none.
    bearer = pep.authorize("Bearer " + pep.token(), request_id="nonce-4")
    assert (bearer.reason, bearer.dpop_nonce) == ("allowed", "")
    # A nonce this server never issued is refused, naming the right one.
    forged = pep.authorize("DPoP " + who.token, **who.fields("A" * 32))
    assert (forged.reason, forged.dpop_nonce, list(forged.errors)) == (
        "dpop_nonce_required",
        nonce,
        ["DPoP proof has a nonce this server did not issue"],
    )
    answers = {"nonce-1": first, "nonce-2": second, "nonce-3": denied, "nonce-4": bearer}
    logged: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE
    while len(logged) < 4 and time.monotonic() < deadline:
        lines = pep.log_lines(wait_for=1)
        logged = {e["request_id"]: e["reason"] for e in lines if e.get("request_id") in answers}
    assert logged == {k: r.reason for k, r in answers.items()}
    text = pep.log_path.read_text()
    assert nonce not in text and '"dpop_nonce"' not in text


def test_the_batch_answers_carry_the_nonce(pep: Harness) -> None:
    who = Holder(pep)
    nonce = pep.authorize("DPoP " + who.token, **who.fields()).dpop_nonce
    checks = [pb.Check(action="read"), pb.Check(action="delete")]
    for check in checks:
        check.resource.type, check.resource.id = "Doc", "plan"
    batch = pep.stub.AuthorizeBatch(
        pb.AuthorizeBatchRequest(token="DPoP " + who.token, checks=checks, **who.fields(nonce)), timeout=10
    )
    assert [r.reason for r in batch.responses][:1] == ["allowed"] and len(batch.responses) == 2
    assert [r.dpop_nonce for r in batch.responses] == [nonce, nonce]


def test_the_python_client_exposes_the_nonce(pep: Harness) -> None:
    who = Holder(pep)
    with Authorizer(pep.server.addresses[0], timeout=10) as client:
        refused = client.authorize(Credentials("DPoP " + who.token, who.proof(), "POST", URI), "read", ("Doc", "plan"))
        assert (refused.allowed, refused.reason) == (False, "dpop_nonce_required") and refused.dpop_nonce
        allowed = client.authorize(
            Credentials("DPoP " + who.token, who.proof(refused.dpop_nonce), "POST", URI), "read", ("Doc", "plan")
        )
    assert (allowed.allowed, allowed.dpop_nonce) == (True, refused.dpop_nonce)


def test_authzen_answers_carry_the_dpop_nonce_header(pep: Harness) -> None:
    client = Client(pep.server.authzen_address)
    who = Holder(pep)
    target = "https://api.example.com/docs/plan"
    body = {
        "subject": {"type": "Agent", "id": "worker"},
        "action": {"name": "read"},
        "resource": {"type": "Doc", "id": "plan"},
    }

    def ask(proof: str) -> Any:
        headers = {
            "Authorization": f"DPoP {who.token}",
            "DPoP": proof,
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Uri": target,
        }
        return client.evaluation(body, **headers)

    first = ask(who.proof(htm="GET", htu=target))
    assert first.status == 200
    assert (first.body["decision"], first.body["context"]["reason"]) == (False, "dpop_nonce_required")
    nonce = first.headers["dpop-nonce"]
    second = ask(who.proof(nonce, htm="GET", htu=target))
    assert (second.status, second.body["decision"], second.headers["dpop-nonce"]) == (200, True, nonce)
    assert nonce not in json.dumps(second.body)  # the header only


def test_ext_authz_challenges_with_use_dpop_nonce_and_hands_the_nonce_downstream(pep: Harness) -> None:
    stub = ea_grpc.AuthorizationStub(pep.channel)
    who = Holder(pep)
    htu = f"https://{HOST}/docs/plan"

    def check(proof: str) -> Any:
        headers = mapped_headers({"authorization": f"DPoP {who.token}", "dpop": proof})
        return stub.Check(check_request(headers=headers), timeout=10)

    refused = check(who.proof(htm="GET", htu=htu))
    assert refused.HasField("denied_response")
    denied = refused.denied_response
    headers = header_values(denied.headers)
    assert denied.status.code == 401 and json.loads(denied.body)["reason"] == "dpop_nonce_required"
    assert headers["www-authenticate"][0].startswith(
        'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"'
    )
    nonce = headers["dpop-nonce"][0]
    allowed = check(who.proof(nonce, htm="GET", htu=htu))
    assert allowed.HasField("ok_response")
    assert header_values(allowed.ok_response.response_headers_to_add)["dpop-nonce"] == [nonce]
    assert "dpop-nonce" not in header_values(allowed.ok_response.headers)  # the client's, not the upstream's


def test_the_nonce_rotates_on_the_servers_clock(tmp_path: Path) -> None:
    h = _serve(tmp_path, dpop_nonce_seconds=1, dpop_nonce_grace_seconds=0)
    try:
        who = Holder(h)
        nonce = h.authorize("DPoP " + who.token, **who.fields()).dpop_nonce
        deadline = time.monotonic() + DEADLINE
        while True:  # allowed until the window turns, then stale
            answer = h.authorize("DPoP " + who.token, **who.fields(nonce))
            if answer.reason != "allowed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (answer.reason, list(answer.errors)) == ("dpop_nonce_required", ["DPoP proof has a stale nonce"])
        assert answer.dpop_nonce not in ("", nonce)
        fresh = None
        for _ in range(3):  # the window may turn again between two calls
            fresh = h.authorize("DPoP " + who.token, **who.fields(answer.dpop_nonce))
            if fresh.reason == "allowed":
                break
            answer = fresh
        assert fresh is not None and fresh.reason == "allowed"
    finally:
        h.close()


def test_pep_authorize_dpop_retries_once_with_the_nonce(
    pep: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, jwk = _dev_dpop_key(str(tmp_path / "dev"))
    token = pep.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    argv = ["authorize", "--address", pep.server.addresses[0], "--token", token, "--action", "read"]
    assert main([*argv, "--resource", 'Doc::"plan"', "--dpop", "--dev-dir", str(tmp_path / "dev")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["decision"], out["reason"], len(out["dpop_nonce"])) == ("DECISION_ALLOW", "allowed", 32)


def test_the_interceptor_hands_the_nonce_back_in_its_trailers(pep: Harness) -> None:
    def read(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"contents of " + request

    method = "/docs.v1.Docs/Read"
    handlers = grpc.method_handlers_generic_handler(
        "docs.v1.Docs", {"Read": grpc.unary_unary_rpc_method_handler(read, lambda b: b, lambda b: b)}
    )
    authorizer = Authorizer(pep.server.addresses[0], timeout=10)
    interceptor = AuthorizationInterceptor(
        authorizer, action={method: "read"}, resource=lambda m, r: ("Doc", r.decode()), authority="docs.test"
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        who = Holder(pep)
        htu = f"https://docs.test{method}"

        def metadata(nonce: str | None) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"DPoP {who.token}"), ("dpop", who.proof(nonce, htu=htu)))

        with pytest.raises(grpc.RpcError) as info:
            call(b"plan", metadata=metadata(None), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        trailers = dict(info.value.trailing_metadata() or ())
        assert trailers["x-pep-reason"] == "dpop_nonce_required"
        assert call(b"plan", metadata=metadata(trailers["dpop-nonce"]), timeout=10) == b"contents of plan"
    finally:
        channel.close()
        server.stop(0)
        authorizer.close()
