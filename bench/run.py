"""`make bench`: pep side by side with a no-op gRPC server (the floor) and Cerbos, in one run.

Servers run pinned to core 0 and the load generator (bench/node/loadgen.js, grpc-js, sending
pre-serialized messages) to core 1 (`taskset`), one server at a time; each figure is the
median of several repetitions after a warm-up (for the rotating workload, one whole pass over
its 10,000 distinct requests, the same for every server, so a server that remembers answers is
measured in its steady state; the no-repeat rows are the cold path). The workloads are in bench/workloads.py: bearer
tokens rotating over 1,000 stored Accounts, a never-seen Account per call (no-repeat), and the
DPoP-bound call with a fresh proof each time; Cerbos (bench/cerbos.py) answers the bearer ones
with an equivalent policy. Printed: throughput (closed loop) and latency (closed loop, and a
fixed-rate open loop) with ratios to the floor, the server's CPU and the load generator's,
then the performance target table, then scale curves over generated estates. The cost of shared
state (a Redis on the same machine) is the same Authorize with a limits.yaml that applies,
buckets and DPoP replay cache per process against shared. The cost of `decision_log.required`
(group commit) is the rotating case with it on, `sync: write` and `sync: fsync`. The MCP
proxy's cost is the SDK client's tools/call through pep against calling the tool server
directly (bench/mcp.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench import cerbos, nodeload, report
from bench.common import CLIENT_CPU, ROOT, SERVER_CPU, pinned, progress
from bench.servers import Running, core_busy, grpc_server, process_cpu_s, redis_server
from bench.workloads import MARKER, Bearer, Requests, bench_estate, limited_estate
from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.dev import tokens as devtoken

PEP = "/pep.v1.Authorizer/"
PER_PROCESS, SHARED = "pep DPoP, limits per process", "pep DPoP, shared state (Redis)"
REQUIRED, FSYNC = "pep rotating, log required (write)", "pep rotating, log required (fsync)"


@dataclass(frozen=True)
class Case:
    name: str
    server: str  # noop, pep, pep-limits, pep-shared, cerbos
    load: str  # rotating, no-repeat (bearer), dpop, batch (DPoP-bound)
    mode: str = "closed"
    client: str = ""  # the load generator's client; "": --loadgen-client


def cases(redis_url: str | None, with_cerbos: bool, client: str) -> list[Case]:
    other = "grpc-js" if client == "http2" else "http2"
    every = [
        Case("no-op floor", "noop", "rotating"),
        Case(f"no-op floor, {other} client", "noop", "rotating", client=other),
        Case("pep rotating (bearer)", "pep", "rotating"),
        Case(REQUIRED, "pep-required", "rotating"),
        Case(FSYNC, "pep-fsync", "rotating"),
        Case("Cerbos rotating", "cerbos", "rotating"),
        Case("pep no-repeat (bearer)", "pep", "no-repeat"),
        Case("Cerbos no-repeat", "cerbos", "no-repeat"),
        Case("pep DPoP-bound, fresh proof/call", "pep", "dpop"),
        Case("pep AuthorizeBatch x50 (DPoP)", "pep", "batch"),
        Case(PER_PROCESS, "pep-limits", "dpop"),
        Case(SHARED, "pep-shared", "dpop"),
        Case("no-op floor @1000/s", "noop", "rotating", "open"),
        Case("pep rotating @1000/s", "pep", "rotating", "open"),
        Case("Cerbos rotating @1000/s", "cerbos", "rotating", "open"),
    ]
    return [c for c in every if (redis_url or c.server != "pep-shared") and (with_cerbos or c.server != "cerbos")]


class Bench:
    """The run's keys, estates, request files and servers."""

    def __init__(self, args: argparse.Namespace, tmp: Path, cerbos_binary: Path | None) -> None:
        self.args, self.tmp, self.cerbos_binary = args, tmp, cerbos_binary
        self.key, self.jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
        self.dpop, self.bearer = Requests(self.key), Bearer(self.key)
        self.estate = bench_estate(tmp)
        self.pbs = cerbos.generate(tmp) if cerbos_binary else None
        self.written: dict[str, Path] = {}
        self.redis_url: str | None = None
        self.redis_pid = 0

    def requests(self, case: Case) -> tuple[Path, str, int]:
        """The request file, the RPC path and decisions per call."""
        if case.load in ("dpop", "batch"):  # proofs are good once: new ones every run
            seconds = self.args.seconds + 0.5
            count = int((2000 if case.load == "batch" else 12000) * seconds)  # calls/s no pep gets near
            file = self.dpop.write(self.tmp / f"{case.load}.req", case.load, count)
            return (
                file,
                PEP + ("AuthorizeBatch" if case.load == "batch" else "Authorize"),
                50 if case.load == "batch" else 1,
            )
        family = "cerbos" if case.server == "cerbos" else "pep"
        name = f"{family}-{case.load}"
        if name not in self.written:
            path = self.tmp / f"{name}.req"
            if family == "cerbos":
                self.written[name] = cerbos.write_requests(self.pbs, self.bearer, path, case.load)
            else:
                self.written[name] = self.bearer.write_pep(path, case.load)
        return self.written[name], cerbos.PATH if family == "cerbos" else PEP + "Authorize", 1

    def server(self, case: Case) -> AbstractContextManager[Running]:
        if case.server == "cerbos":
            assert self.cerbos_binary is not None
            return cerbos.server(self.tmp, self.cerbos_binary, self.estate)
        policies = limited_estate(self.tmp) if case.server in ("pep-limits", "pep-shared") else self.estate
        return grpc_server(case.server, self.tmp, self.jwks, policies, self.redis_url)

    def probe(self, case: Case, address: str) -> str | None:
        """One call like the run's (not from its file), decoded: None when allowed."""
        if case.server == "noop":
            return None
        if case.server == "cerbos":
            return cerbos.probe(self.pbs, address, cerbos.probe_message(self.pbs, self.bearer, case.load))
        if case.load in ("dpop", "batch"):
            request, method = (
                self.dpop.message(case.load, "probe"),
                "AuthorizeBatch" if case.load == "batch" else "Authorize",
            )
        else:
            request, method = self.bearer.pep_probe(case.load), "Authorize"
        with grpc.insecure_channel(address) as channel:
            answer = channel.unary_unary(PEP + method)(request, timeout=10)
        kind = pb.AuthorizeBatchResponse if case.load == "batch" else pb.AuthorizeResponse
        response = kind.FromString(answer)
        answers = response.responses if case.load == "batch" else [response]
        bad = [r for r in answers if r.decision != pb.DECISION_ALLOW]
        return f"probe: deny {bad[0].reason} {list(bad[0].errors)[:1]}" if bad else None

    def run(self, case: Case) -> dict[str, Any]:
        file, path, per_call = self.requests(case)
        unique = MARKER if case.load == "no-repeat" else ""
        with self.server(case) as srv:
            probe = self.probe(case, srv.address)
            redis = self.redis_pid if case.server == "pep-shared" else 0
            cpu0, redis0, load0, busy0 = srv.cpu_s(), process_cpu_s(redis), children_cpu_s(), core_busy()
            wall0 = time.perf_counter()
            marks: dict[str, tuple[float, float]] = {}  # the server's CPU and the time, as measuring starts and ends

            def mark(name: str) -> None:
                marks[name] = (srv.cpu_s(), time.perf_counter())

            a = self.args
            result = nodeload.load(
                srv.address,
                path,
                file,
                mode=case.mode,
                seconds=a.seconds,
                concurrency=a.concurrency,
                per_call=per_call,
                unique=unique,
                client=case.client or a.loadgen_client,
                warmup_passes=1 if case.load == "rotating" else 0,
                mark=mark,
            )
            cpu, wall = srv.cpu_s() - cpu0, time.perf_counter() - wall0
            memo = srv.memo()
            busy, load, redis_cpu = core_busy(), children_cpu_s() - load0, process_cpu_s(redis) - redis0
        result.update(srv.tally())
        if memo:  # the share of decisions answered from pep's memo, warm-up included
            result["memo_hit_share"] = memo.get("memo_hit", 0) / max(1, sum(memo.values()))
        result["wrapped"] = result["wrapped"] and case.load in ("dpop", "batch")  # only a proof must not repeat
        # The server's CPU in the measured phase only (a warm-up pass can cost more per call).
        (c0, t0), (c1, t1) = marks.get("measuring", (cpu0, wall0)), marks.get("measured", (cpu0 + cpu, wall0 + wall))
        result["server_cpu"] = (c1 - c0) / (t1 - t0)
        # What else ran on the two cores meanwhile (a busy machine skews every figure).
        if SERVER_CPU in busy and CLIENT_CPU in busy:
            result["other_server_core"] = (busy[SERVER_CPU] - busy0[SERVER_CPU] - cpu - redis_cpu) / wall
            result["other_client_core"] = (busy[CLIENT_CPU] - busy0[CLIENT_CPU] - load) / wall
        result["per_cpu_s"] = result["calls"] * per_call / (c1 - c0) if c1 > c0 else float("nan")
        result["expected_log"] = (result["completed_total"] + 1) * per_call  # the probe too
        result["probe"] = probe
        return result


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["notes"] = sorted({n for r in runs for n in report.notes(r)})
    return out


def engine(
    policies: Path, specs: list[dict[str, Any]], tmp: Path, seconds: float, edit: str | None = None
) -> dict[str, Any]:
    spec_file = tmp / f"specs-{abs(hash(str(policies)))}.json"
    spec_file.write_text(json.dumps(specs))
    argv = [sys.executable, "-m", "bench.engine", "--policies", str(policies), "--requests", str(spec_file)]
    argv += ["--seconds", str(seconds), *(["--edit", edit] if edit else [])]
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
    parser.add_argument("--skip-cerbos", action="store_true", help="leave out Cerbos (no npm download of its binary)")
    parser.add_argument(
        "--loadgen-client",
        choices=("http2", "grpc-js"),
        default="http2",
        help="bench/node/loadgen.js --client: Node's http2 speaking gRPC (default), or @grpc/grpc-js",
    )
    args = parser.parse_args()
    if args.quick:
        args.reps, args.seconds = 1, 1.5
    tmp = Path(tempfile.mkdtemp(prefix="pep-bench-"))
    if args.only_scale:
        scale(args, tmp)
        return
    binary = nodeload.ensure(cerbos=not args.skip_cerbos)
    bench = Bench(args, tmp, binary)
    pin_note = "pinned: servers core 0, load core 1" if "taskset" in pinned("0", [""]) else "NOT pinned"
    print(
        f"pep benchmark: {args.reps} repetitions x {args.seconds:g} s, concurrency {args.concurrency}, {pin_note}; "
        f"load: Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"{args.loadgen_client} client"
    )
    if binary:
        from bench import equivalence

        progress("the Cerbos policy against pep (bench/equivalence.py)")
        print(equivalence.verdict(equivalence.compare(tmp / "equivalence", binary)))
    with redis_server(tmp) as redis:
        bench.redis_url, bench.redis_pid = redis or (None, 0)
        run_cases(args, bench)
    if not args.skip_mcp:
        from bench import mcp

        mcp.report(mcp.run(calls=100 if args.quick else 300, reps=args.reps))
    if not args.skip_scale:
        scale(args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def run_cases(args: argparse.Namespace, bench: Bench) -> None:
    todo = cases(bench.redis_url, bench.cerbos_binary is not None, args.loadgen_client)
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in todo}
    for rep in range(args.reps):
        for case in todo:
            progress(f"rep {rep + 1}/{args.reps}: {case.name}")
            results[case.name].append(bench.run(case))
    progress("engine in-process")
    eng = median_of([engine(ROOT / "policies", EXAMPLE_SPECS, bench.tmp, args.seconds) for _ in range(args.reps)])
    m = {c.name: median_of(results[c.name]) for c in todo}
    report.table([(c.name, c.mode, m[c.name]) for c in todo], m["no-op floor"], m["no-op floor @1000/s"], eng)
    report.summary(m, PER_PROCESS, SHARED, bench.redis_url)
    report.log_modes(m, [REQUIRED, FSYNC])
    report.targets(m, args.skip_cerbos, args.loadgen_client)


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
