"""AuthZEN on a listener without trust_subject: the subject comes from the Authorization
header's token, through the full pipeline (tokens, chain, controls, grants, Cedar), and a
body subject naming anyone else is denied. Runs against the gRPC tests' estate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pep.dev import tokens as devtoken
from tests.harness.authzen import Client
from tests.harness.server import Harness

WORKER = {"type": "Agent", "id": "worker"}


@pytest.fixture
def az(harness_factory: Callable[..., Harness]) -> tuple[Harness, Client]:
    h = harness_factory(authzen={"listen": "127.0.0.1:0"})
    return h, Client(h.server.authzen_address)


def ask(subject: dict[str, Any] = WORKER, action: str = "read", doc: str = "plan", **extra: Any) -> dict[str, Any]:
    return {"subject": subject, "action": {"name": action}, "resource": {"type": "Doc", "id": doc}, **extra}


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def test_the_token_names_the_subject(az: tuple[Harness, Client]) -> None:
    h, client = az
    r = client.post("/access/v1/evaluation", ask(), bearer(h.token(), **{"X-Request-ID": "tok-1"}))
    assert r.status == 200
    ctx = r.body["context"]
    assert r.body["decision"] is True
    assert (ctx["reason"], ctx["policies"]) == ("allowed", ["read-docs"])
    assert (ctx["agent"], ctx["on_behalf_of"], ctx["delegation_chain"]) == ("worker", "alice", ["worker"])
    entry = next(e for e in h.log_lines() if e["request_id"] == "tok-1")
    assert (entry["decision_id"], entry["decision"], entry["binding"]) == (ctx["decision_id"], "allow", "bearer")
    assert (entry["agent"], entry["on_behalf_of"], entry["token"]["iss"]) == ("worker", "alice", "https://idp.test")


def test_a_delegation_chain_resolves_to_its_current_actor(az: tuple[Harness, Client]) -> None:
    h, client = az
    token = h.token(act_chain=("worker", "orchestrator"))
    r = client.post("/access/v1/evaluation", ask(), bearer(token))
    assert r.body["decision"] is True
    assert r.body["context"]["delegation_chain"] == ["worker", "orchestrator"]


@pytest.mark.parametrize(
    "subject",
    [
        {"type": "Agent", "id": "orchestrator"},  # another agent
        {"type": "User", "id": "alice"},  # the user the agent acts for is not the principal
        {"type": "agent", "id": "worker"},  # Cedar types are case-sensitive
    ],
)
def test_a_body_subject_naming_someone_else_is_denied(az: tuple[Harness, Client], subject: dict[str, Any]) -> None:
    h, client = az
    r = client.post("/access/v1/evaluation", ask(subject), bearer(h.token(), **{"X-Request-ID": "other"}))
    assert r.status == 200
    ctx = r.body["context"]
    assert (r.body["decision"], ctx["reason"]) == (False, "invalid_request")
    assert ctx["errors"] == [f'{subject["type"]}::"{subject["id"]}" is not the token\'s principal Agent::"worker"']
    assert "error" not in ctx  # a decision, not a malformed request
    entry = next(e for e in h.log_lines() if e["request_id"] == "other")
    assert (entry["decision"], entry["reason"], entry["agent"]) == ("deny", "invalid_request", "worker")


def test_token_failures_are_decisions(az: tuple[Harness, Client]) -> None:
    h, client = az
    missing = client.post("/access/v1/evaluation", ask())
    assert (missing.status, missing.body["decision"], missing.body["context"]["reason"]) == (
        200,
        False,
        "token_missing",
    )
    garbage = client.post("/access/v1/evaluation", ask(), bearer("not.a.token"))
    assert (garbage.body["decision"], garbage.body["context"]["reason"]) == (False, "token_malformed")
    expired = client.post("/access/v1/evaluation", ask(), bearer(h.token(now=1_600_000_000)))
    assert expired.body["context"]["reason"] == "token_expired"
    assert (
        h.server.metrics.registry.get_sample_value(
            "pep_decisions_total", {"decision": "deny", "reason": "token_missing", "action": "read"}
        )
        == 1.0
    )


def test_subject_properties_cannot_be_sent_with_a_token(az: tuple[Harness, Client]) -> None:
    h, client = az
    body = ask({**WORKER, "properties": {"sandboxed": False}})
    r = client.post("/access/v1/evaluation", body, bearer(h.token()))
    assert r.status == 400
    assert "subject.properties cannot be sent with a token" in r.body["error"]["message"]


def test_a_token_batch_names_one_subject(az: tuple[Harness, Client]) -> None:
    h, client = az
    body = {"action": {"name": "read"}, "evaluations": [ask(), ask({"type": "Agent", "id": "orchestrator"})]}
    r = client.post("/access/v1/evaluations", body, bearer(h.token()))
    assert r.status == 400
    assert "every evaluation names the same subject" in r.body["error"]["message"]


@pytest.mark.parametrize(
    ("semantic", "docs", "expected"),
    [
        ("execute_all", ["plan", "keys", "plan"], [True, False, True]),
        ("deny_on_first_deny", ["plan", "keys", "plan"], [True, False]),
        ("permit_on_first_permit", ["keys", "plan", "keys"], [False, True]),
    ],
)
def test_batch_semantics_with_a_token(
    az: tuple[Harness, Client], semantic: str, docs: list[str], expected: list[bool]
) -> None:
    h, client = az
    body = {
        "subject": WORKER,
        "action": {"name": "read"},
        "options": {"evaluations_semantic": semantic},
        "evaluations": [{"resource": {"type": "Doc", "id": d}} for d in docs],
    }
    r = client.post("/access/v1/evaluations", body, bearer(h.token(), **{"X-Request-ID": semantic}))
    assert r.status == 200
    assert [e["decision"] for e in r.body["evaluations"]] == expected
    assert [e["context"]["reason"] for e in r.body["evaluations"]][-1] == (
        "allowed" if expected[-1] else "policy_forbid"
    )
    h.log_lines(wait_for=len(expected))
    assert len([e for e in h.log_lines() if e["request_id"] == semantic]) == len(expected)


def test_a_dpop_bound_token_with_the_forwarded_request(az: tuple[Harness, Client]) -> None:
    h, client = az
    key, jwk = devtoken.new_dpop_key()
    token = h.token(dpop_jkt=devtoken.jwk_thumbprint(jwk))
    proof = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu="https://api.example.com/docs/plan", access_token=token)
    forwarded = {
        "Authorization": f"DPoP {token}",
        "DPoP": proof,
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "X-Forwarded-Uri": "/docs/plan",
    }
    r = client.post("/access/v1/evaluation", ask(), forwarded)
    assert (r.body["decision"], r.body["context"]["reason"]) == (True, "allowed")
    replay = client.post("/access/v1/evaluation", ask(), forwarded)
    assert replay.body["context"]["reason"] == "dpop_replay"
    fresh = devtoken.mint_dpop_proof(key, jwk, htm="GET", htu="https://api.example.com/docs/plan", access_token=token)
    unforwarded = client.post("/access/v1/evaluation", ask(), {"Authorization": f"DPoP {token}", "DPoP": fresh})
    assert unforwarded.body["context"]["reason"] == "dpop_proof_invalid"
    as_bearer = client.post("/access/v1/evaluation", ask(), bearer(token))
    assert as_bearer.body["context"]["reason"] == "pop_binding_mismatch"


def test_a_trusted_listener_takes_the_body_subject_and_applies_agent_controls(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(authzen={"listen": "127.0.0.1:0", "trust_subject": True})
    client = Client(h.server.authzen_address)
    unknown = client.post("/access/v1/evaluation", ask({"type": "Agent", "id": "ghost"}))
    assert unknown.body["context"]["reason"] == "chain_unknown_agent"
    suspended = client.post("/access/v1/evaluation", ask({"type": "Agent", "id": "sleepy"}, doc="plan"))
    assert suspended.body["context"]["reason"] == "agent_disabled"
    # No token here, so no `token`/`binding`/`delegation` context: this estate's schema, which
    # requires them, cannot be met by a trusted subject, and a caller may not send them itself.
    r = client.post("/access/v1/evaluation", ask(), bearer(h.token()))
    assert (r.body["decision"], r.body["context"]["reason"]) == (False, "invalid_request")
    assert "attribute `binding`" in r.body["context"]["errors"][0]
    forged = client.post("/access/v1/evaluation", ask(context={"binding": "dpop"}))
    assert forged.status == 400 and "'binding' is reserved" in forged.body["error"]["message"]
