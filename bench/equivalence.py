"""Does the bench's Cerbos policy decide as pep does? The same calls to both, decisions compared.

    .venv/bin/python -m bench.equivalence

Each variation changes one thing of the bench's call (alice -> assistant -> billing-bot pays
1,200.00 USD, bearer): the user, the chain, the scopes, the amount, the currency, the Account
(stored in the bench estate, or sent with its attributes), the action. pep gets a token and an
Authorize; Cerbos the CheckResources request bench/cerbos.py builds from the same facts.
make bench prints the one-line verdict; run this module for every call.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format, struct_pb2

from bench import cerbos, nodeload
from bench.common import AUDIENCE, ISSUER
from bench.servers import grpc_server
from bench.workloads import ACCOUNT_ATTRS, CHAIN, CONTEXT, SCOPES, USER, bench_estate
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.dev import tokens as devtoken

GROUP = {"__entity": {"type": "Group", "id": "treasury-signers"}}
ENGINEERING = {"__entity": {"type": "Group", "id": "engineering"}}
# Copies of billing-bot that only the registry tells apart: its status, its expiry.
COPIES = {"billing-bot-suspended": {"status": "suspended"}, "billing-bot-expired": {"expires": "2025-01-31"}}
VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("the bench's call (Account sent)", {}),
    ("stored acct-0007", {"stored": "acct-0007"}),
    ("stored ops-usd", {"stored": "ops-usd"}),
    ("stored legacy-usd (frozen)", {"stored": "legacy-usd"}),
    ("stored alice-expenses (owner), EUR", {"stored": "alice-expenses", "context": {**CONTEXT, "currency": "EUR"}}),
    ("stored alice-expenses, USD", {"stored": "alice-expenses"}),
    ("frozen Account sent", {"account": {**ACCOUNT_ATTRS, "frozen": True}}),
    (
        "signers: finance (a parent group)",
        {"account": {**ACCOUNT_ATTRS, "signers": {"__entity": {**GROUP["__entity"], "id": "finance"}}}},
    ),
    (
        "signers: engineering",
        {"account": {**ACCOUNT_ATTRS, "signers": {"__entity": {**GROUP["__entity"], "id": "engineering"}}}},
    ),
    ("amount over billing-bot's limit", {"context": {**CONTEXT, "amount": 300000}}),
    ("amount over the ceiling", {"context": {**CONTEXT, "amount": 2000000}}),
    ("amount 0", {"context": {**CONTEXT, "amount": 0}}),
    ("scope payments:read only", {"scopes": ["payments:read"]}),
    ("user bob (not a signer)", {"user": "bob"}),
    ("user mallory (contractor)", {"user": "mallory"}),
    ("alice -> billing-bot directly", {"chain": ["billing-bot"]}),
    ("bob -> billing-bot directly", {"chain": ["billing-bot"], "user": "bob"}),
    ("dev-coder -> billing-bot", {"chain": ["billing-bot", "dev-coder"]}),
    ("chain of 3 (planner between)", {"chain": ["billing-bot", "planner", "assistant"]}),
    ("trading-bot (suspended)", {"chain": ["trading-bot", "assistant"]}),
    ("summarizer (expired) -> billing-bot", {"chain": ["billing-bot", "summarizer"]}),
    ("support-bot pays", {"chain": ["support-bot", "assistant"]}),
    ("bob, signers: engineering", {"user": "bob", "account": {**ACCOUNT_ATTRS, "signers": ENGINEERING}}),
    (
        "bob -> billing-bot, signers: engineering",
        {"user": "bob", "chain": ["billing-bot"], "account": {**ACCOUNT_ATTRS, "signers": ENGINEERING}},
    ),
    ("a suspended copy of billing-bot", {"chain": ["billing-bot-suspended", "assistant"]}),
    ("an expired copy of billing-bot", {"chain": ["billing-bot-expired", "assistant"]}),
    ("read_account by assistant", {"action": "read_account", "chain": ["assistant"], "context": {}}),
    ("read_account by billing-bot", {"action": "read_account", "context": {}}),
    ("read_account by support-bot", {"action": "read_account", "chain": ["support-bot", "assistant"], "context": {}}),
    ("read_account for bob", {"action": "read_account", "user": "bob", "chain": ["assistant"], "context": {}}),
]


def _estate(tmp: Path) -> Path:
    """The bench estate plus COPIES in the registry."""
    estate = tmp / "estate-equivalence"
    shutil.copytree(bench_estate(tmp), estate)
    registry = yaml.safe_load((estate / "agents.yaml").read_text())
    bot = next(a for a in registry["agents"] if a["id"] == "billing-bot")
    registry["agents"] += [{**bot, "id": name, **change} for name, change in COPIES.items()]
    (estate / "agents.yaml").write_text(yaml.safe_dump(registry))
    return estate


def _calls(estate: Path, key: str) -> list[dict[str, Any]]:
    stored = {e["uid"]["id"]: e["attrs"] for e in json.loads((estate / "entities.json").read_text())}
    calls = []
    for i, (name, change) in enumerate(VARIATIONS):
        call = {"name": name, "user": USER, "chain": CHAIN, "scopes": SCOPES, "context": CONTEXT, "action": "pay"}
        call |= {"account": ACCOUNT_ATTRS, "resource_id": f"eq-{i}", "stored": None, **change}
        if call["stored"]:
            call["resource_id"], call["account"] = call["stored"], stored[call["stored"]]
        call["token"] = devtoken.mint_token(
            key, issuer=ISSUER, audience=AUDIENCE, sub=call["user"], act_chain=call["chain"], scopes=call["scopes"]
        )
        call["jti"] = json.loads(base64.urlsafe_b64decode(call["token"].split(".")[1] + "=="))["jti"]
        calls.append(call)
    return calls


def _pep_request(call: dict[str, Any]) -> bytes:
    attrs = None if call["stored"] else json_format.ParseDict(call["account"], struct_pb2.Struct())
    return pb.AuthorizeRequest(
        token="Bearer " + call["token"],
        action=call["action"],
        resource=pb.Resource(type="Account", id=call["resource_id"], attributes=attrs),
        context=json_format.ParseDict(call["context"], struct_pb2.Struct()),
    ).SerializeToString()


def compare(tmp: Path, binary: Path) -> list[tuple[str, str, str]]:
    """(variation, pep's decision and reason, Cerbos's effect) per call."""
    tmp.mkdir(parents=True, exist_ok=True)
    key, jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
    estate, pbs = _estate(tmp), cerbos.generate(tmp)
    calls = _calls(estate, key)
    with grpc_server("pep", tmp, jwks, estate) as srv, grpc.insecure_channel(srv.address) as channel:
        authorize = channel.unary_unary("/pep.v1.Authorizer/Authorize")
        peps = [pb.AuthorizeResponse.FromString(authorize(_pep_request(c), timeout=10)) for c in calls]
    with cerbos.server(tmp, binary, estate) as srv, grpc.insecure_channel(srv.address) as channel:
        check = channel.unary_unary(cerbos.PATH)
        answers = []
        for c in calls:
            request = cerbos.check_request(
                pbs,
                **{k: c[k] for k in ("user", "chain", "scopes", "account", "resource_id", "action", "context")},
                token_id=c["jti"],
                request_id=c["name"],
            )
            result = pbs.response.CheckResourcesResponse.FromString(check(request, timeout=10)).results[0]
            answers.append(pbs.effect.Effect.Name(result.actions[c["action"]]))
    return [
        (c["name"], ("allow" if p.decision == pb.DECISION_ALLOW else "deny") + f" ({p.reason})", a)
        for c, p, a in zip(calls, peps, answers, strict=True)
    ]


def agree(pep: str, effect: str) -> bool:
    return pep.startswith("allow") == (effect == "EFFECT_ALLOW")


def verdict(rows: list[tuple[str, str, str]]) -> str:
    same = sum(agree(p, a) for _, p, a in rows)
    allowed = sum(p.startswith("allow") for _, p, _ in rows)
    text = f"Cerbos policy vs pep on {len(rows)} variations of the call: {same} agree ({allowed} allowed by pep)"
    return text + "".join(f"\n  DIFFERS: {n}: pep {p}, Cerbos {a}" for n, p, a in rows if not agree(p, a))


def main() -> None:
    binary = nodeload.ensure(cerbos=True)
    assert binary is not None
    rows = compare(Path(tempfile.mkdtemp(prefix="pep-bench-eq-")), binary)
    print(f"{'variation':38s} {'pep':36s} Cerbos")
    for name, pep, effect in rows:
        print(f"{name:38s} {pep:36s} {effect}{'' if agree(pep, effect) else '   <-- differs'}")
    print(verdict(rows))
    sys.exit(0 if all(agree(p, a) for _, p, a in rows) else 1)


if __name__ == "__main__":
    main()
