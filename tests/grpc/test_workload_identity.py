"""SPIFFE JWT-SVIDs, transaction tokens and jwks_file reloads on a real server (real gRPC, real signatures).

One pep with three issuers: a spiffe issuer (a SPIRE-style bundle file, `use: jwt-svid`), a
txntoken issuer and an ordinary one. The schema declares `context.token.transaction`, so the
Cedar request is validated with it; a policy reads `context.token.transaction.purp` and `tctx`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pep.dev import tokens as devtoken
from tests.harness import forge
from tests.harness.estate import AGENTS, POLICIES, write_estate
from tests.harness.forge import OMIT
from tests.harness.server import Harness, open_harness
from tests.harness.waits import wait_for

DEADLINE_SECONDS = float(os.environ.get("PEP_TEST_DEADLINE", "20"))
AUD = "pep-test"
TD = "example.org"
SVID_ISSUER = "https://oidc.example.org"
TXN_ISSUER = "https://tts.example.org"
BOT = "spiffe://example.org/ns/agents/sa/svc-bot"

TOKEN = "{issuer: String, scopes: Set<String>, client_id: String, issued_at: Long, expires_at: Long, " + (
    "transaction?: {tctx: {action?: String, ticker?: String}, rctx: {req_ip?: String}, purp: String}}"
)
DELEGATION = "{depth: Long, actors: Set<Agent>, origin: Agent}"
STD = f"on_behalf_of?: User, delegation: {DELEGATION}, token: {TOKEN}, binding: String,"
SCHEMA = f"""
entity AgentGroup;
entity Agent in [AgentGroup] {{ sandboxed?: Bool }};
entity Group;
entity User in [Group];
entity Doc {{ owner?: User, classification?: String }};
action read, write, trade appliesTo {{ principal: [Agent], resource: [Doc], context: {{ {STD} }} }};
action delegate appliesTo {{ principal: [User, Agent], resource: [Agent], context: {{ {STD} }} }};
"""
TRADE = """
@id("trade-for-its-purpose")
permit(principal in AgentGroup::"workers", action == Action::"trade", resource)
when {
  context.token has transaction && context.token.transaction.purp == "trade" &&
  context.token.transaction.tctx has action && context.token.transaction.tctx.action == "BUY"
};
"""
REGISTRY = AGENTS + f'  - {{id: svc-bot, owner: team@example.com, groups: [workers], spiffe_id: "{BOT}"}}\n'


@pytest.fixture
def pep(tmp_path: Path) -> Iterator[tuple[Harness, Any, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**devtoken.public_jwk(key), "kid": forge.kid_of(key)}
    bundle = tmp_path / "bundle.json"
    x509_authority = {
        **devtoken.public_jwk(ec.generate_private_key(ec.SECP256R1())),
        "use": "x509-svid",
        "x5c": ["MIIB"],
    }
    bundle.write_text(json.dumps({"keys": [x509_authority, {**jwk, "use": "jwt-svid"}], "spiffe_sequence": 3}))
    txn_keys = tmp_path / "txn-jwks.json"
    txn_keys.write_text(json.dumps({"keys": [{**jwk, "alg": "ES256"}]}))
    policies = write_estate(
        tmp_path / "policies", schema=SCHEMA, agents=REGISTRY, policies={**POLICIES, "trade.cedar": TRADE}
    )
    _, jwks_path = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    issuers = [
        {"issuer": "https://idp.test", "audiences": [AUD], "jwks_file": jwks_path, "algorithms": ["ES256"]},
        {"issuer": SVID_ISSUER, "profile": "spiffe", "trust_domain": TD, "audiences": [AUD], "jwks_file": str(bundle)},
        {"issuer": TXN_ISSUER, "profile": "txntoken", "audiences": [AUD], "jwks_file": str(txn_keys)},
    ]
    h = open_harness(tmp_path, policies, issuers=issuers, tokens={"jwks_file_poll_seconds": 0.05})
    try:
        yield h, key, txn_keys
    finally:
        h.close()


def _svid(key: Any, **changes: Any) -> str:
    n = int(time.time())
    claims = forge.merge({"iss": SVID_ISSUER, "sub": BOT, "aud": AUD, "iat": n, "exp": n + 300}, changes)
    return forge.token(key, claims, typ="JWT")


def _txn(key: Any, typ: str = "txntoken+jwt", **changes: Any) -> str:
    n = int(time.time())
    claims = {
        "iss": TXN_ISSUER,
        "aud": AUD,
        "iat": n,
        "exp": n + 60,
        "txn": "97053963-771d-49cc-a4e3-20aad399c312",
        "sub": "alice",
        "req_wl": "worker",
        "scope": "trade.stocks",
        "tctx": {"action": "BUY", "ticker": "MSFT"},
        "rctx": {"req_ip": "69.151.72.123"},
        "purp": "trade",
    }
    return forge.token(key, forge.merge(claims, changes), typ=typ)


def test_an_svid_is_its_agent_and_a_foreign_trust_domain_is_untrusted(pep: tuple[Harness, Any, Path]) -> None:
    h, key, _ = pep
    answer = h.authorize(_svid(key))
    assert (answer.reason, answer.agent, answer.on_behalf_of, list(answer.delegation_chain)) == (
        "allowed",
        "svc-bot",
        "",
        ["svc-bot"],
    )
    assert h.authorize(_svid(key, iss=OMIT)).reason == "allowed"  # matched by its trust domain
    assert h.authorize(_svid(key, sub="spiffe://evil.example/ns/agents/sa/svc-bot")).reason == "token_issuer_untrusted"
    assert h.authorize(_svid(key, sub="spiffe://example.org/ns/agents/sa/nobody")).reason == "chain_unknown_agent"
    assert h.authorize(_svid(key, aud="someone-else")).reason == "token_audience_invalid"


def test_a_transaction_tokens_context_reaches_the_policy(pep: tuple[Harness, Any, Path]) -> None:
    h, key, _ = pep
    answer = h.authorize(_txn(key), action="trade")
    assert (answer.reason, answer.agent, answer.on_behalf_of) == ("allowed", "worker", "alice"), answer.errors
    assert h.authorize(_txn(key, purp="refund", txn="t-2"), action="trade").reason == "policy_no_permit"
    assert h.authorize(_txn(key, tctx={"action": "SELL"}, txn="t-3"), action="trade").reason == "policy_no_permit"
    # A tctx key the schema does not declare fails the context's validation: the delegation grant's
    # query for a user's token, the check itself for an agent acting alone.
    undeclared = {"action": "BUY", "limit": "9"}
    for sub, reason in (("alice", "chain_delegation_forbidden"), ("worker", "invalid_request")):
        answer = h.authorize(_txn(key, sub=sub, tctx=undeclared, txn=f"t-{sub}"), action="trade")
        assert answer.reason == reason and "`limit` should not exist according to the schema" in answer.errors[0]
    assert h.authorize(_txn(key, tctx={"price": 1.5}, txn="t-5"), action="trade").reason == "token_claims_missing"
    # The same claims as an access token (typ at+jwt): not a transaction token, refused by typ.
    assert h.authorize(_txn(key, typ="at+jwt", txn="t-6"), action="trade").reason == "token_type_invalid"


def test_a_rotated_jwks_file_is_picked_up_and_a_bad_one_keeps_the_last_good(pep: tuple[Harness, Any, Path]) -> None:
    h, key, path = pep
    registry = h.server.metrics.registry

    def failures() -> float:
        return registry.get_sample_value("pep_jwks_refreshes_total", {"result": "failure"}) or 0.0

    old = _txn(key)
    assert h.authorize(old, action="trade").reason == "allowed"
    before = failures()
    tmp = path.with_suffix(".tmp")
    tmp.write_text("{ not a JWK Set")
    os.replace(tmp, path)
    assert wait_for(lambda: failures() > before, timeout=DEADLINE_SECONDS)
    assert h.authorize(old, action="trade").reason == "allowed"  # the last good keys
    new = ec.generate_private_key(ec.SECP256R1())
    tmp.write_text(json.dumps({"keys": [{**devtoken.public_jwk(new), "kid": forge.kid_of(new), "alg": "ES256"}]}))
    os.replace(tmp, path)
    assert wait_for(lambda: h.authorize(old, action="trade").reason == "token_signature_invalid", DEADLINE_SECONDS)
    assert h.authorize(_txn(new, txn="t-9"), action="trade").reason == "allowed"
