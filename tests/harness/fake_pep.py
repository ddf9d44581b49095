"""A scripted stand-in for pep's Authorizer service: the client tests' failure cases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc

Step = Callable[[grpc.ServicerContext], pb.AuthorizeResponse]


def allow(_ctx: grpc.ServicerContext) -> pb.AuthorizeResponse:
    return pb.AuthorizeResponse(decision=pb.DECISION_ALLOW, reason="allowed", decision_id="d-allow")


def deny(_ctx: grpc.ServicerContext) -> pb.AuthorizeResponse:
    return pb.AuthorizeResponse(decision=pb.DECISION_DENY, reason="policy_forbid", decision_id="d-deny")


def abort(code: grpc.StatusCode, detail: str = "scripted") -> Step:
    def step(ctx: grpc.ServicerContext) -> pb.AuthorizeResponse:
        ctx.abort(code, detail)
        raise AssertionError("unreachable")

    return step


def slow(seconds: float) -> Step:
    def step(ctx: grpc.ServicerContext) -> pb.AuthorizeResponse:
        time.sleep(seconds)
        return allow(ctx)

    return step


@dataclass
class Scripted(pb_grpc.AuthorizerServicer):
    """Answers call n with steps[n] (the last step repeats); counts the calls it saw."""

    steps: list[Step] = field(default_factory=list)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Authorize(self, request: pb.AuthorizeRequest, context: grpc.ServicerContext) -> pb.AuthorizeResponse:
        with self.lock:
            step = self.steps[min(self.calls, len(self.steps) - 1)]
            self.calls += 1
        return step(context)


@dataclass
class FakePep:
    address: str
    servicer: Scripted

    def script(self, *steps: Step) -> Scripted:
        self.servicer.steps, self.servicer.calls = list(steps), 0
        return self.servicer
