"""What logging and metrics cost per decision, measured against no side output in the same run.

    .venv/bin/python bench/bench_observability.py [--decisions 3000] [--rounds 7]

One authorizer (the gRPC tests' small estate, one cached token) answers the same check
with four recorders, in interleaved rounds so drift hits all alike:
  none         a recorder that does nothing
  metrics      counters and the histogram only
  metrics+log  metrics and the decision log to a file (the default set-up)
  +required    the same with decision_log.required
Timed: from the first decision until the log's writer has written the last line
(`close` returns), so the writer thread's work is in the numbers. Wall time is per
decision on one calling thread; CPU time is the whole process (writer thread included).
The "+ vs none" columns are medians of per-round differences (each round runs every
variant back to back), which cancels most of the noise of a shared machine.

A second table times the side output alone: `recorder.record` on a ready `Decision`,
then the writer draining to the file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pep.audit.log import DecisionLog
from pep.config import parse_config
from pep.controls.admit import Controls
from pep.decision import Decision
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.pipeline import Pipeline, Request
from pep.pipeline.record import Recorder
from pep.policy.request import Check, ResourceRef
from pep.policy.store import PolicyStore
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness.estate import write_estate

ISSUER, AUDIENCE = "https://idp.bench", "pep-bench"


class SideOutputs:
    """The record stage's side outputs alone: the log's acknowledgement, then the count."""

    def __init__(self, metrics: Metrics | None, dlog: DecisionLog | None) -> None:
        self.metrics, self.dlog = metrics, dlog

    def record(self, decision: Decision) -> bool:
        taken = self.dlog.submit(decision).wait() if self.dlog is not None else True
        if self.metrics is not None:
            self.metrics.count(decision)
        return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=3000, help="decisions per variant per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key_path, jwks_path = devtoken.ensure_dev_keys(str(root / "keys"))
        raw = {
            "policies": str(write_estate(root / "policies")),
            "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks_path, "algorithms": ["ES256"]}],
            "decision_log": {"sink": str(root / "decisions.log")},
        }
        config = parse_config(raw)
        store = PolicyStore(config.policies, Metrics(process=False))
        assert store.load()
        verifier = TokenVerifier(config.issuers, config.tokens)
        token = devtoken.mint_token(key_path, issuer=ISSUER, audience=AUDIENCE, sub="alice", act_chain=("worker",))
        creds = Credentials(token=token)
        ask = Request([Check(action="read", resource=ResourceRef("Doc", "plan"))], creds)

        def run(name: str, make: Callable[[], tuple[Recorder, DecisionLog | None]]) -> tuple[float, float]:
            recorder, dlog = make()
            authorizer = Pipeline(
                store, verifier, Controls(), recorder, delegation=config.delegation, identity=config.identity
            )
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.decisions):
                decision = authorizer.authorize(ask)[0]
            if dlog is not None:
                dlog.close()  # the writer's work counts
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert decision.allowed, (name, decision.reason)
            return wall / args.decisions * 1e6, cpu / args.decisions * 1e6

        def logged(required: bool) -> Callable[[], tuple[Recorder, DecisionLog | None]]:
            def make() -> tuple[Recorder, DecisionLog | None]:
                metrics = Metrics(process=False)
                cfg = parse_config({**raw, "decision_log": {**raw["decision_log"], "required": required}})
                dlog = DecisionLog(cfg.decision_log, metrics)
                return Recorder(dlog, metrics, log_required=required), dlog

            return make

        variants: dict[str, Callable[[], tuple[Recorder, DecisionLog | None]]] = {
            "none": lambda: (Recorder(None, None), None),
            "metrics": lambda: (Recorder(None, Metrics(process=False)), None),
            "metrics+log": logged(False),
            "+required": logged(True),
        }
        for name, make in variants.items():  # warm-up: caches, imports, first file open
            run(name, make)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, make in variants.items():
                results[name].append(run(name, make))
        lines = len((root / "decisions.log").read_text().splitlines())
        verifier.close()

    print(f"authorize(): {args.rounds} rounds x {args.decisions} decisions per variant; log lines: {lines}")
    print(f"{'recorder':<13} {'wall µs/dec':>11} {'+ vs none':>10} {'cpu µs/dec':>11} {'+ vs none':>10}")
    none = results["none"]
    for name, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        d_wall = statistics.median(w - b for (w, _), (b, _) in zip(rows, none, strict=True))
        d_cpu = statistics.median(c - b for (_, c), (_, b) in zip(rows, none, strict=True))
        print(f"{name:<13} {wall:>11.1f} {d_wall:>+10.1f} {cpu:>11.1f} {d_cpu:>+10.1f}")
    side_output(args.decisions * 10)


def side_output(n: int) -> None:
    """`record` alone, on the calling thread, and the writer's work per entry."""
    from pep.decision import TokenSummary
    from pep.reasons import Reason

    decision = Decision(
        "0b9d2f5e-8f0c-4b7e-9d63-3d1c6f1f2a10",
        True,
        Reason.ALLOWED,
        True,
        policies=("read-docs",),
        agent="worker",
        on_behalf_of="alice",
        delegation_chain=("worker",),
        action="read",
        resource_type="Doc",
        resource_id="plan",
        token=TokenSummary("https://idp.bench", "jti-1", "worker", ("docs:read",)),
        binding="bearer",
        policy_version="e2214eaa51609a2a",
        ts=time.time(),
        duration_us=350,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    print(f"\nside output alone: {n} x recorder.record(decision)")
    print(f"{'recorder':<13} {'caller µs':>10} {'drained µs':>11} {'cpu µs':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("none", "metrics", "metrics+log"):
            metrics = Metrics(process=False)
            dlog = None
            if name == "metrics+log":
                cfg = parse_config({"decision_log": {"sink": f"{tmp}/d.log", "queue_size": n}})
                dlog = DecisionLog(cfg.decision_log, metrics)
            recorder = SideOutputs(None if name == "none" else metrics, dlog)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                recorder.record(decision)
            caller = time.perf_counter() - wall
            if dlog is not None:
                dlog.close()
            drained, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{name:<13} {caller / n * 1e6:>10.2f} {drained / n * 1e6:>11.2f} {cpu / n * 1e6:>8.2f}")


if __name__ == "__main__":
    main()
