"""Cerbos 0.55.0 (npm @cerbos/cerbos-linux-x64) set up to answer the bench's calls as pep does.

Requests are CheckResources (one Account, action pay), built with Python code generated at
bench time from the vendored subset of Cerbos's API in bench/proto/, and sent by the same Node
load generator as pep's. Cerbos runs pinned to the server core, policies from disk (a
directory the bench writes), audit on with the file backend (access and decision logs).

The policy (`policy`) mirrors what pep evaluates for pay and read_account on an Account:
- pep's admission checks, as a deny for every action: each agent of the chain is in the
  registry (policies/agents.yaml, as constants), active and not expired, and each hop of the
  chain is a delegation policies/delegation.cedar permits (user -> first agent: assistants,
  coders, support and data agents for anyone, finance agents for finance staff, never for
  contractors; agent -> agent: orchestrators to sandboxed sub-agents);
- payments.cedar's permits and forbids (the bench estate's, bearer allowed), with the user's
  groups (entities.json, closed over Group parents, as constants) for `in resource.signers`.
What the caller tells Cerbos: the principal is the current agent (role `agent`) with the
user, the chain, the token's scopes, issuer and id, the binding and the call's context
(amount, currency) as attributes; the resource is the Account with its attributes.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import yaml
from google.protobuf import struct_pb2

from bench.common import ISSUER, ROOT, SERVER_CPU, free_port, pinned
from bench.servers import Running
from bench.workloads import ACCOUNT_ATTRS, CHAIN, CONTEXT, MARKER, PROBE_ID, Bearer, write_lines

PATH = "/cerbos.svc.v1.CerbosService/CheckResources"
PROTOS = ["effect", "engine", "request", "response", "svc"]
USER_DELEGABLE = ["assistants", "coders", "support-agents", "data-agents"]


def generate(tmp: Path) -> SimpleNamespace:
    """The vendored protos compiled into tmp/cerbos-gen; the modules, imported."""
    from grpc_tools import protoc

    out = tmp / "cerbos-gen"
    out.mkdir(exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    files = [f"cerbos/{name}/v1/{name}.proto" for name in PROTOS]
    argv = ["protoc", f"-I{ROOT / 'bench' / 'proto'}", f"-I{include}", f"--python_out={out}", *files]
    if protoc.main(argv) != 0:
        raise RuntimeError("grpc_tools.protoc failed on bench/proto")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return SimpleNamespace(**{n: importlib.import_module(f"cerbos.{n}.v1.{n}_pb2") for n in PROTOS})


def _constants(estate: Path) -> dict[str, Any]:
    """pep's registry and the users' groups, from the estate pep serves."""
    agents = {}
    for a in yaml.safe_load((estate / "agents.yaml").read_text())["agents"]:
        attrs = a.get("attributes") or {}
        agents[a["id"]] = {
            "groups": a.get("groups", []),
            "status": a.get("status", "active"),
            # pep: expired after the `expires` day; none: never.
            "expires": f"{a['expires']}T23:59:59Z" if a.get("expires") else "9999-12-31T23:59:59Z",
            "sandboxed": bool(attrs.get("sandboxed", False)),
            **({"payment_limit": attrs["payment_limit"]} if "payment_limit" in attrs else {}),
        }
    entities = json.loads((estate / "entities.json").read_text())
    parents = {
        (e["uid"]["type"], e["uid"]["id"]): [(p["type"], p["id"]) for p in e.get("parents", [])] for e in entities
    }

    def closure(uid: tuple[str, str]) -> list[str]:
        seen: list[str] = []
        todo = list(parents.get(uid, []))
        while todo:
            t, i = todo.pop()
            if t == "Group" and i not in seen:
                seen.append(i)
                todo += parents.get((t, i), [])
        return sorted(seen)

    users = {i: closure((t, i)) for (t, i) in parents if t == "User"}
    return {"agents": agents, "users": users, "user_delegable": USER_DELEGABLE}


def _rule(name: str, actions: list[str], effect: str, roles: list[str], expr: list[str]) -> dict[str, Any]:
    cond = {"expr": expr[0]} if len(expr) == 1 else {"all": {"of": [{"expr": e} for e in expr]}}
    return {
        "name": name,
        "actions": actions,
        "effect": f"EFFECT_{effect}",
        "roles": roles,
        "condition": {"match": cond},
    }


ON_ACCOUNT = (
    "has(P.attr.on_behalf_of) && ((has(R.attr.owner) && R.attr.owner == P.attr.on_behalf_of) || "
    "(has(R.attr.signers) && R.attr.signers in V.user_groups))"
)
VARIABLES = {
    "chain": "P.attr.delegation_chain",
    "agent": "C.agents[P.id]",
    "user_groups": "has(P.attr.on_behalf_of) && P.attr.on_behalf_of in C.users ? C.users[P.attr.on_behalf_of] : []",
    "registered": (
        "size(V.chain) > 0 && V.chain[0] == P.id && V.chain.all(a, a in C.agents && "
        'C.agents[a].status == "active" && timestamp(C.agents[a].expires) > now())'
    ),
    "origin": "C.agents[V.chain[size(V.chain) - 1]]",
    "user_hop": (
        '!("contractors" in V.user_groups) && (hasIntersection(V.origin.groups, C.user_delegable) || '
        '("finance-agents" in V.origin.groups && "finance" in V.user_groups))'
    ),
    "agent_hops": (
        "V.chain.all(i, a, i == size(V.chain) - 1 || "
        '("orchestrators" in C.agents[V.chain[i + 1]].groups && "subagents" in C.agents[a].groups && '
        "C.agents[a].sandboxed))"
    ),
    "delegated": "(!has(P.attr.on_behalf_of) || V.user_hop) && V.agent_hops",
}


def policy(estate: Path) -> dict[str, Any]:
    pay = ["pay"]
    rules = [
        _rule("admission.registry-and-delegation", ["*"], "DENY", ["*"], ["!(V.registered && V.delegated)"]),
        _rule(
            "payments.pay.finance-agents-for-signers",
            pay,
            "ALLOW",
            ["agent"],
            [
                '"finance-agents" in V.agent.groups',
                ON_ACCOUNT,
                '"payments:write" in P.attr.scopes',
                "P.attr.context.currency == R.attr.currency",
                "P.attr.context.amount > 0.0",
                "has(V.agent.payment_limit) && P.attr.context.amount <= V.agent.payment_limit",
            ],
        ),
        _rule(
            "payments.read-account.for-signers",
            ["read_account"],
            "ALLOW",
            ["agent"],
            ['"finance-agents" in V.agent.groups || "assistants" in V.agent.groups', ON_ACCOUNT],
        ),
        _rule("payments.forbid.without-dpop", pay, "DENY", ["*"], ['!(P.attr.binding in ["dpop", "bearer"])']),
        _rule("payments.forbid.deep-chain", pay, "DENY", ["*"], ["size(V.chain) > 2"]),
        _rule("payments.forbid.autonomous", pay, "DENY", ["*"], ["!has(P.attr.on_behalf_of)"]),
        _rule("payments.forbid.over-ceiling", pay, "DENY", ["*"], ["P.attr.context.amount > 1000000.0"]),
        _rule("payments.forbid.frozen-account", pay, "DENY", ["*"], ["has(R.attr.frozen) && R.attr.frozen"]),
    ]
    return {
        "apiVersion": "api.cerbos.dev/v1",
        "description": "pep's payments.cedar and its admission checks for Account (bench/cerbos.py)",
        "resourcePolicy": {
            "resource": "Account",
            "version": "default",
            "constants": {"local": _constants(estate)},
            "variables": {"local": VARIABLES},
            "rules": rules,
        },
    }


def check_request(
    pbs: SimpleNamespace,
    *,
    user: str | None,
    chain: list[str],
    scopes: list[str],
    token_id: str,
    account: dict[str, Any],
    resource_id: str,
    request_id: str,
    action: str = "pay",
    context: dict[str, Any] = CONTEXT,
    binding: str = "bearer",
) -> bytes:
    """A CheckResources request for what pep sees in a token and an Authorize call (account: pep's form)."""
    attrs = {"delegation_chain": chain, "scopes": scopes, "issuer": ISSUER, "token_id": token_id}
    attrs |= {"binding": binding, "context": context, **({"on_behalf_of": user} if user else {})}
    principal = pbs.engine.Principal(id=chain[0], roles=["agent"])
    for key, value in attrs.items():
        principal.attr[key].CopyFrom(_value(value))
    resource = pbs.engine.Resource(kind="Account", id=resource_id)
    for key, value in account.items():  # an entity reference becomes its id
        resource.attr[key].CopyFrom(_value(value["__entity"]["id"] if isinstance(value, dict) else value))
    entry = pbs.request.CheckResourcesRequest.ResourceEntry(actions=[action], resource=resource)
    return pbs.request.CheckResourcesRequest(
        request_id=request_id, principal=principal, resources=[entry]
    ).SerializeToString()


def message(pbs: SimpleNamespace, bearer: Bearer, token: int, resource_id: str, request_id: str) -> bytes:
    claims = bearer.claims[token]
    return check_request(
        pbs,
        user=claims["sub"],
        chain=CHAIN,
        scopes=claims["scope"].split(),
        token_id=claims["jti"],
        account=ACCOUNT_ATTRS,
        resource_id=resource_id,
        request_id=request_id,
    )


def _value(value: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, (int, float)):
        v.number_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, list):
        v.list_value.extend(value)
    else:
        v.struct_value.update(value)
    return v


def write_requests(pbs: SimpleNamespace, bearer: Bearer, path: Path, workload: str) -> Path:
    calls = bearer.calls(workload)
    return write_lines(path, (message(pbs, bearer, t, r, f"r{i}") for i, (t, r) in enumerate(calls)))


def probe_message(pbs: SimpleNamespace, bearer: Bearer, workload: str) -> bytes:
    token, resource_id = bearer.calls(workload)[0]
    return message(pbs, bearer, token, PROBE_ID if resource_id == MARKER else resource_id, "probe")


def probe(pbs: SimpleNamespace, address: str, request: bytes) -> str | None:
    """None when Cerbos allows the call, else what it said."""
    with grpc.insecure_channel(address) as channel:
        answer = channel.unary_unary(PATH)(request, timeout=10)
    response = pbs.response.CheckResourcesResponse.FromString(answer)
    effect = next(iter(response.results[0].actions.values()))
    return None if effect == pbs.effect.EFFECT_ALLOW else f"probe: {pbs.effect.Effect.Name(effect)}"


def _tally(audit: Path) -> Callable[[], dict[str, int]]:
    def tally() -> dict[str, int]:
        """Decision-log entries and denies in them (access-log entries are not counted)."""
        logged = denied = 0
        with open(audit) as f:
            for line in f:
                if '"log.kind":"decision"' in line:
                    logged += 1
                    denied += line.count("EFFECT_DENY")
        audit.unlink()
        return {"logged": logged, "denied": denied}

    return tally


@contextmanager
def server(tmp: Path, binary: Path, estate: Path) -> Iterator[Running]:
    policies = tmp / "cerbos-policies"
    policies.mkdir(exist_ok=True)
    (policies / "account.json").write_text(json.dumps(policy(estate), indent=1))
    grpc_port, http_port = free_port(), free_port()
    audit = tmp / "cerbos-audit.log"
    audit.unlink(missing_ok=True)
    config = {
        "server": {"grpcListenAddr": f"127.0.0.1:{grpc_port}", "httpListenAddr": f"127.0.0.1:{http_port}"},
        "storage": {"driver": "disk", "disk": {"directory": str(policies), "watchForChanges": True}},
        "audit": {
            "enabled": True,
            "accessLogsEnabled": True,
            "decisionLogsEnabled": True,
            "backend": "file",
            "file": {"path": str(audit)},
        },
        "telemetry": {"disabled": True},
    }
    (tmp / "cerbos.yaml").write_text(json.dumps(config))
    argv = [str(binary), "server", f"--config={tmp / 'cerbos.yaml'}", "--log-level=warn"]
    log = open(tmp / "cerbos.out", "ab")
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/_cerbos/health", timeout=1)
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cerbos did not start; see {tmp / 'cerbos.out'}") from None
                time.sleep(0.1)
        yield Running(f"127.0.0.1:{grpc_port}", proc.pid, _tally(audit))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
