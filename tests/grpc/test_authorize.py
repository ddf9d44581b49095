"""Authorize end to end: a real server on an ephemeral port, called through the generated stub.

Every test asserts the reason code, not just the decision.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.dev import tokens as devtoken
from tests.harness.decision_log import LOG_FIELDS
from tests.harness.server import ISSUER, Harness, request, struct

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> list[str]:
    return token.split(".")


def claims_of(token: str) -> dict[str, Any]:
    payload = segments(token)[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed(h: Harness, claims: dict[str, Any], headers: dict[str, Any] | None = None, alg: str = "ES256") -> str:
    with open(h.key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    kid = json.loads(Path(h.jwks_path).read_text())["keys"][0]["kid"]
    hdr = {"typ": "at+jwt", "kid": kid, **(headers or {})}
    return jwt.encode(claims, key, algorithm=alg, headers=hdr)


# --- decisions -------------------------------------------------------------------------


def test_allow_reports_identity_policy_and_version(pep: Harness) -> None:
    r = pep.authorize(pep.token())
    assert (r.decision, r.reason) == (ALLOW, "allowed")
    assert list(r.policies) == ["read-docs"]
    assert (r.agent, r.on_behalf_of, list(r.delegation_chain)) == ("worker", "alice", ["worker"])
    assert r.policy_version == pep.server.store.current().version
    assert r.decision_id


def test_forbid_overrides_permit(pep: Harness) -> None:
    r = pep.authorize(pep.token(), resource=("Doc", "keys"))
    assert (r.decision, r.reason, list(r.policies)) == (DENY, "policy_forbid", ["no-secrets"])


def test_no_permit(pep: Harness) -> None:
    r = pep.authorize(pep.token(), action="write")
    assert (r.decision, r.reason, list(r.policies)) == (DENY, "policy_no_permit", [])


def test_evaluation_error_denies_in_strict_mode(pep: Harness) -> None:
    r = pep.authorize(pep.token(), action="write", context={"amount": 2})
    assert (r.decision, r.reason) == (DENY, "evaluation_error")
    assert any("overflow" in e for e in r.errors), r.errors


def test_request_outside_the_schema_is_invalid_request(pep: Harness) -> None:
    r = pep.authorize(pep.token(), action="launch")
    assert (r.decision, r.reason) == (DENY, "invalid_request")
    assert "launch" in " ".join(r.errors)


def test_decimal_and_resource_attributes_are_accepted(pep: Harness) -> None:
    r = pep.authorize(
        pep.token(),
        resource=("Doc", "new"),
        attributes={"classification": "secret"},
        context={"price": {"__extn": {"fn": "decimal", "arg": "1.25"}}},
    )
    assert (r.decision, r.reason) == (DENY, "policy_forbid")


# --- tokens ----------------------------------------------------------------------------


def _claims(h: Harness, **over: Any) -> dict[str, Any]:
    claims = claims_of(h.token())
    claims.update(over)
    return claims


TOKEN_CASES: dict[str, tuple[Callable[[Harness], str], str]] = {
    "missing": (lambda h: "", "token_missing"),
    "bearer-prefix-only": (lambda h: "Bearer ", "token_missing"),
    "garbage": (lambda h: "not-a-jwt", "token_malformed"),
    "expired": (lambda h: h.token(now=time.time() - 3600, ttl_seconds=600), "token_expired"),
    "not-yet-valid": (lambda h: h.token(now=time.time() + 3600), "token_not_yet_valid"),
    "wrong-issuer": (lambda h: h.token(issuer="https://evil.test"), "token_issuer_untrusted"),
    "wrong-audience": (lambda h: h.token(audience="someone-else"), "token_audience_invalid"),
    "alg-none": (
        lambda h: (
            b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
            + "."
            + b64(json.dumps(_claims(h)).encode())
            + "."
        ),
        "token_algorithm_rejected",
    ),
    "hs256-with-public-key": (lambda h: _hmac_with_public_key(h), "token_algorithm_rejected"),
    "unknown-kid": (lambda h: signed(h, _claims(h), {"kid": "no-such-key"}), "token_signature_invalid"),
    "foreign-key": (lambda h: _foreign_signed(h), "token_signature_invalid"),
    "tampered-payload": (lambda h: _tamper_payload(h.token()), "token_signature_invalid"),
    "tampered-signature": (lambda h: _tamper_signature(h.token()), "token_signature_invalid"),
    "wrong-typ": (lambda h: h.token(typ="JWT"), "token_type_invalid"),
    "id-token-typ": (lambda h: signed(h, _claims(h), {"typ": "id_token+jwt"}), "token_type_invalid"),
    "missing-jti": (lambda h: signed(h, {k: v for k, v in _claims(h).items() if k != "jti"}), "token_claims_missing"),
    "oversize": (lambda h: h.token(extra_claims={"pad": "x" * 9000}), "token_malformed"),
}


def _public_pem(h: Harness) -> bytes:
    with open(h.key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hmac_with_public_key(h: Harness) -> str:
    """RFC 8725 2.1: an RS/ES token re-signed with HMAC keyed by the issuer's public key."""
    kid = json.loads(Path(h.jwks_path).read_text())["keys"][0]["kid"]
    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
        + "."
        + b64(json.dumps(_claims(h)).encode())
    )
    mac = hmac.new(_public_pem(h), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def _foreign_signed(h: Harness) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    kid = json.loads(Path(h.jwks_path).read_text())["keys"][0]["kid"]
    return jwt.encode(_claims(h), other, algorithm="ES256", headers={"typ": "at+jwt", "kid": kid})


def _tamper_payload(token: str) -> str:
    head, _, sig = segments(token)
    claims = claims_of(token)
    claims["sub"] = "mallory"
    return ".".join((head, b64(json.dumps(claims).encode()), sig))


def _tamper_signature(token: str) -> str:
    head, body, sig = segments(token)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    return ".".join((head, body, b64(bytes(raw))))


@pytest.mark.parametrize("case", sorted(TOKEN_CASES))
def test_token_failures_deny_with_their_own_reason(pep: Harness, case: str) -> None:
    make, reason = TOKEN_CASES[case]
    r = pep.authorize(make(pep))
    assert (r.decision, r.reason) == (DENY, reason), list(r.errors)
    assert r.errors, "a deny says why"


# --- identity and chains ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        (("worker",), "allowed"),
        (("worker", "orchestrator"), "allowed"),
        (("worker", "orchestrator", "orchestrator2", "orchestrator3"), "allowed"),  # depth 4 = max
        (("worker", "orchestrator", "orchestrator2", "orchestrator3", "orchestrator4"), "chain_too_deep"),
        (("worker", "orchestrator", "worker"), "chain_cycle"),
        (("ghost",), "chain_unknown_agent"),
        (("worker", "ghost"), "chain_unknown_agent"),
        (("loner", "orchestrator"), "chain_delegation_forbidden"),  # loner is not delegable
        (("orchestrator", "worker"), "chain_delegation_forbidden"),  # workers cannot delegate
        (("sleepy",), "agent_disabled"),
        (("retired",), "agent_disabled"),
        (("old",), "agent_expired"),
    ],
)
def test_delegation_chain_rules(pep: Harness, chain: tuple[str, ...], reason: str) -> None:
    r = pep.authorize(pep.token(act_chain=chain))
    assert r.reason == reason, list(r.errors)
    assert r.decision == (ALLOW if reason == "allowed" else DENY)
    if reason == "allowed":
        assert list(r.delegation_chain) == list(chain)
        assert r.agent == chain[0]


def test_chain_depth_is_configurable(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(delegation={"max_depth": 1})
    r = h.authorize(h.token(act_chain=("worker", "orchestrator")))
    assert r.reason == "chain_too_deep"


def test_grants_can_be_turned_off(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(delegation={"require_grants": False})
    r = h.authorize(h.token(act_chain=("orchestrator", "worker")))
    assert (r.decision, r.reason) == (ALLOW, "allowed")


def test_autonomous_agent_has_no_user(pep: Harness) -> None:
    r = pep.authorize(pep.token(sub="worker", act_chain=()))
    assert (r.decision, r.reason, r.agent, r.on_behalf_of) == (ALLOW, "allowed", "worker", "")
    assert list(r.delegation_chain) == ["worker"]


def test_client_id_agent_acts_directly_for_the_user(pep: Harness) -> None:
    r = pep.authorize(pep.token(sub="alice", act_chain=(), client_id="worker"))
    assert (r.reason, r.agent, r.on_behalf_of) == ("allowed", "worker", "alice")


def test_token_without_any_registered_agent(pep: Harness) -> None:
    r = pep.authorize(pep.token(sub="alice", act_chain=(), client_id="some-app"))
    assert (r.decision, r.reason) == (DENY, "chain_unknown_agent")


def test_may_act_must_admit_the_current_actor(pep: Harness) -> None:
    ok = pep.authorize(pep.token(extra_claims={"may_act": {"sub": "worker"}}))
    bad = pep.authorize(pep.token(extra_claims={"may_act": {"sub": "orchestrator"}}))
    assert ok.reason == "allowed"
    assert (bad.decision, bad.reason) == (DENY, "chain_delegation_forbidden")


def test_dpop_bound_token_with_a_valid_proof(pep: Harness) -> None:
    key, jwk = devtoken.new_dpop_key()
    token = pep.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    uri = "https://pep.test/pep.v1.Authorizer/Authorize"
    proof = devtoken.mint_dpop_proof(key, jwk, htm="POST", htu=uri, access_token=token)
    r = pep.authorize("DPoP " + token, dpop_proof=proof, http_method="POST", http_uri=uri)
    assert (r.decision, r.reason) == (ALLOW, "allowed"), list(r.errors)
    replay = pep.authorize("DPoP " + token, dpop_proof=proof, http_method="POST", http_uri=uri)
    assert (replay.decision, replay.reason) == (DENY, "dpop_replay")
    assert pep.authorize("Bearer " + token).reason == "pop_binding_mismatch"
    assert pep.authorize(token).reason == "dpop_proof_missing"


# --- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"action": ""}, "action"),
        ({"resource": None}, "resource"),
        ({"context": {"token": "mine"}}, "reserved"),
        ({"context": {"delegation": 1}}, "reserved"),
        ({"context": {"amount": 1.5}}, "whole number"),
        ({"context": {"note": None}}, "null"),
        ({"attributes": {"classification": "x"}}, "entity store"),
    ],
)
def test_malformed_requests_are_invalid_argument(pep: Harness, fields: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"action": "read", "resource": ("Doc", "plan")}
    args.update(fields)
    with pytest.raises(grpc.RpcError) as info:
        pep.authorize(pep.token(), **args)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


# --- batches ---------------------------------------------------------------------------


def test_batch_answers_each_check_in_order(pep: Harness) -> None:
    checks = [
        pb.Check(action="read", resource=pb.Resource(type="Doc", id="plan"), request_id="a"),
        pb.Check(action="read", resource=pb.Resource(type="Doc", id="keys"), request_id="b"),
        pb.Check(action="write", resource=pb.Resource(type="Doc", id="plan")),
        pb.Check(action="write", resource=pb.Resource(type="Doc", id="plan"), context=struct({"amount": 3})),
    ]
    resp = pep.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token=pep.token(), checks=checks, request_id="batch"))
    assert [(r.decision, r.reason) for r in resp.responses] == [
        (ALLOW, "allowed"),
        (DENY, "policy_forbid"),
        (DENY, "policy_no_permit"),
        (DENY, "evaluation_error"),
    ]
    assert len({r.decision_id for r in resp.responses}) == 4
    ids = sorted(line["request_id"] for line in pep.log_lines(4))
    assert ids == ["a", "b", "batch", "batch"]


def test_batch_with_a_bad_token_denies_every_check(pep: Harness) -> None:
    checks = [pb.Check(action="read", resource=pb.Resource(type="Doc", id="plan"))] * 3
    resp = pep.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token="nope", checks=checks))
    assert [r.reason for r in resp.responses] == ["token_malformed"] * 3


def test_empty_batch_is_invalid_argument(pep: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        pep.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(token=pep.token()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- health, listeners, log and metrics ------------------------------------------------


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_serving_with_policies(pep: Harness) -> None:
    assert _health(pep.channel) == health_pb2.HealthCheckResponse.SERVING
    assert _health(pep.channel, "pep.v1.Authorizer") == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("content", ["empty", "invalid"])
def test_no_valid_policies_is_not_serving_and_unavailable(
    harness_factory: Callable[..., Harness], tmp_path: Path, content: str
) -> None:
    policies = tmp_path / "broken"
    policies.mkdir()
    if content == "invalid":
        (policies / "p.cedar").write_text("permit(principal, action, resource) when {")
    else:
        policies.rmdir()  # the directory does not even exist
    h = harness_factory(policies)
    assert _health(h.channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        h.authorize(h.token())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    line = h.log_lines(1)[0]
    assert (line["decision"], line["reason"]) == ("deny", "policy_unavailable")
    with urllib.request.urlopen(f"http://{h.server.metrics_address}/healthz") as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{h.server.metrics_address}/readyz")
    assert err.value.code == 503


def test_unix_domain_socket_listener(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    sock = tmp_path / "run" / "pep.sock"
    h = harness_factory(listen=f"unix://{sock}", metrics_listen="127.0.0.1:0")
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        r = stub.Authorize(request(h.token()), timeout=10)
    assert (r.decision, r.reason) == (ALLOW, "allowed")


def test_tcp_and_unix_socket_together(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    sock = tmp_path / "pep.sock"
    h = harness_factory(extra_listen=[f"unix://{sock}"])
    assert h.authorize(h.token()).reason == "allowed"
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        assert pb_grpc.AuthorizerStub(channel).Authorize(request(h.token()), timeout=10).reason == "allowed"


def test_reflection_lists_the_services(pep: Harness) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(pep.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"pep.v1.Authorizer", "grpc.health.v1.Health"} <= names


def test_decision_log_line_has_the_fields_and_no_secrets(pep: Harness) -> None:
    token = pep.token(scopes=["docs:read"])
    md = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
    r = pep.stub.Authorize(request(token, request_id="req-1"), metadata=md, timeout=10)
    line = pep.log_lines(1)[0]
    assert LOG_FIELDS <= set(line)
    assert line["decision_id"] == r.decision_id
    assert (line["request_id"], line["decision"], line["reason"]) == ("req-1", "allow", "allowed")
    assert line["resource"] == {"type": "Doc", "id": "plan"}
    assert line["token"]["iss"] == ISSUER and line["token"]["scopes"] == ["docs:read"]
    assert line["traceparent"].startswith("00-4bf92f")
    raw = pep.log_path.read_text()
    assert segments(token)[2] not in raw and segments(token)[1] not in raw


def test_metrics_count_decisions_by_reason(pep: Harness) -> None:
    pep.authorize(pep.token())
    pep.authorize(pep.token(), resource=("Doc", "keys"))
    pep.authorize("garbage")
    with urllib.request.urlopen(f"http://{pep.server.metrics_address}/metrics") as resp:
        text = resp.read().decode()
    assert 'pep_decisions_total{action="read",decision="allow",reason="allowed"} 1.0' in text
    assert 'pep_decisions_total{action="read",decision="deny",reason="policy_forbid"} 1.0' in text
    assert 'pep_decisions_total{action="read",decision="deny",reason="token_malformed"} 1.0' in text
    assert "pep_policies_loaded 5.0" in text
    assert "pep_agents_registered 9.0" in text


def test_unknown_actions_are_labelled_other(pep: Harness) -> None:
    pep.authorize(pep.token(), action="x" * 50)
    with urllib.request.urlopen(f"http://{pep.server.metrics_address}/metrics") as resp:
        text = resp.read().decode()
    assert 'action="other"' in text and "x" * 50 not in text
