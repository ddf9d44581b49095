"""pep.client against a real pep (decisions) and a scripted server (failures, retries)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from pep.client import AsyncAuthorizer, Authorizer, Credentials, Decision, Denied, Resource, use_credentials
from tests.harness.fake_pep import FakePep, abort, allow, deny, slow
from tests.harness.server import Harness

# --- decisions from a real pep -----------------------------------------------------------


def test_sync_allow_and_deny(pep: Harness) -> None:
    with Authorizer(pep.server.addresses[0]) as client:
        d = client.authorize(pep.token(), "read", ("Doc", "plan"), request_id="r-1")
        assert (d.allowed, d.reason, d.agent, d.on_behalf_of, d.policies) == (
            True,
            "allowed",
            "worker",
            "alice",
            ("read-docs",),
        )
        assert d.answered and d.status is grpc.StatusCode.OK and d.decision_id
        d = client.authorize(pep.token(), "read", Resource("Doc", "keys"))
        assert (d.allowed, d.reason, d.answered) == (False, "policy_forbid", True)
        # A bad token is a decision too (pep answered), not a gRPC error.
        d = client.authorize("Bearer nope", "read", ("Doc", "plan"))
        assert (d.allowed, d.reason, d.answered) == (False, "token_malformed", True)


def test_sync_invalid_argument_is_a_deny_with_status(pep: Harness) -> None:
    with Authorizer(pep.server.addresses[0]) as client:
        d = client.authorize(pep.token(), "read", ("Doc", ""))
        assert (d.allowed, d.status, d.reason) == (False, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
        assert "resource" in d.detail


def test_async_allow_and_deny(pep: Harness) -> None:
    async def run() -> tuple[Decision, Decision]:
        async with AsyncAuthorizer(pep.server.addresses[0]) as client:
            return (
                await client.authorize(pep.token(), "read", ("Doc", "plan")),
                await client.authorize(pep.token(), "write", ("Doc", "plan")),
            )

    allowed, denied = asyncio.run(run())
    assert (allowed.allowed, allowed.reason) == (True, "allowed")
    assert (denied.allowed, denied.reason) == (False, "policy_no_permit")


def test_connection_is_reused_across_threads(pep: Harness) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Authorizer(pep.server.addresses[0]) as client:
        token = pep.token()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: client.authorize(token, "read", ("Doc", "plan")).allowed, range(40)))
    assert all(results)


# --- fail closed: deadlines, server down, retries only where safe ------------------------


def test_deadline_exceeded_is_a_deny_and_not_retried(fake: FakePep) -> None:
    servicer = fake.script(slow(1.0))
    with Authorizer(fake.address, timeout=0.2) as client:
        started = time.monotonic()
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, d.status, d.reason, d.answered) == (
        False,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "internal_error",
        False,
    )
    assert time.monotonic() - started < 0.9
    assert servicer.calls == 1


def test_server_down_is_a_deny_with_unavailable(closed_port: int) -> None:
    with Authorizer(f"127.0.0.1:{closed_port}", timeout=0.3) as client:
        started = time.monotonic()
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, d.status, d.reason) == (False, grpc.StatusCode.UNAVAILABLE, "internal_error")
    assert time.monotonic() - started < 1.0


def test_async_server_down_and_deadline(fake: FakePep, closed_port: int) -> None:
    fake.script(slow(1.0))

    async def run() -> tuple[Decision, Decision]:
        async with AsyncAuthorizer(f"127.0.0.1:{closed_port}", timeout=0.3) as down:
            a = await down.authorize("t", "read", ("Doc", "plan"))
        async with AsyncAuthorizer(fake.address, timeout=0.2) as slow_pep:
            b = await slow_pep.authorize("t", "read", ("Doc", "plan"))
        return a, b

    down, late = asyncio.run(run())
    assert (down.allowed, down.status, down.reason) == (False, grpc.StatusCode.UNAVAILABLE, "internal_error")
    assert (late.allowed, late.status, late.reason) == (False, grpc.StatusCode.DEADLINE_EXCEEDED, "internal_error")


def test_unavailable_is_retried_within_the_budget(fake: FakePep) -> None:
    servicer = fake.script(abort(grpc.StatusCode.UNAVAILABLE, "no valid policy set is loaded"), allow)
    with Authorizer(fake.address, timeout=2) as client:
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, servicer.calls) == (True, 2)


def test_async_unavailable_is_retried(fake: FakePep) -> None:
    servicer = fake.script(abort(grpc.StatusCode.UNAVAILABLE), abort(grpc.StatusCode.UNAVAILABLE), allow)

    async def run() -> Decision:
        async with AsyncAuthorizer(fake.address, timeout=2) as client:
            return await client.authorize("t", "read", ("Doc", "plan"))

    assert asyncio.run(run()).allowed and servicer.calls == 3


@pytest.mark.parametrize(
    "step",
    [deny, abort(grpc.StatusCode.INVALID_ARGUMENT), abort(grpc.StatusCode.INTERNAL), abort(grpc.StatusCode.UNKNOWN)],
)
def test_decisions_and_other_errors_are_never_retried(fake: FakePep, step) -> None:
    servicer = fake.script(step, allow)
    with Authorizer(fake.address, timeout=2) as client:
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert not d.allowed and servicer.calls == 1


def test_retries_stop_at_the_limit(fake: FakePep) -> None:
    servicer = fake.script(abort(grpc.StatusCode.UNAVAILABLE))
    with Authorizer(fake.address, timeout=2, retries=2) as client:
        d = client.authorize("t", "read", ("Doc", "plan"))
    assert (d.allowed, d.status, servicer.calls) == (False, grpc.StatusCode.UNAVAILABLE, 3)


def test_unsendable_request_is_a_deny(fake: FakePep) -> None:
    servicer = fake.script(allow)
    with Authorizer(fake.address) as client:
        d = client.authorize("t", "read", ("Doc", "plan"), context={"when": object()})
    assert (d.allowed, d.status, servicer.calls) == (False, grpc.StatusCode.INVALID_ARGUMENT, 0)


# --- enforcing around a tool call ---------------------------------------------------------


def test_guard_blocks_the_tool_call_on_deny(pep: Harness) -> None:
    ran: list[str] = []
    with Authorizer(pep.server.addresses[0]) as client:

        @client.guard("read", resource=lambda doc: ("Doc", doc), credentials=pep.token)
        def read_doc(doc: str) -> str:
            ran.append(doc)
            return f"contents of {doc}"

        assert read_doc("plan") == "contents of plan"
        with pytest.raises(Denied) as e:
            read_doc("keys")
    assert ran == ["plan"]
    assert e.value.decision.reason == "policy_forbid" and "policy_forbid" in str(e.value)


def test_guard_uses_bound_credentials_and_denies_without_any(pep: Harness) -> None:
    ran: list[str] = []
    with Authorizer(pep.server.addresses[0]) as client:

        @client.guard("read", resource=("Doc", "plan"))
        def tool() -> None:
            ran.append("x")

        with pytest.raises(Denied) as e:
            tool()
        assert e.value.decision.reason == "token_missing"
        with use_credentials(Credentials(pep.token())):
            tool()
    assert ran == ["x"]


def test_guard_fails_closed_when_pep_is_down(closed_port: int) -> None:
    ran: list[str] = []
    with Authorizer(f"127.0.0.1:{closed_port}", timeout=0.2) as client:

        @client.guard("read", resource=("Doc", "plan"), credentials="t")
        def tool() -> None:
            ran.append("x")

        with pytest.raises(Denied) as e:
            tool()
    assert not ran and e.value.decision.status is grpc.StatusCode.UNAVAILABLE


def test_enforce_context_manager(pep: Harness) -> None:
    ran: list[str] = []
    with Authorizer(pep.server.addresses[0]) as client:
        with client.enforce(pep.token(), "read", ("Doc", "plan")) as decision:
            ran.append(decision.reason)
        with pytest.raises(Denied), client.enforce(pep.token(), "write", ("Doc", "plan")):
            ran.append("never")
    assert ran == ["allowed"]


def test_async_guard_and_enforce(pep: Harness) -> None:
    ran: list[str] = []

    async def run() -> None:
        async with AsyncAuthorizer(pep.server.addresses[0]) as client:

            @client.guard("read", resource=lambda doc: ("Doc", doc), credentials=pep.token)
            async def read_doc(doc: str) -> None:
                ran.append(doc)

            await read_doc("plan")
            with pytest.raises(Denied):
                await read_doc("keys")
            async with client.enforce(pep.token(), "read", ("Doc", "plan")):
                ran.append("block")
            with pytest.raises(Denied):
                async with client.enforce(pep.token(), "write", ("Doc", "plan")):
                    ran.append("never")

    asyncio.run(run())
    assert ran == ["plan", "block"]


def test_guard_refuses_the_wrong_kind_of_function(pep: Harness) -> None:
    with Authorizer(pep.server.addresses[0]) as client, pytest.raises(TypeError):

        @client.guard("read", resource=("Doc", "plan"))
        async def tool() -> None: ...
