"""The asyncio pep client (grpc.aio)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from pep._proto.pep.v1 import authorizer_pb2 as pb
from pep._proto.pep.v1 import authorizer_pb2_grpc as pb_grpc
from pep.client._common import (
    CHANNEL_OPTIONS,
    DEADLINE_PASSED,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    CredentialsLike,
    Decision,
    Denied,
    F,
    ResourceLike,
    decision_of,
    error_decision,
    prepare,
    resolve,
    rpc_error,
)


class AsyncAuthorizer:
    """The asyncio client (grpc.aio). Create and use it inside one event loop."""

    def __init__(
        self,
        target: str = "unix:///run/pep/pep.sock",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        channel_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self._channel = (
            grpc.aio.secure_channel(target, channel_credentials, options=CHANNEL_OPTIONS)
            if channel_credentials is not None
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.AuthorizerStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAuthorizer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def authorize(
        self,
        credentials: CredentialsLike,
        action: str,
        resource: ResourceLike,
        *,
        context: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Decision:
        """pep's decision; never raises: any failure is a deny carrying the gRPC status."""
        call = prepare(
            credentials,
            action,
            resource,
            context,
            request_id,
            self.timeout if timeout is None else timeout,
            self.retries,
        )
        if isinstance(call, Decision):
            return call
        while True:
            remaining = call.budget.remaining()
            if remaining <= 0:
                return DEADLINE_PASSED
            try:
                pending: Awaitable[pb.AuthorizeResponse] = self._stub.Authorize(
                    call.request, timeout=remaining, metadata=tuple(metadata) or None
                )
                return decision_of(await pending)
            except grpc.RpcError as e:
                decision = rpc_error(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a client-side bug must still deny
                return error_decision(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            delay = call.budget.next_delay(decision)
            if delay is None:
                return decision
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def enforce(
        self, credentials: CredentialsLike, action: str, resource: ResourceLike, **kw: Any
    ) -> AsyncIterator[Decision]:
        """Run the `async with` body only when pep allows; otherwise raise `Denied` first."""
        decision = await self.authorize(credentials, action, resource, **kw)
        if not decision.allowed:
            raise Denied(decision, action)
        yield decision

    def guard(
        self,
        action: str,
        resource: ResourceLike | Callable[..., ResourceLike],
        *,
        credentials: CredentialsLike | Callable[[], CredentialsLike] | None = None,
        context: Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None = None,
    ) -> Callable[[F], F]:
        """`Authorizer.guard` for `async def` tools."""

        def decorate(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__name__} is not async: guard it with Authorizer")

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                creds, res, ctx = resolve(credentials, resource, context, args, kwargs)
                if creds is None:
                    raise Denied(Decision(False, "token_missing"), action)
                async with self.enforce(creds, action, res, context=ctx):
                    return await fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate
