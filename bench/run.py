"""`make bench`: pep measured side by side with a no-op gRPC server, in one run.

Servers run pinned to core 0 and the load generator to core 1 (`taskset`), one server
at a time; each figure is the median of several repetitions after a warm-up. Printed:
throughput (closed loop) and latency (closed loop, and a fixed-rate open loop), each
with its ratio to the no-op floor, then scale curves over generated estates. The cost of
shared state (a Redis on the same machine, started on a free port) is the same Authorize with
a limits.yaml that applies, buckets and DPoP replay cache per process against shared. The MCP
proxy's cost is the SDK client's tools/call through pep against calling the tool server directly
(bench/mcp.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.dev import tokens as devtoken

ROOT = Path(__file__).resolve().parents[1]
ISSUER, AUDIENCE = "https://bench.invalid", "pep-bench"
HTU = "https://pep.bench/pep.v1.Authorizer/"
SERVER_CPU, CLIENT_CPU = "0", "1"
# Buckets that apply to every benchmark call (agent, and agent+action) but never run dry.
LIMITS = {"agents": {"billing-bot": {"rate": 1e6, "burst": 1e6}}, "actions": {"pay": {"rate": 1e6, "burst": 1e6}}}


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


class Requests:
    """Realistic calls: alice -> assistant -> billing-bot pays, DPoP-bound, a fresh proof per call."""

    def __init__(self, tmp: Path) -> None:
        self.key, self.jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
        self.dpop_key, self.dpop_jwk = devtoken.new_dpop_key()
        self.token = devtoken.mint_token(
            self.key,
            issuer=ISSUER,
            audience=AUDIENCE,
            sub="alice",
            act_chain=["billing-bot", "assistant"],
            scopes=["payments:write"],
            ttl_seconds=3600,
            dpop_jkt=devtoken.jwk_thumbprint(self.dpop_jwk),
        )
        self.resource = pb.Resource(type="Account", id="ops-usd")
        self.context = json_format.ParseDict({"amount": 120000, "currency": "USD"}, struct_pb2.Struct())

    def _proof(self, method: str) -> str:
        return devtoken.mint_dpop_proof(
            self.dpop_key, self.dpop_jwk, htm="POST", htu=HTU + method, access_token=self.token
        )

    def write(self, path: Path, kind: str, count: int) -> Path:
        with open(path, "w") as f:
            for i in range(count):
                if kind == "batch":
                    checks = [pb.Check(action="pay", resource=self.resource, context=self.context)] * 50
                    req: Any = pb.AuthorizeBatchRequest(
                        token="DPoP " + self.token,
                        dpop_proof=self._proof("AuthorizeBatch"),
                        http_method="POST",
                        http_uri=HTU + "AuthorizeBatch",
                        checks=checks,
                        request_id=f"b{i}",
                    )
                else:
                    req = pb.AuthorizeRequest(
                        token="DPoP " + self.token,
                        dpop_proof=self._proof("Authorize"),
                        http_method="POST",
                        http_uri=HTU + "Authorize",
                        action="pay",
                        resource=self.resource,
                        context=self.context,
                        request_id=f"r{i}",
                    )
                f.write(req.SerializeToString().hex() + "\n")
        return path


def limited_policies(tmp: Path) -> Path:
    """The example policies plus LIMITS."""
    policies = tmp / "policies-limits"
    if not policies.exists():
        shutil.copytree(ROOT / "policies", policies)
        (policies / "limits.yaml").write_text(json.dumps(LIMITS))
    return policies


@contextmanager
def redis_server(tmp: Path) -> Iterator[str | None]:
    """A throwaway redis-server on the server core (no persistence); None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis  # a pep dependency; imported here so the rest of the bench does not need it

    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), stdout=subprocess.DEVNULL)
    try:
        client, deadline = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2), time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def server(kind: str, tmp: Path, requests: Requests, redis_url: str | None = None) -> Iterator[str]:
    """kind: noop, pep (example policies), pep-limits (plus LIMITS), pep-shared (plus Redis at redis_url)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    if kind == "noop":
        argv = [sys.executable, "-m", "bench.noop_server", "--listen", address]
    else:
        config = tmp / "pep.yaml"
        config.write_text(
            json.dumps(
                {
                    "listen": address,
                    "metrics_listen": f"127.0.0.1:{free_port()}",
                    "admin_listen": "",
                    "policies": str(ROOT / "policies" if kind == "pep" else limited_policies(tmp)),
                    "issuers": [
                        {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": requests.jwks, "algorithms": ["ES256"]}
                    ],
                    "decision_log": {"sink": str(tmp / "decisions.log")},
                    **({"state": {"redis_url": redis_url, "timeout_ms": 200}} if kind == "pep-shared" else {}),
                }
            )
        )
        argv = [sys.executable, "-m", "pep.cli", "serve", "--config", str(config), "--log-level", "WARNING"]
    proc = subprocess.Popen(pinned(SERVER_CPU, argv), cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            if kind != "noop":
                health = health_pb2_grpc.HealthStub(channel)
                deadline = time.monotonic() + 30
                while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
                    if time.monotonic() > deadline:
                        raise RuntimeError("pep did not become ready")
                    time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load(address: str, requests_file: Path, kind: str, mode: str, seconds: float, concurrency: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        address,
        "--kind",
        kind,
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--rate",
        "1000",
        "--requests",
        str(requests_file),
    ]
    out = subprocess.run(pinned(CLIENT_CPU, argv), cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def engine(
    policies: Path, specs: list[dict[str, Any]], tmp: Path, seconds: float, edit: str | None = None
) -> dict[str, Any]:
    spec_file = tmp / f"specs-{abs(hash(str(policies)))}.json"
    spec_file.write_text(json.dumps(specs))
    argv = [
        sys.executable,
        "-m",
        "bench.engine",
        "--policies",
        str(policies),
        "--requests",
        str(spec_file),
        "--seconds",
        str(seconds),
        *(["--edit", edit] if edit else []),
    ]
    out = subprocess.run(pinned(SERVER_CPU, argv), cwd=ROOT, capture_output=True, text=True, check=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


EXAMPLE_SPECS = [
    {
        "sub": "alice",
        "chain": ["billing-bot", "assistant"],
        "scopes": ["payments:write"],
        "action": "read_account",
        "resource": ["Account", "ops-usd"],
    }
]


def scale_specs(agents: int) -> list[dict[str, Any]]:
    """50 callers spread over the registry: user-u has agent-k (via agent-0) read u's own doc."""
    step = max(1, agents // 50)
    specs = []
    for k in range(1, agents, step):
        u = k % 100 if k % 10 else k % 100 + 1  # every tenth doc is secret
        specs.append(
            {"sub": f"user-{u}", "chain": [f"agent-{k}", "agent-0"], "action": "read", "resource": ["Doc", f"doc-{u}"]}
        )
    return specs[:50]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--only-scale", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1.5 s each, small scale sizes")
    parser.add_argument("--skip-mcp", action="store_true", help="leave out the MCP proxy's added latency")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.seconds = 1, 1.5
    tmp = Path(tempfile.mkdtemp(prefix="pep-bench-"))
    if args.only_scale:
        scale(args, tmp)
        return
    requests = Requests(tmp)
    pin_note = "pinned: servers core 0, load core 1" if "taskset" in pinned("0", [""]) else "NOT pinned"
    print(f"pep benchmark: {args.reps} repetitions x {args.seconds:g} s, concurrency {args.concurrency}, {pin_note}")

    with redis_server(tmp) as redis_url:
        run_cases(args, tmp, requests, redis_url)
    if not args.skip_mcp:
        from bench import mcp  # it imports this module's helpers

        mcp.report(mcp.run(calls=100 if args.quick else 300, reps=args.reps))
    if not args.skip_scale:
        scale(args, tmp)


PER_PROCESS, SHARED = "pep Authorize, limits per process", "pep Authorize, shared state (Redis)"


def run_cases(args: argparse.Namespace, tmp: Path, requests: Requests, redis_url: str | None) -> None:
    cases = [
        ("no-op floor", "noop", "authorize", "closed"),
        ("pep Authorize", "pep", "authorize", "closed"),
        ("pep AuthorizeBatch x50", "pep", "batch", "closed"),
        (PER_PROCESS, "pep-limits", "authorize", "closed"),
        *([(SHARED, "pep-shared", "authorize", "closed")] if redis_url else []),
        ("no-op floor @1000/s", "noop", "authorize", "open"),
        ("pep Authorize @1000/s", "pep", "authorize", "open"),
    ]
    results: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in cases}
    budget = {"closed": int(12000 * (args.seconds + 0.5)), "open": int(1000 * (args.seconds + 0.5)) + 1500}
    for rep in range(args.reps):
        for name, srv, kind, mode in cases:
            progress(f"rep {rep + 1}/{args.reps}: {name}")
            count = budget[mode] // (40 if kind == "batch" else 1)
            file = requests.write(tmp / f"{kind}-{mode}.req", kind, count)
            with server(srv, tmp, requests, redis_url) as address:
                results[name].append(load(address, file, kind, mode, args.seconds, args.concurrency))
    progress("engine in-process")
    eng = median_of([engine(ROOT / "policies", EXAMPLE_SPECS, tmp, args.seconds) for _ in range(args.reps)])

    floor = median_of(results["no-op floor"])
    floor_open = median_of(results["no-op floor @1000/s"])
    print()
    print(f"{'case':34s} {'decisions/s':>12s} {'p50 ms':>8s} {'p99 ms':>8s} {'vs floor':>9s}  notes")
    for name, _, _, mode in cases:
        m = median_of(results[name])
        base = floor if mode == "closed" else floor_open
        ratio = m["decisions_per_s"] / base["decisions_per_s"] if mode == "closed" else m["p50_ms"] / base["p50_ms"]
        ratio_text = f"{ratio:8.2f}x" if mode == "closed" else f"{ratio:7.2f}x p50"
        notes = []
        if m.get("errors"):
            notes.append(f"{m['errors']:.0f} errors")
        if srv_denied := m.get("denied"):
            notes.append(f"{srv_denied:.0f} denied")
        print(
            f"{name:34s} {m['decisions_per_s']:12.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} {ratio_text}  "
            + ", ".join(notes)
        )
    print(
        f"{'engine in-process (no gRPC)':34s} {eng['decisions_per_s']:12.0f} {eng['p50_us'] / 1000:8.3f} "
        f"{eng['p99_us'] / 1000:8.3f} {eng['decisions_per_s'] / floor['decisions_per_s']:8.2f}x"
    )
    single = median_of(results["pep Authorize"])["decisions_per_s"]
    batch = median_of(results["pep AuthorizeBatch x50"])["decisions_per_s"]
    print(
        f"\nbatch vs single decisions/s: {batch / single:.2f}x; "
        f"pep Authorize vs floor: {single / floor['decisions_per_s']:.0%}"
    )
    local = median_of(results[PER_PROCESS])
    if not redis_url:
        print("shared state (Redis): skipped, redis-server is not installed (Debian: apt-get install redis-server)")
        return
    shared = median_of(results[SHARED])
    # Per decision on the pinned server core: the extra time the shared buckets and replay cache cost.
    extra_ms = 1000 / shared["decisions_per_s"] - 1000 / local["decisions_per_s"]
    print(
        f"shared state vs per process (2 buckets + DPoP replay per decision): "
        f"{shared['decisions_per_s'] / local['decisions_per_s']:.2f}x decisions/s, "
        f"{extra_ms:+.3f} ms per decision, p50 {shared['p50_ms'] - local['p50_ms']:+.3f} ms"
    )


def scale(args: argparse.Namespace, tmp: Path) -> None:
    from bench.estate import write_estate

    sizes = [(10, 100), (1000, 100), (10000, 100), (10, 10000), (10, 100000), (10000, 100000)]
    if args.quick:
        sizes = [(10, 100), (1000, 100), (10, 10000)]
    print(
        f"\n{'scale: policies x agents':28s} {'load s':>7s} {'edit s':>7s} {'p50 us':>8s} {'p99 us':>8s} "
        f"{'dec/s':>8s} {'peak RSS MB':>12s}"
    )
    for policies, agents in sizes:
        progress(f"scale {policies} policies x {agents} agents")
        directory = write_estate(tmp / f"estate-{policies}-{agents}", policies=policies, agents=agents)
        r = engine(directory, scale_specs(agents), tmp, max(1.0, args.seconds / 2), edit="shared.cedar")
        print(
            f"{policies:>10,d} x {agents:<13,d}   {r['load_s']:7.2f} {r['reload_edit_s']:7.2f} {r['p50_us']:8.0f} "
            f"{r['p99_us']:8.0f} {r['decisions_per_s']:8.0f} {r['peak_rss_mb']:12.0f}"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
