"""The decision engine in-process (no gRPC), and reload time, for one policy directory.

Prints one JSON line: load seconds, decisions per second, p50/p99 per decision, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

from pep.config import parse_config
from pep.controls.admit import Controls
from pep.dev import tokens as devtoken
from pep.pipeline import Pipeline, Request
from pep.pipeline.record import Recorder
from pep.policy.loader import load_snapshot
from pep.policy.request import Check, ResourceRef
from pep.policy.snapshot import Snapshot
from pep.tokens.verifier import Credentials, TokenVerifier

ISSUER, AUDIENCE = "https://bench.invalid", "pep-bench"


class _Fixed:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def current(self) -> Snapshot:
        return self.snapshot


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", required=True)
    parser.add_argument("--requests", required=True, help="JSON list of {sub, chain, action, resource, context}")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--edit", help="a policy file to edit, to time a reload with a warm cache")
    args = parser.parse_args()
    cache: dict[Any, Any] = {}
    started = time.perf_counter()
    snapshot = load_snapshot(args.policies, cache=cache)
    load_s = time.perf_counter() - started
    # A reload after a policy author's edit: one file changes, the store's cache is warm.
    edited = None
    if args.edit:
        path = os.path.join(args.policies, args.edit)
        with open(path) as f:
            original = f.read()
        with open(path, "w") as f:
            f.write(original + "\n// edited\n")
        started = time.perf_counter()
        load_snapshot(args.policies, cache=cache)
        edited = time.perf_counter() - started
        with open(path, "w") as f:
            f.write(original)
    tmp = tempfile.mkdtemp(prefix="pep-bench-")
    key, jwks = devtoken.ensure_dev_keys(tmp)
    config = parse_config(
        {"issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"]}]}
    )
    verifier = TokenVerifier(config.issuers, config.tokens)
    authorizer = Pipeline(
        _Fixed(snapshot),
        verifier,
        Controls(),
        Recorder(None, None),
        delegation=config.delegation,
        identity=config.identity,
    )
    with open(args.requests) as f:
        specs: list[dict[str, Any]] = json.load(f)
    calls = []
    for spec in specs:
        token = devtoken.mint_token(
            key,
            issuer=ISSUER,
            audience=AUDIENCE,
            sub=spec["sub"],
            act_chain=spec["chain"],
            scopes=spec.get("scopes", []),
            ttl_seconds=3600,
        )
        rtype, rid = spec["resource"]
        check = Check(spec["action"], ResourceRef(rtype, rid), spec.get("context", {}))
        calls.append(Request([check], Credentials(token)))
    first = authorizer.authorize(calls[0])[0]
    if not first.allowed:
        print(f"warning: the benchmark request is denied: {first.reason} {first.errors}", file=sys.stderr)
    for c in calls[: min(len(calls), 200)]:  # warm-up
        authorizer.authorize(c)
    latencies = []
    i = 0
    stop = time.perf_counter() + args.seconds
    began = time.perf_counter()
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        authorizer.authorize(calls[i % len(calls)])
        latencies.append(time.perf_counter() - t0)
        i += 1
    elapsed = time.perf_counter() - began
    latencies.sort()
    print(
        json.dumps(
            {
                "load_s": load_s,
                "reload_edit_s": edited,
                "policies": snapshot.policy_count,
                "agents": len(snapshot.registry),
                "decisions_per_s": len(latencies) / elapsed,
                "p50_us": latencies[len(latencies) // 2] * 1e6,
                "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
                "mean_us": statistics.fmean(latencies) * 1e6,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
