"""Golden cases: one request to a real pep, its answer and its decision-log entry, asserted together.

Each tests/golden/*.yaml file is one case (its file name is the test id):

    description: what the case shows (free text, not checked)
    server:                  # optional; cases with the same block share one server
      files: {path: text}    # written into a copy of the fixed estate (tests/harness/estate.py)
      config: {...}          # config overrides, e.g. {mode: dry_run}
    token:                   # what the forge signs; {} is a good token of alice through worker
      raw: text              # send exactly this text instead ("" for no token at all)
      chain: [worker, ...]   # the act chain, current actor first ([] for none); client_id is its head
      claims: {...}          # merged over the defaults; null drops a claim; iat, nbf, exp are seconds from now
      header: {...}          # merged over the default JWS header; null drops a member; alg none: unsigned
      signer: foreign        # sign with a key the issuer's JWKS does not hold (the header keeps its kid)
      dpop: true             # bind the token to a fresh DPoP key (cnf.jkt) and send a proof for the request
      scheme: DPoP           # send "<scheme> <token>"
    request:                 # an AuthorizeRequest; with `checks` an AuthorizeBatchRequest
      action: read
      resource: {type: Doc, id: plan, attributes: {...}}
      context: {...}
      request_id: ...        # default: golden-<case>
      http_method, http_uri  # for DPoP
      traceparent: ...       # sent as gRPC metadata
      checks: [{action, resource, context, request_id}, ...]
      warmup: 1              # send the same request this many times first (rate limits)
    response:                # the AuthorizeResponse, every field but decision_id and policy_version;
      decision: allow        # a list of them for a batch; {error: INVALID_ARGUMENT, details: ...}
      reason: allowed        # for a request answered with a gRPC error
      policies: [...]
      errors: [...]
      agent, on_behalf_of, delegation_chain
    log:                     # the decision-log entry (a list for a batch), every field but the volatile ones
      decision, reason, policies, errors, agent, on_behalf_of, delegation_chain, action, resource,
      token, scopes_dropped, binding, mode, request_id, inputs, and answered / shadow / traceparent when present

Comparison is exact: a field missing from the YAML, extra in it, or different fails the case. A
string may be given as {$re: pattern} (re.search) where the text is not pep's own (Cedar's messages),
and a whole number as {$int: any} where it is the moment's (the token's times in `inputs`).
The log entry is found by the response's decision_id (by request_id for a gRPC error). Volatile
fields are checked for shape only: ts (RFC 3339 UTC, microseconds), decision_id (the response's),
duration_us (a whole number >= 0), policy_version (the loaded policy set's), schema (1). The log fields
are described in the README's decision log section.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.dev import tokens as devtoken
from pep.dev.tokens import PrivateKey
from tests.harness import forge
from tests.harness.decision_log import read_entries
from tests.harness.estate import write_estate
from tests.harness.server import AUDIENCE, ISSUER, Harness, open_harness, struct

GOLDEN = Path(__file__).parent
CASES = sorted(GOLDEN.glob("*.yaml"))
CASE_KEYS = {"description", "server", "token", "request", "response", "log"}
SERVER_KEYS = {"files", "config"}
TOKEN_KEYS = {"raw", "chain", "claims", "header", "signer", "dpop", "scheme"}
CHECK_KEYS = {"action", "resource", "context", "request_id"}
REQUEST_KEYS = CHECK_KEYS | {"http_method", "http_uri", "client_cert_thumbprint", "traceparent", "checks", "warmup"}
VOLATILE = {"ts", "decision_id", "duration_us", "policy_version", "schema"}
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
DPOP_URI = "https://pep.test/pep.v1.Authorizer/Authorize"
DECISIONS = {pb.DECISION_ALLOW: "allow", pb.DECISION_DENY: "deny"}


# --- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict[str, Any]], Harness]]:
    """`get(server_block)`: a running pep for that block, started once and shared by the module."""
    started: dict[str, Harness] = {}
    root = tmp_path_factory.mktemp("golden")

    def get(block: dict[str, Any]) -> Harness:
        key = json.dumps(block, sort_keys=True)
        if key not in started:
            home = root / f"server{len(started)}"
            policies = write_estate(home / "policies")
            for name, text in (block.get("files") or {}).items():
                (policies / name).parent.mkdir(parents=True, exist_ok=True)
                (policies / name).write_text(text)
            started[key] = open_harness(home, policies, **(block.get("config") or {}))
        return started[key]

    yield get
    for h in started.values():
        h.close()


# --- building the request ----------------------------------------------------------------


def act_of(chain: list[str]) -> dict[str, Any] | None:
    act: dict[str, Any] | None = None
    for actor in reversed(chain):
        act = {"sub": actor} if act is None else {"sub": actor, "act": act}
    return act


def omit_nulls(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: forge.OMIT if v is None else v for k, v in changes.items()}


def build_token(h: Harness, name: str, spec: dict[str, Any], fields: dict[str, Any]) -> str:
    """The token text a case sends; a DPoP proof lands in `fields`."""
    if "raw" in spec:
        return str(spec["raw"])
    now = int(time.time())
    chain = list(spec.get("chain", ["worker"]))
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "jti": f"golden-{name}",
        "client_id": chain[0] if chain else "alice",
    }
    if chain:
        claims["act"] = act_of(chain)
    changes = dict(spec.get("claims") or {})
    for moment in ("iat", "nbf", "exp"):
        if isinstance(changes.get(moment), int):
            changes[moment] += now
    dpop_key = None
    if spec.get("dpop"):
        dpop_key = devtoken.new_dpop_key()
        changes.setdefault("cnf", {"jkt": devtoken.jwk_thumbprint(dpop_key[1])})
    claims = forge.merge(claims, omit_nulls(changes))
    issuer_key = devtoken.load_private_key(h.key_path)
    header = omit_nulls(spec.get("header") or {})
    signer: PrivateKey = issuer_key
    if spec.get("signer") == "foreign":
        header.setdefault("kid", forge.kid_of(issuer_key))
        signer = devtoken.new_dpop_key()[0]  # any fresh P-256 key
    if header.get("alg") == "none":
        token = forge.alg_none(claims)
    else:
        token = forge.token(signer, claims, **header)
    if dpop_key is not None:
        fields.setdefault("http_method", "POST")
        fields.setdefault("http_uri", DPOP_URI)
        fields["dpop_proof"] = devtoken.mint_dpop_proof(
            dpop_key[0], dpop_key[1], htm=fields["http_method"], htu=fields["http_uri"], access_token=token
        )
    return f"{spec['scheme']} {token}" if spec.get("scheme") else token


def resource_of(spec: dict[str, Any] | None) -> pb.Resource | None:
    if spec is None:
        return None
    res = pb.Resource(type=spec.get("type", ""), id=spec.get("id", ""))
    if "attributes" in spec:
        res.attributes.CopyFrom(struct(spec["attributes"]))
    return res


def check_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The action, resource, context and request_id of a request or of one batch check."""
    out: dict[str, Any] = {"action": spec.get("action", "read")}
    resource = resource_of(spec.get("resource", {"type": "Doc", "id": "plan"}))
    if resource is not None:
        out["resource"] = resource
    if "context" in spec:
        out["context"] = struct(spec["context"])
    if "request_id" in spec:
        out["request_id"] = spec["request_id"]
    return out


def send(h: Harness, name: str, case: dict[str, Any]) -> tuple[list[pb.AuthorizeResponse] | grpc.RpcError, str]:
    """Send the case's request; its responses (or the gRPC error) and its request id."""
    spec = dict(case.get("request") or {})
    warmup = spec.pop("warmup", 0)
    metadata = (("traceparent", spec.pop("traceparent")),) if "traceparent" in spec else ()
    spec.setdefault("request_id", f"golden-{name}")
    fields = {k: spec.pop(k) for k in ("http_method", "http_uri", "client_cert_thumbprint") if k in spec}
    token = build_token(h, name, case.get("token") or {}, fields)
    if "checks" in spec:
        checks = [pb.Check(**check_fields(c)) for c in spec["checks"]]
        batch = pb.AuthorizeBatchRequest(token=token, checks=checks, request_id=spec["request_id"], **fields)
        try:
            return list(h.stub.AuthorizeBatch(batch, metadata=metadata, timeout=10).responses), spec["request_id"]
        except grpc.RpcError as e:
            return e, spec["request_id"]
    req = pb.AuthorizeRequest(token=token, **check_fields(spec), **fields)
    for _ in range(warmup):
        h.stub.Authorize(req, metadata=metadata, timeout=10)
    try:
        return [h.stub.Authorize(req, metadata=metadata, timeout=10)], spec["request_id"]
    except grpc.RpcError as e:
        return e, spec["request_id"]


# --- comparing ---------------------------------------------------------------------------


def resolve(expected: Any, actual: Any) -> Any:
    """`expected` with each matcher that matches replaced by the actual value (so `==` tells)."""
    if isinstance(expected, dict) and set(expected) == {"$re"}:
        ok = isinstance(actual, str) and re.search(expected["$re"], actual) is not None
        return actual if ok else expected
    if expected == {"$int": "any"}:
        return actual if isinstance(actual, int) and not isinstance(actual, bool) else expected
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: resolve(v, actual.get(k)) for k, v in expected.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [resolve(e, a) for e, a in zip(expected, actual, strict=True)]
    return expected


def answer_of(r: pb.AuthorizeResponse) -> dict[str, Any]:
    return {
        "decision": DECISIONS.get(r.decision, pb.Decision.Name(r.decision)),
        "reason": r.reason,
        "policies": list(r.policies),
        "errors": list(r.errors),
        "agent": r.agent,
        "on_behalf_of": r.on_behalf_of,
        "delegation_chain": list(r.delegation_chain),
    }


def find_entry(h: Harness, field: str, value: str) -> dict[str, Any]:
    """The one decision entry whose `field` is `value`, waiting for the asynchronous writer."""

    def match(e: dict[str, Any]) -> bool:
        return e.get(field) == value and "event" not in e  # admin events share the file

    deadline = time.monotonic() + 5
    while True:
        found = [e for e in read_entries(h.log_path) if match(e)]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(found) == 1, f"expected one log entry, found {len(found)}"
    return found[0]


def check_entry(entry: dict[str, Any], expected: dict[str, Any], decision_id: str, version: str) -> None:
    assert entry["schema"] == 1
    assert isinstance(entry["ts"], str) and TS.fullmatch(entry["ts"]), entry["ts"]
    assert entry["decision_id"] and entry["decision_id"] == decision_id
    assert isinstance(entry["duration_us"], int) and entry["duration_us"] >= 0
    assert entry["policy_version"] == version
    rest = {k: v for k, v in entry.items() if k not in VOLATILE}
    assert rest == resolve(expected, rest)


def load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text())
    assert isinstance(case, dict) and set(case) <= CASE_KEYS, f"{path.name}: keys are {sorted(CASE_KEYS)}"
    assert "response" in case and "log" in case, f"{path.name}: a case names its response and its log entry"
    # A misspelt key would otherwise be ignored and the case test less than it says.
    for part, allowed in (("server", SERVER_KEYS), ("token", TOKEN_KEYS), ("request", REQUEST_KEYS)):
        assert set(case.get(part) or {}) <= allowed, f"{path.name}: {part} keys are {sorted(allowed)}"
    for check in (case.get("request") or {}).get("checks", []):
        assert set(check) <= CHECK_KEYS, f"{path.name}: a check's keys are {sorted(CHECK_KEYS)}"
    return case


# --- the cases ---------------------------------------------------------------------------


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path, servers: Callable[[dict[str, Any]], Harness]) -> None:
    case = load(path)
    h = servers(case.get("server") or {})
    snapshot = h.server.store.current()
    assert snapshot is not None, "the golden estate loads"
    version = snapshot.version
    answered, request_id = send(h, path.stem, case)
    if isinstance(answered, grpc.RpcError):
        got = {"error": answered.code().name, "details": answered.details()}
        assert got == resolve(case["response"], got)
        entry = find_entry(h, "request_id", request_id)
        check_entry(entry, case["log"], entry["decision_id"], version)
        return
    many = isinstance(case["response"], list)
    expected_answers = case["response"] if many else [case["response"]]
    expected_entries = case["log"] if many else [case["log"]]
    answers = [answer_of(r) for r in answered]
    assert answers == resolve(expected_answers, answers)
    assert len(expected_entries) == len(answered), "one log entry per response"
    for r, expected in zip(answered, expected_entries, strict=True):
        assert r.decision_id and r.policy_version == version
        entry = find_entry(h, "decision_id", r.decision_id)
        check_entry(entry, expected, r.decision_id, version)
