"""What make bench sends: the bench's estate and pep's request files (one hex message per line).

The call is always alice -> assistant -> billing-bot paying 1,200.00 USD from an Account.

- DPoP-bound (`Requests`): one DPoP-bound token, a fresh proof per call, Account ops-usd (the
  example estate's); also the AuthorizeBatch x50 form. Written anew before every run (a proof
  is good once).
- Bearer (`Bearer`), 100 distinct tokens (no DPoP):
  rotating   over 1,000 Accounts the estate stores (acct-0000 .. acct-0999): line i has token
             i mod 100 and Account (i + i div 1000) mod 1000, so the 10,000 lines are 10,000
             distinct (token, Account) pairs, cycled;
  no-repeat  an Account never seen before on every call: the Account is sent with its
             attributes (signers, currency, frozen) and its id is the loadgen's --unique
             MARKER, which it overwrites with the call's sequence number.

The bench estate (`bench_estate`) is the example policies plus those 1,000 Accounts, and with
`payments.forbid.without-dpop` letting bearer tokens pay too (the example estate refuses money
moves without DPoP, which would make every bearer case a deny); every other policy as shipped.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2

from bench.common import AUDIENCE, ISSUER, ROOT
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.dev import tokens as devtoken

HTU = "https://pep.bench/pep.v1.Authorizer/"
USER, CHAIN, SCOPES = "alice", ["billing-bot", "assistant"], ["payments:write"]  # chain: current actor first
CONTEXT = {"amount": 120000, "currency": "USD"}
TOKENS, ACCOUNTS, ROTATING_LINES = 100, 1000, 10_000
MARKER = "nr-000000000000"  # the no-repeat Account id the loadgen stamps (bench/node/loadgen.js --unique)
PROBE_ID = "nr-999999999999"  # the same, for the one call checked before a run
SIGNERS, CURRENCY = "treasury-signers", "USD"
# An Account's attributes: in the bench estate for rotating, in the request for no-repeat.
ACCOUNT_ATTRS = {"signers": {"__entity": {"type": "Group", "id": SIGNERS}}, "currency": CURRENCY, "frozen": False}
DPOP_FORBID = 'when { context.binding != "dpop" };'
BENCH_FORBID = 'when { context.binding != "dpop" && context.binding != "bearer" };'
LIMITS = {"agents": {"billing-bot": {"rate": 1e6, "burst": 1e6}}, "actions": {"pay": {"rate": 1e6, "burst": 1e6}}}


def account(i: int) -> str:
    return f"acct-{i:04d}"


def bench_estate(tmp: Path) -> Path:
    """The example policies, bearer pay allowed, and ACCOUNTS stored Accounts."""
    estate = tmp / "estate-bench"
    if estate.exists():
        return estate
    shutil.copytree(ROOT / "policies", estate)
    payments = estate / "payments.cedar"
    text = payments.read_text()
    if text.count(DPOP_FORBID) != 1:
        raise RuntimeError("policies/payments.cedar: payments.forbid.without-dpop is not as bench/workloads.py expects")
    payments.write_text(text.replace(DPOP_FORBID, BENCH_FORBID))
    entities = json.loads((estate / "entities.json").read_text())
    entities += [
        {"uid": {"type": "Account", "id": account(i)}, "attrs": ACCOUNT_ATTRS, "parents": []} for i in range(ACCOUNTS)
    ]
    (estate / "entities.json").write_text(json.dumps(entities))
    return estate


def limited_estate(tmp: Path) -> Path:
    """The bench estate plus LIMITS (buckets that apply to every call but never run dry)."""
    estate = tmp / "estate-limits"
    if not estate.exists():
        shutil.copytree(bench_estate(tmp), estate)
        (estate / "limits.yaml").write_text(json.dumps(LIMITS))
    return estate


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


def write_lines(path: Path, messages: Iterator[bytes]) -> Path:
    with open(path, "w") as f:
        for message in messages:
            f.write(message.hex() + "\n")
    return path


class Requests:
    """DPoP-bound calls on ops-usd, a fresh proof per call."""

    def __init__(self, key: str) -> None:
        self.dpop_key, self.dpop_jwk = devtoken.new_dpop_key()
        self.token = devtoken.mint_token(
            key,
            issuer=ISSUER,
            audience=AUDIENCE,
            sub=USER,
            act_chain=CHAIN,
            scopes=SCOPES,
            ttl_seconds=3600,
            dpop_jkt=devtoken.jwk_thumbprint(self.dpop_jwk),
        )
        self.resource = pb.Resource(type="Account", id="ops-usd")
        self.context = _struct(CONTEXT)

    def _proof(self, method: str) -> str:
        return devtoken.mint_dpop_proof(
            self.dpop_key, self.dpop_jwk, htm="POST", htu=HTU + method, access_token=self.token
        )

    def message(self, kind: str, request_id: str) -> bytes:
        if kind == "batch":
            checks = [pb.Check(action="pay", resource=self.resource, context=self.context)] * 50
            return pb.AuthorizeBatchRequest(
                token="DPoP " + self.token,
                dpop_proof=self._proof("AuthorizeBatch"),
                http_method="POST",
                http_uri=HTU + "AuthorizeBatch",
                checks=checks,
                request_id=request_id,
            ).SerializeToString()
        return pb.AuthorizeRequest(
            token="DPoP " + self.token,
            dpop_proof=self._proof("Authorize"),
            http_method="POST",
            http_uri=HTU + "Authorize",
            action="pay",
            resource=self.resource,
            context=self.context,
            request_id=request_id,
        ).SerializeToString()

    def write(self, path: Path, kind: str, count: int) -> Path:
        return write_lines(path, (self.message(kind, f"{kind[0]}{i}") for i in range(count)))


class Bearer:
    """TOKENS distinct bearer tokens for the same chain; the rotating and no-repeat calls."""

    def __init__(self, key: str) -> None:
        self.tokens = [
            devtoken.mint_token(
                key, issuer=ISSUER, audience=AUDIENCE, sub=USER, act_chain=CHAIN, scopes=SCOPES, ttl_seconds=3600
            )
            for _ in range(TOKENS)
        ]
        self.claims = [json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "==")) for t in self.tokens]

    @staticmethod
    def calls(workload: str) -> list[tuple[int, str]]:
        """(token index, Account id) per line."""
        if workload == "rotating":
            return [(i % TOKENS, account((i + i // ACCOUNTS) % ACCOUNTS)) for i in range(ROTATING_LINES)]
        return [(t, MARKER) for t in range(TOKENS)]

    def pep_message(self, workload: str, token: int, resource_id: str, request_id: str) -> bytes:
        attrs = _struct(ACCOUNT_ATTRS) if workload == "no-repeat" else None
        return pb.AuthorizeRequest(
            token="Bearer " + self.tokens[token],
            action="pay",
            resource=pb.Resource(type="Account", id=resource_id, attributes=attrs),
            context=_struct(CONTEXT),
            request_id=request_id,
        ).SerializeToString()

    def write_pep(self, path: Path, workload: str) -> Path:
        calls = self.calls(workload)
        return write_lines(path, (self.pep_message(workload, t, r, f"r{i}") for i, (t, r) in enumerate(calls)))

    def pep_probe(self, workload: str) -> bytes:
        token, resource_id = self.calls(workload)[0]
        return self.pep_message(workload, token, PROBE_ID if resource_id == MARKER else resource_id, "probe")
