"""Load generator: closed loop (throughput) or fixed-rate open loop (latency), one JSON line out.

Latency in the open loop is measured from each call's scheduled send time, so time spent
queueing behind a slow call shows in the percentiles instead of hiding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable

import grpc

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, make: Callable[[int], object], per_call: int) -> dict[str, float]:
    channel = grpc.aio.insecure_channel(args.target)
    stub = pb_grpc.AuthorizerStub(channel)
    call = stub.AuthorizeBatch if args.kind == "batch" else stub.Authorize
    counter = iter(range(10**9))
    # Warm-up: connections, caches, JIT-free but lazy paths.
    warm_until = time.perf_counter() + args.warmup
    while time.perf_counter() < warm_until:
        await call(make(next(counter)), timeout=10)
    latencies: list[float] = []
    errors = 0
    denied = 0

    def count(response: object) -> None:
        nonlocal denied
        answers = response.responses if args.kind == "batch" else [response]  # type: ignore[attr-defined]
        denied += sum(1 for r in answers if r.decision != pb.DECISION_ALLOW)

    start = time.perf_counter()
    stop = start + args.seconds
    if args.mode == "closed":

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    count(await call(make(next(counter)), timeout=10))
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    else:
        interval = 1.0 / args.rate
        pending = []

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                count(await call(make(next(counter)), timeout=10))
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        n = 0
        while True:
            scheduled = start + n * interval
            if scheduled >= stop:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(one(scheduled)))
            n += 1
        await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    await channel.close()
    return {
        "calls": len(latencies),
        "decisions_per_s": len(latencies) * per_call / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "errors": errors,
        "denied": denied,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--kind", choices=("authorize", "batch"), default="authorize")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--requests", required=True, help="file of serialized requests, one per call (cycled)")
    args = parser.parse_args()
    kind = pb.AuthorizeBatchRequest if args.kind == "batch" else pb.AuthorizeRequest
    with open(args.requests) as f:
        blobs = [bytes.fromhex(line.strip()) for line in f if line.strip()]
    requests = [kind.FromString(b) for b in blobs]
    per_call = len(requests[0].checks) if args.kind == "batch" else 1

    def make(i: int) -> object:
        return requests[i % len(requests)]

    result = asyncio.run(run(args, make, per_call))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
