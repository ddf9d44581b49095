"""The reason of a deny the client stands in for: only what pep said, from the closed set."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep.client import AsyncAuthorizer, Authorizer
from pep.client._common import DEADLINE_PASSED, REASONS
from pep.reasons import ALL_REASONS
from tests.harness.fake_pep import FakePep, abort
from tests.harness.server import Harness


def test_the_clients_reason_set_is_peps() -> None:
    assert set(ALL_REASONS) == REASONS
    assert DEADLINE_PASSED.reason == "internal_error"


def test_pep_unreachable_is_internal_error_not_policy_unavailable(closed_port: int) -> None:
    with Authorizer(f"127.0.0.1:{closed_port}", timeout=0.3, retries=0) as client:
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, d.answered, d.status, d.reason) == (False, False, grpc.StatusCode.UNAVAILABLE, "internal_error")

    async def run() -> str:
        async with AsyncAuthorizer(f"127.0.0.1:{closed_port}", timeout=0.3, retries=0) as down:
            return (await down.authorize("t", "read", ("Doc", "plan"))).reason

    assert asyncio.run(run()) == "internal_error"


def test_a_real_pep_without_policies_is_policy_unavailable(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    h = harness_factory(tmp_path / "no-such-directory")
    with Authorizer(h.server.addresses[0], timeout=2, retries=0) as client:
        d = client.authorize(h.token(), "read", ("Doc", "plan"))
    assert (d.allowed, d.status, d.reason) == (False, grpc.StatusCode.UNAVAILABLE, "policy_unavailable")


def test_a_real_pep_refusing_a_malformed_request_is_invalid_request(pep: Harness) -> None:
    with Authorizer(pep.server.addresses[0], timeout=2) as client:
        d = client.authorize(pep.token(), "", ("Doc", "plan"))
    assert (d.allowed, d.status, d.reason) == (False, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")


def _trailer_then_abort(reason: str) -> Callable[[grpc.ServicerContext], pb.AuthorizeResponse]:
    def step(ctx: grpc.ServicerContext) -> pb.AuthorizeResponse:
        ctx.set_trailing_metadata((("x-pep-reason", reason),))
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "scripted")
        raise AssertionError("unreachable")

    return step


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (abort(grpc.StatusCode.UNAVAILABLE, "sidecar restarting"), "internal_error"),
        (abort(grpc.StatusCode.INTERNAL, "internal error"), "internal_error"),
        (abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"), "internal_error"),
        (abort(grpc.StatusCode.UNKNOWN), "internal_error"),
        (abort(grpc.StatusCode.INVALID_ARGUMENT, "action must not be empty"), "invalid_request"),
        (abort(grpc.StatusCode.UNAVAILABLE, "no valid policy set is loaded"), "policy_unavailable"),
        (_trailer_then_abort("agent_disabled"), "agent_disabled"),
        (_trailer_then_abort("made_up_reason"), "internal_error"),  # the set is closed
        (_trailer_then_abort("allowed"), "internal_error"),  # an error is never an allow
    ],
)
def test_every_status_maps_to_a_documented_reason(fake: FakePep, step, reason: str) -> None:
    fake.script(step)
    with Authorizer(fake.address, timeout=2, retries=0) as client:
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, d.answered, d.reason) == (False, False, reason)
    assert d.reason in REASONS

    async def run() -> str:
        async with AsyncAuthorizer(fake.address, timeout=2, retries=0) as client:
            return (await client.authorize("t", "read", ("Doc", "plan"))).reason

    assert asyncio.run(run()) == reason


def test_a_request_that_cannot_be_built_is_invalid_request(fake: FakePep) -> None:
    with Authorizer(fake.address) as client:
        d = client.authorize("t", "read", ("Doc", "plan"), context={"when": object()})
    assert (d.status, d.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
